// GrammarMatcher: masks exactly equal to a brute-force check of every token
// (hand-made vocabulary at every step of many walks; the real Qwen3
// vocabulary at many walk states), token boundaries, stop tokens, completion,
// rejection without change, threads, and the grammar cache.
#include "text/guided/matcher.h"

#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/guided/guided_test_util.h"
#include "text/guided/grammar_cache.h"

namespace gantry::guided {
namespace {

using ::testing::HasSubstr;
using testing::BruteForceMask;
using testing::DiffMasks;
using testing::IsSet;
using testing::Mask;
using testing::MustCompile;
using testing::QwenVocabulary;
using testing::RandomWalk;
using testing::RegexSpec;
using testing::SchemaSpec;
using testing::SmallVocabulary;
using testing::WalkOptions;

const char* kPersonSchema = R"({"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 6},
    "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "tags": {"type": "array", "items": {"enum": ["a\"b", "cat", "dog"]}, "maxItems": 3},
    "pet": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/pet"}]}},
  "required": ["name"],
  "$defs": {"pet": {"type": "object", "properties": {"kind": {"type": "string"},
                                                      "kids": {"type": "array", "items": {"$ref": "#/$defs/pet"}, "maxItems": 2}},
                    "required": ["kind"]}}})";

std::vector<GrammarSpec> Specs() {
  std::vector<GrammarSpec> specs = {
      SchemaSpec(kPersonSchema),
      SchemaSpec(R"({"type": "array", "items": {"type": "number"}, "maxItems": 4})"),
      SchemaSpec(R"({"type": "object", "additionalProperties": {"type": "string", "maxLength": 3}})"),
      SchemaSpec(R"({"type": "string", "minLength": 1, "maxLength": 4})"),
      SchemaSpec(R"({"type": "string", "format": "date-time"})"),
      RegexSpec("(cat|ca|category)s?"),
      RegexSpec("[a-c]{2,5}\\d?"),
      RegexSpec("\\w+@\\w+\\.com"),
  };
  GrammarSpec any;
  any.kind = GrammarSpec::Kind::kAnyJson;
  specs.push_back(any);
  GrammarSpec choice;
  choice.kind = GrammarSpec::Kind::kChoice;
  choice.choices = {"cat", "category", "dog", "a\"b"};
  specs.push_back(choice);
  return specs;
}

// Walks every spec with `seeds` seeds, comparing the mask with the brute
// force every `every` steps; returns how many states were compared.
int CompareWalksWithBruteForce(const std::shared_ptr<const Vocabulary>& vocab, uint64_t seeds, int max_tokens,
                               int every) {
  int states = 0;
  for (const GrammarSpec& spec : Specs()) {
    auto grammar = MustCompile(spec, vocab);
    if (grammar == nullptr) return states;
    for (uint64_t seed = 1; seed <= seeds; ++seed) {
      WalkOptions options;
      options.seed = seed;
      options.max_tokens = max_tokens;
      options.brute_force_every = every;
      auto walk = RandomWalk(grammar, options);
      states += walk.tokens / every + 1;
      EXPECT_EQ(walk.mask_error, "") << spec.CacheKey() << " seed " << seed;
      if (!walk.mask_error.empty()) return states;
    }
  }
  return states;
}

TEST(MatcherTest, MaskEqualsBruteForceAtEveryStepOnSmallVocabulary) {
  EXPECT_GE(CompareWalksWithBruteForce(SmallVocabulary(), 40, 200, 1), 1000);
}

TEST(MatcherTest, MaskEqualsBruteForceOnQwen3) {
  auto vocab = QwenVocabulary();
  ASSERT_NE(vocab, nullptr);
  EXPECT_GE(CompareWalksWithBruteForce(vocab, 3, 60, 7), 60);
}

class SmallVocabularyTest : public ::testing::Test {
 protected:
  int32_t Id(const std::string& bytes) {
    const auto& tokens = vocab_->token_bytes();
    for (int32_t id = 0; id < static_cast<int32_t>(tokens.size()); ++id) {
      if (tokens[id] == bytes && !vocab_->IsStop(id)) return id;
    }
    ADD_FAILURE() << "no token " << bytes;
    return 0;
  }
  void Feed(GrammarMatcher* m, const std::vector<std::string>& tokens) {
    for (const std::string& t : tokens) ASSERT_TRUE(m->AcceptToken(Id(t)).ok()) << t;
  }
  std::shared_ptr<const Vocabulary> vocab_ = SmallVocabulary();
  int32_t stop_ = vocab_->stop_token_ids()[0];
};

