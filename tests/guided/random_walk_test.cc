// Random walks over the real Qwen3 vocabulary: 200 generated JSON Schemas of
// growing depth (every one bounded: strings have maxLength, arrays maxItems,
// no recursion, so every output is finite), regexes and choice lists. Each
// walk picks pseudo-random allowed tokens (stop, when allowed, with some
// probability, and always when nothing else is) until the matcher completes.
// Every (grammar, output) pair is written for validate_outputs.mjs (ajv,
// JavaScript RegExp) in the guided_outputs_validate CTest test.
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/guided/guided_test_util.h"
#include "tests/guided/schema_generator.h"

namespace gantry::guided {
namespace {

using Json = nlohmann::ordered_json;
using testing::MustCompile;
using testing::QwenVocabulary;
using testing::RandomWalk;
using testing::SchemaGenerator;
using testing::WalkOptions;

TEST(RandomWalkTest, GeneratedSchemas) {
  auto vocab = QwenVocabulary();
  ASSERT_NE(vocab, nullptr);
  testing::WriteOutputLine("schema_outputs.jsonl", "", /*truncate=*/true);
  int completed = 0;
  for (int i = 0; i < 200; ++i) {
    SchemaGenerator generator(1000 + i);
    Json schema = generator.Generate(1 + i / 40);
    auto grammar = MustCompile(testing::SchemaSpec(schema.dump()), vocab);
    ASSERT_NE(grammar, nullptr) << schema.dump();
    WalkOptions options;
    options.seed = i;
    options.max_tokens = 4000;
    options.brute_force_every = i % 20 == 0 ? 40 : 0;
    auto walk = RandomWalk(grammar, options);
    ASSERT_EQ(walk.mask_error, "") << schema.dump();
    ASSERT_TRUE(walk.completed) << schema.dump() << "\n" << walk.text;
    ++completed;
    testing::WriteOutputLine("schema_outputs.jsonl", Json{{"schema", schema}, {"output", walk.text}}.dump(), false);
  }
  EXPECT_EQ(completed, 200);
}

TEST(RandomWalkTest, AnyJsonObjects) {
  auto vocab = QwenVocabulary();
  ASSERT_NE(vocab, nullptr);
  GrammarSpec spec;
  spec.kind = GrammarSpec::Kind::kAnyJson;
  auto grammar = MustCompile(spec, vocab);
  ASSERT_NE(grammar, nullptr);
  testing::WriteOutputLine("any_json_outputs.jsonl", "", true);
  int completed = 0;
  for (int i = 0; i < 30; ++i) {
    WalkOptions options;
    options.seed = 500 + i;
    options.max_tokens = 300;  // nesting is unbounded: keep what finishes
    options.brute_force_every = i < 3 ? 50 : 0;
    auto walk = RandomWalk(grammar, options);
    ASSERT_EQ(walk.mask_error, "");
    if (!walk.completed) continue;
    ++completed;
    testing::WriteOutputLine("any_json_outputs.jsonl", Json{{"output", walk.text}}.dump(), false);
  }
  EXPECT_GE(completed, 5);
}

TEST(RandomWalkTest, RegexesAndChoices) {
  auto vocab = QwenVocabulary();
  ASSERT_NE(vocab, nullptr);
  const std::vector<std::string> regexes = {
      "[A-Z][a-z]{1,8}( [A-Z][a-z]{1,8}){0,2}",
      "\\d{3}-\\d{4}",
      "(red|green|blue)(, (red|green|blue)){0,3}",
      "[^\\n]{1,20}",
      ".{0,10}!",
      "(?:[01]?\\d|2[0-3]):[0-5]\\d",
      "\\w{1,12}@[a-z]{2,6}\\.(com|org|net)",
      "[\\u4e00-\\u9fff]{1,6}",
      "-?(0|[1-9]\\d{0,5})(\\.\\d{1,3})?",
      "\"[^\"]{0,8}\"",
      "\\s?[xyz]+\\s?",
      "(ab|a)(bc|c)?d{0,2}",
  };
  testing::WriteOutputLine("regex_outputs.jsonl", "", true);
  for (size_t r = 0; r < regexes.size(); ++r) {
    auto grammar = MustCompile(testing::RegexSpec(regexes[r]), vocab);
    ASSERT_NE(grammar, nullptr) << regexes[r];
    for (int s = 0; s < 8; ++s) {
      WalkOptions options;
      options.seed = r * 100 + s;
      options.max_tokens = 400;
      options.brute_force_every = s == 0 ? 5 : 0;
      auto walk = RandomWalk(grammar, options);
      ASSERT_EQ(walk.mask_error, "") << regexes[r];
      ASSERT_TRUE(walk.completed) << regexes[r] << ": " << walk.text;
      testing::WriteOutputLine("regex_outputs.jsonl", Json{{"regex", regexes[r]}, {"output", walk.text}}.dump(),
                               false);
    }
  }
  testing::WriteOutputLine("choice_outputs.jsonl", "", true);
  const std::vector<std::vector<std::string>> lists = {
      {"yes", "no"}, {"positive", "negative", "neutral", "neg"}, {"\xE6\x98\xAF", "\xE5\x90\xA6"}, {"a\"b", "a", ""}};
  for (const auto& list : lists) {
    GrammarSpec spec;
    spec.kind = GrammarSpec::Kind::kChoice;
    spec.choices = list;
    auto grammar = MustCompile(spec, vocab);
    ASSERT_NE(grammar, nullptr);
    for (int s = 0; s < 10; ++s) {
      WalkOptions options;
      options.seed = s;
      options.brute_force_every = s == 0 ? 1 : 0;
      auto walk = RandomWalk(grammar, options);
      ASSERT_EQ(walk.mask_error, "");
      ASSERT_TRUE(walk.completed);
      testing::WriteOutputLine("choice_outputs.jsonl", Json{{"choices", list}, {"output", walk.text}}.dump(), false);
    }
  }
}

}  // namespace
}  // namespace gantry::guided
