// Guided decoding in the engine: the fake runner samples its own pseudo-random
// token unless the step's allowed_tokens mask forbids it, so only the
// engine's masks can make the output follow the grammar.
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/model_engine.h"
#include "tests/scheduler/engine_replies.h"
#include "tests/scheduler/fake_runner.h"
#include "text/tokenizer.h"

namespace gantry::scheduler {
namespace {

using ::gantry::testing::FakeRunner;
using ::testing::HasSubstr;

// 100 tokens, as the fake runner's vocabulary: <unk>, <s>, </s> (eos), the
// 95 printable ASCII characters (ids 3..97), then <think> and </think> (98,
// 99: added tokens, not special, as Qwen3 has them).
std::unique_ptr<text::Tokenizer> CharTokenizer() {
  nlohmann::json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int c = 32; c < 127; ++c) vocab[std::string(1, static_cast<char>(c))] = c - 29;
  vocab["<think>"] = 98;
  vocab["</think>"] = 99;
  nlohmann::json added = nlohmann::json::array();
  for (int id = 0; id < 3; ++id) {
    std::string content = id == 0 ? "<unk>" : id == 1 ? "<s>" : "</s>";
    added.push_back({{"id", id}, {"content", content}, {"special", true}});
  }
  added.push_back({{"id", 98}, {"content", "<think>"}, {"special", false}});
  added.push_back({{"id", 99}, {"content", "</think>"}, {"special", false}});
  nlohmann::json tokenizer = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
                              {"added_tokens", added},
                              {"decoder", {{"type", "Fuse"}}}};
  auto made = text::Tokenizer::FromJson(tokenizer.dump(), R"({"eos_token": "</s>"})");
  EXPECT_TRUE(made.ok()) << made.status();
  return made.ok() ? *std::move(made) : nullptr;
}

class GuidedEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto fake = std::make_unique<FakeRunner>(/*num_blocks=*/1024, /*block_size=*/4, /*max_context=*/4096);
    // A runner that can run ahead, as the runtime's: the engine must not run
    // a guided sequence ahead (its next mask needs the token).
    fake->max_in_flight = 2;
    runner_ = fake.get();
    LoadedModel model;
    model.runner = std::move(fake);
    model.tokenizer = CharTokenizer();
    ASSERT_NE(model.tokenizer, nullptr);
    engine_ = std::make_unique<ModelEngine>("fake", std::move(model), EngineOptions{}, &clock_);
  }

  std::vector<testing::EngineReply> Run(std::vector<GenerationRequest> requests) {
    return testing::SubmitAndRun(*engine_, std::move(requests), 1000);
  }

  GenerationRequest Guided(const guided::GrammarSpec& spec, int64_t max_tokens = 40) {
    GenerationRequest request;
    request.prompt = {1, 40, 41};
    request.max_tokens = max_tokens;
    auto grammar = engine_->CompileGrammar(spec);
    EXPECT_TRUE(grammar.ok()) << grammar.status();
    if (grammar.ok()) request.grammar = *grammar;
    return request;
  }

  FakeClock clock_;
  FakeRunner* runner_ = nullptr;
  std::unique_ptr<ModelEngine> engine_;
};

TEST_F(GuidedEngineTest, OutputsFollowRegexAndChoiceGrammars) {
  guided::GrammarSpec digits;
  digits.kind = guided::GrammarSpec::Kind::kRegex;
  digits.regex = "[0-9]{3}-[a-c]+";
  guided::GrammarSpec choice;
  choice.kind = guided::GrammarSpec::Kind::kChoice;
  choice.choices = {"yes", "no", "maybe so"};
  for (int seed = 0; seed < 8; ++seed) {
    GenerationRequest a = Guided(digits), b = Guided(choice);
    a.prompt.push_back(50 + seed);
    b.prompt.push_back(60 + seed);
    std::vector<testing::EngineReply> out = Run({std::move(a), std::move(b)});
    ASSERT_EQ(out.size(), 2u);
    EXPECT_TRUE(out[0].error.ok()) << out[0].error;
    EXPECT_THAT(out[0].text, ::testing::MatchesRegex("[0-9][0-9][0-9]-[a-c]+")) << out[0].text;
    EXPECT_THAT(std::vector<std::string>({"yes", "no", "maybe so"}), ::testing::Contains(out[1].text));
    EXPECT_EQ(out[1].reason, FinishReason::kStop);  // the choice is complete: no eos needed
  }
}