TEST_F(SmallVocabularyTest, TokensCrossingARulesEndAreCheckedAgainstTheStack) {
  auto g = MustCompile(SchemaSpec(kPersonSchema), vocab_);
  GrammarMatcher m(g);
  Feed(&m, {"{\"", "name", "\":", "\"", "ab"});
  auto mask = Mask(m, *vocab_);
  EXPECT_TRUE(IsSet(mask, Id("\",")));   // closes the string, more properties follow
  EXPECT_TRUE(IsSet(mask, Id("\"}")));   // closes the string and the object
  EXPECT_FALSE(IsSet(mask, Id("\"]")));  // no array to close
  EXPECT_FALSE(IsSet(mask, Id("\"},")));
  EXPECT_TRUE(IsSet(mask, Id("a\",")));
  EXPECT_FALSE(IsSet(mask, Id("\"x\\\"y\"")));
  EXPECT_FALSE(IsSet(mask, stop_));
  Feed(&m, {"\"}"});
  EXPECT_TRUE(m.CanStop());
  EXPECT_TRUE(m.IsCompleted());  // nothing can follow the closing brace
  mask = Mask(m, *vocab_);
  EXPECT_TRUE(IsSet(mask, stop_));
  for (int32_t id = 0; id < vocab_->mask_size(); ++id) {
    if (id != stop_) EXPECT_FALSE(IsSet(mask, id)) << id;
  }
  EXPECT_TRUE(m.AcceptToken(stop_).ok());
  EXPECT_TRUE(m.IsCompleted());
  EXPECT_FALSE(m.CanStop());
}

TEST_F(SmallVocabularyTest, MaxLengthCountsMultibyteCharactersAcrossTokens) {
  auto two = MustCompile(SchemaSpec(R"({"type": "string", "maxLength": 2})"), vocab_);
  GrammarMatcher m(two);
  Feed(&m, {"\"", "\xE4\xB8"});  // half of 中
  auto mask = Mask(m, *vocab_);
  EXPECT_TRUE(IsSet(mask, Id("\xAD\xE6\x96\x87")));  // the rest of 中, then 文: 2 characters
  EXPECT_FALSE(IsSet(mask, Id("\xE4\xB8\xAD")));      // not a continuation byte
  EXPECT_FALSE(IsSet(mask, Id("\"")));                 // the character is incomplete
  Feed(&m, {"\xAD\xE6\x96\x87"});
  mask = Mask(m, *vocab_);
  EXPECT_TRUE(IsSet(mask, Id("\"")));
  EXPECT_FALSE(IsSet(mask, Id("a")));
  Feed(&m, {"\""});
  EXPECT_TRUE(m.CanStop());

  auto one = MustCompile(SchemaSpec(R"({"type": "string", "maxLength": 1})"), vocab_);
  GrammarMatcher short_string(one);
  Feed(&short_string, {"\"", "\xE4\xB8"});
  mask = Mask(short_string, *vocab_);
  EXPECT_FALSE(IsSet(mask, Id("\xAD\xE6\x96\x87")));  // would be 2 characters
  EXPECT_TRUE(IsSet(mask, Id("\xAD")));

  auto three = MustCompile(SchemaSpec(R"({"type": "string", "maxLength": 3})"), vocab_);
  GrammarMatcher full(three);
  Feed(&full, {"\"", "\xF0\x9F\x98\x80", "\xC3\xA9", "\\n"});  // 😀, é and an escape: 3 characters
  mask = Mask(full, *vocab_);
  EXPECT_TRUE(IsSet(mask, Id("\"")));
  EXPECT_FALSE(IsSet(mask, Id("a")));
  EXPECT_FALSE(IsSet(mask, Id("\\u")));
}

TEST_F(SmallVocabularyTest, CompletedMatchesAndBoundaries) {
  GrammarSpec spec;
  spec.kind = GrammarSpec::Kind::kChoice;
  spec.choices = {"cat", "category"};
  auto g = MustCompile(spec, vocab_);
  GrammarMatcher m(g);
  auto mask = Mask(m, *vocab_);
  EXPECT_TRUE(IsSet(mask, Id("cat")));
  EXPECT_FALSE(IsSet(mask, Id("cat\"")));  // crosses into a completed match
  EXPECT_FALSE(IsSet(mask, Id("dog")));
  EXPECT_FALSE(IsSet(mask, vocab_->trie_size() > 0 ? Id("") : 0));  // a special token
  EXPECT_FALSE(IsSet(mask, vocab_->mask_size() - 1));              // an id past the vocabulary
  EXPECT_FALSE(IsSet(mask, stop_));
  Feed(&m, {"cat"});
  EXPECT_TRUE(m.CanStop());
  EXPECT_FALSE(m.IsCompleted());  // "category" may go on
  mask = Mask(m, *vocab_);
  EXPECT_TRUE(IsSet(mask, stop_));
  EXPECT_FALSE(IsSet(vocab_->trie_token_bits(), stop_));  // the stop token's text is never text
  EXPECT_TRUE(m.AcceptToken(stop_).ok());
  EXPECT_TRUE(m.IsCompleted());
  EXPECT_THAT(m.AcceptToken(Id("e")).message(), HasSubstr("after the stop token"));
}

TEST_F(SmallVocabularyTest, RejectedTokensLeaveTheMatcherUnchanged) {
  auto g = MustCompile(SchemaSpec(kPersonSchema), vocab_);
  GrammarMatcher m(g);
  Feed(&m, {"{\"", "name", "\": ", "\"", "cat"});
  auto before = Mask(m, *vocab_);
  absl::Status s = m.AcceptToken(Id("\"]"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(std::to_string(Id("\"]"))));
  EXPECT_THAT(m.AcceptToken(stop_).message(), HasSubstr("before the output is complete"));
  EXPECT_THAT(m.AcceptToken(Id("")).message(), HasSubstr("never allowed"));
  EXPECT_THAT(m.AcceptToken(-1).message(), HasSubstr("outside the vocabulary"));
  EXPECT_EQ(DiffMasks(Mask(m, *vocab_), before, *vocab_), "");
  Feed(&m, {"\",", "\"age\":", "12", "}"});
  EXPECT_TRUE(m.IsCompleted());
}

TEST_F(SmallVocabularyTest, EscapedQuotesInsideEnumsAndStrings) {
  auto g = MustCompile(SchemaSpec(kPersonSchema), vocab_);
  GrammarMatcher m(g);
  Feed(&m, {"{\"", "name", "\":", "\"x\\\"y\"", ",\"", "tags", "\":", "[", "\"", "a"});
  auto mask = Mask(m, *vocab_);
  EXPECT_TRUE(IsSet(mask, Id("\\\"")));
  EXPECT_FALSE(IsSet(mask, Id("\"")));
  EXPECT_FALSE(IsSet(mask, Id("a\"")));
  Feed(&m, {"\\\"", "b", "\"]", "}"});
  EXPECT_TRUE(m.CanStop());
}

TEST(MatcherThreadsTest, MatchersOfOneGrammarRunConcurrently) {
  auto grammar = MustCompile(SchemaSpec(kPersonSchema), SmallVocabulary());
  ASSERT_NE(grammar, nullptr);
  std::vector<std::string> results(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      WalkOptions options;
      options.seed = 7;  // the same walk on every thread: the same text
      options.brute_force_every = 3;
      auto walk = RandomWalk(grammar, options);
      results[t] = walk.text + "|" + walk.mask_error;
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 1; t < 4; ++t) EXPECT_EQ(results[t], results[0]);
}

TEST(GrammarCacheTest, ReusesCompiledGrammarsAndEvictsTheLeastRecent) {
  GrammarCache cache(SmallVocabulary(), 2);
  auto a1 = cache.Get(SchemaSpec(R"({"type": "integer"})"));
  auto a2 = cache.Get(SchemaSpec(R"({"type": "integer"})"));
  ASSERT_TRUE(a1.ok() && a2.ok());
  EXPECT_EQ(a1->get(), a2->get());
  EXPECT_EQ(cache.hits(), 1);
  ASSERT_TRUE(cache.Get(RegexSpec("a+")).ok());
  ASSERT_TRUE(cache.Get(SchemaSpec(R"({"type": "integer"})")).ok());  // most recent again
  ASSERT_TRUE(cache.Get(RegexSpec("b+")).ok());                      // evicts "a+"
  EXPECT_EQ(cache.size(), 2u);
  auto again = cache.Get(SchemaSpec(R"({"type": "integer"})"));
  EXPECT_EQ(again->get(), a1->get());
  int64_t misses = cache.misses();
  ASSERT_TRUE(cache.Get(RegexSpec("a+")).ok());
  EXPECT_EQ(cache.misses(), misses + 1);
  auto bad = cache.Get(RegexSpec("("));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  // Kinds with the same text do not collide.
  GrammarSpec choice;
  choice.kind = GrammarSpec::Kind::kChoice;
  choice.choices = {"a+"};
  auto c = cache.Get(choice);
  ASSERT_TRUE(c.ok());
  GrammarMatcher m(*c);
  for (unsigned char ch : std::string("a+")) ASSERT_TRUE(m.AcceptToken(ch).ok());
  EXPECT_TRUE(m.CanStop());
}

TEST(GrammarCacheTest, ConcurrentGets) {
  GrammarCache cache(SmallVocabulary(), 8);
  std::vector<std::thread> threads;
  std::vector<const Grammar*> got(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto g = cache.Get(SchemaSpec(R"({"type": "array", "items": {"type": "string"}})"));
      got[t] = g.ok() ? g->get() : nullptr;
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) {
    ASSERT_NE(got[t], nullptr);
    EXPECT_EQ(got[t], got[0]);
  }
}

TEST(VocabularyTest, CreateChecksItsArguments) {
  EXPECT_THAT(Vocabulary::Create({"a", "b"}, {}, 1).status().message(), HasSubstr("smaller than the vocabulary"));
  EXPECT_THAT(Vocabulary::Create({"a", "b"}, {5}, 3).status().message(), HasSubstr("stop token id 5"));
  auto v = Vocabulary::Create({"a", "", "ab"}, {1}, 40);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ((*v)->mask_words(), 2);
  EXPECT_EQ((*v)->trie_size(), 2);
}

}  // namespace
}  // namespace gantry::guided