TEST_F(GuidedEngineTest, JsonSchemaOutputParsesAndFreeNeighboursAreUntouched) {
  guided::GrammarSpec schema;
  schema.kind = guided::GrammarSpec::Kind::kJsonSchema;
  schema.json_schema = R"({"type": "object", "properties": {"n": {"type": "integer"},
      "tag": {"enum": ["ab", "yes"]}}, "required": ["n", "tag"]})";
  GenerationRequest unguided;
  unguided.prompt = {1, 40, 41};
  unguided.max_tokens = 12;
  unguided.ignore_eos = true;
  const std::vector<testing::EngineReply> alone = Run({unguided});
  std::vector<testing::EngineReply> mixed = Run({Guided(schema, 60), unguided, Guided(schema, 60)});
  ASSERT_EQ(mixed.size(), 3u);
  EXPECT_EQ(mixed[1].tokens, alone[0].tokens);  // guided neighbours change nothing
  for (int i : {0, 2}) {
    ASSERT_TRUE(mixed[i].error.ok()) << mixed[i].error;
    auto parsed = nlohmann::json::parse(mixed[i].text, nullptr, false);
    ASSERT_FALSE(parsed.is_discarded()) << mixed[i].text;
    EXPECT_TRUE(parsed["n"].is_number_integer()) << mixed[i].text;
    EXPECT_TRUE(parsed["tag"] == "ab" || parsed["tag"] == "yes") << mixed[i].text;
  }
}

TEST_F(GuidedEngineTest, AReasoningModelThinksFreelyThenFollowsTheGrammar) {
  guided::GrammarSpec digits;
  digits.kind = guided::GrammarSpec::Kind::kRegex;
  digits.regex = "[0-9]{3}";
  int thought = 0, answered_at_once = 0;
  for (bool starts_in_reasoning : {false, true}) {
    for (int seed = 0; seed < 12; ++seed) {
      GenerationRequest request = Guided(digits, 2000);
      request.prompt.push_back(3 + seed);
      request.reasoning_gate = GenerationRequest::ReasoningGate{98, 99, starts_in_reasoning};
      std::vector<testing::EngineReply> out = Run({std::move(request)});
      ASSERT_EQ(out.size(), 1u);
      ASSERT_TRUE(out[0].error.ok()) << out[0].error;
      const std::string& text = out[0].text;
      EXPECT_EQ(out[0].reason, FinishReason::kStop) << text;
      // The answer after the block follows the grammar; the block opens only
      // as the first token (or in the prompt); no stop token ends the thinking.
      const size_t close = text.rfind("</think>");
      const std::string answer = close == std::string::npos ? text : text.substr(close + 8);
      EXPECT_THAT(answer, ::testing::MatchesRegex("[0-9][0-9][0-9]")) << text;
      if (starts_in_reasoning) EXPECT_NE(close, std::string::npos) << text;
      if (!starts_in_reasoning && close != std::string::npos) EXPECT_EQ(text.rfind("<think>", 0), 0u) << text;
      EXPECT_EQ(std::count(out[0].tokens.begin(), out[0].tokens.end(), 2), 0);
      (close == std::string::npos ? answered_at_once : thought) += 1;
    }
  }
  EXPECT_GT(thought, 0);  // both ways were taken
  EXPECT_GT(answered_at_once, 0);
  // A gate without a grammar is refused.
  GenerationRequest bare;
  bare.prompt = {1, 40};
  bare.max_tokens = 4;
  bare.reasoning_gate = GenerationRequest::ReasoningGate{98, 99, false};
  EXPECT_EQ(engine_->Submit(std::move(bare)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GuidedEngineTest, AGrammarThatCannotFinishInTimeEndsWithLength) {
  guided::GrammarSpec long_choice;
  long_choice.kind = guided::GrammarSpec::Kind::kChoice;
  long_choice.choices = {"0123456789012345678901234567890123456789"};
  std::vector<testing::EngineReply> out = Run({Guided(long_choice, 5)});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].reason, FinishReason::kLength);
  EXPECT_EQ(out[0].text, "01234");
}

TEST_F(GuidedEngineTest, BadSpecsAreRefusedNamingTheProblem) {
  guided::GrammarSpec bad;
  bad.kind = guided::GrammarSpec::Kind::kJsonSchema;
  bad.json_schema = R"({"type": "object", "patternProperties": {"a": {}}})";
  auto grammar = engine_->CompileGrammar(bad);
  ASSERT_FALSE(grammar.ok());
  EXPECT_EQ(grammar.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(grammar.status().message(), HasSubstr("patternProperties"));
}

}  // namespace
}  // namespace gantry::scheduler
