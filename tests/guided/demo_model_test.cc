// Guided decoding end to end on the demo model (models/demo: random weights,
// so only the grammar's masks make its output valid): 200 generated JSON
// Schemas of growing depth, regexes and choice lists, each request sampled by
// the real runtime on the CPU through the engine, batched with free requests.
// The outputs go to demo_*_outputs.jsonl, which validate_outputs.mjs checks
// with ajv and RegExp (guided_outputs_validate); the free requests must get
// the tokens they get alone.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "scheduler/clock.h"
#include "scheduler/model_engine.h"
#include "scheduler/model_loader.h"
#include "scheduler/model_registry.h"
#include "tests/guided/guided_test_util.h"
#include "tests/guided/schema_generator.h"
#include "tests/scheduler/engine_replies.h"

namespace gantry::guided {
namespace {

using Json = nlohmann::ordered_json;
using scheduler::GenerationRequest;
using scheduler::ModelEngine;

using Reply = ::gantry::testing::EngineReply;

class DemoModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scheduler::ModelSpec spec;
    spec.name = "demo";
    spec.path = std::string(GANTRY_SOURCE_DIR) + "/models/demo";
    spec.kv_cache_bytes = 64ull << 20;
    spec.engine.max_batch = 48;
    auto model = scheduler::LoadModelFolder(spec);
    ASSERT_TRUE(model.ok()) << model.status();
    engine_ = new ModelEngine("demo", *std::move(model), spec.engine, scheduler::RealClock::Get());
  }
  static void TearDownTestSuite() {
    delete engine_;
    engine_ = nullptr;
  }

  static GenerationRequest Request(const std::string& prompt, uint64_t seed, int64_t max_tokens) {
    GenerationRequest request;
    auto ids = engine_->tokenizer()->Encode(prompt);
    EXPECT_TRUE(ids.ok()) << ids.status();
    request.prompt = *ids;
    request.max_tokens = max_tokens;
    request.sampling.temperature = 0.9f;
    request.sampling.seed = seed;
    return request;
  }

  static std::vector<Reply> Run(std::vector<GenerationRequest> requests) {
    return ::gantry::testing::SubmitAndRun(*engine_, std::move(requests));
  }

  static std::shared_ptr<const Grammar> Compile(const GrammarSpec& spec) {
    auto grammar = engine_->CompileGrammar(spec);
    EXPECT_TRUE(grammar.ok()) << grammar.status() << "\n" << spec.json_schema << spec.regex;
    return grammar.ok() ? *grammar : nullptr;
  }

  static ModelEngine* engine_;
};

ModelEngine* DemoModelTest::engine_ = nullptr;

constexpr int64_t kMaxTokens = 1500;  // the demo's context is 2048; every schema's output fits

TEST_F(DemoModelTest, GeneratedSchemasGiveValidJsonBesideFreeRequests) {
  // The free requests alone first (greedy: their tokens must not change).
  std::vector<GenerationRequest> free;
  for (int i = 0; i < 6; ++i) {
    GenerationRequest request = Request("Tell me about item " + std::to_string(i), 100 + i, 40);
    request.sampling.temperature = i % 2 == 0 ? 0.0f : 0.9f;
    free.push_back(request);
  }
  const std::vector<Reply> alone = Run(free);

  testing::SchemaGenerator generator(17);
  testing::WriteOutputLine("demo_schema_outputs.jsonl", "", /*truncate=*/true);
  constexpr int kSchemas = 200, kPerBatch = 40;
  for (int first = 0; first < kSchemas; first += kPerBatch) {
    std::vector<GenerationRequest> batch;
    std::vector<Json> schemas;
    for (int i = first; i < first + kPerBatch; ++i) {
      schemas.push_back(generator.Generate(1 + i * 5 / kSchemas));  // depth 1 to 5
      GrammarSpec spec;
      spec.kind = GrammarSpec::Kind::kJsonSchema;
      spec.json_schema = schemas.back().dump();
      GenerationRequest request = Request("Answer in JSON, please.", static_cast<uint64_t>(i), kMaxTokens);
      request.grammar = Compile(spec);
      ASSERT_NE(request.grammar, nullptr);
      batch.push_back(std::move(request));
    }
    const bool mixed = first == 0;
    if (mixed) batch.insert(batch.end(), free.begin(), free.end());
    const std::vector<Reply> replies = Run(std::move(batch));
    for (int i = 0; i < kPerBatch; ++i) {
      const Reply& reply = replies[i];
      ASSERT_TRUE(reply.error.ok()) << reply.error;
      EXPECT_EQ(reply.reason, scheduler::FinishReason::kStop) << schemas[i].dump() << "\n" << reply.text;
      testing::WriteOutputLine("demo_schema_outputs.jsonl", Json{{"schema", schemas[i]}, {"output", reply.text}}.dump(),
                               false);
    }
    if (mixed) {
      for (size_t j = 0; j < free.size(); ++j) {
        EXPECT_EQ(replies[kPerBatch + j].tokens, alone[j].tokens) << "free request " << j << " changed beside guided ones";
      }
    }
  }
}

TEST_F(DemoModelTest, RegexesAndChoices) {
  const std::vector<std::string> regexes = {"[0-9]{3}-[0-9]{4}", "(yes|no|maybe)( indeed)?", "[A-Z][a-z]{2,8}( [A-Z][a-z]{2,8}){0,2}",
                                            "\\d{4}-\\d{2}-\\d{2}", "<think>[a-z ]{1,12}</think>\\w{1,6}"};
  const std::vector<std::vector<std::string>> choices = {{"positive", "negative", "neutral"}, {"A", "B", "C", "D"},
                                                          {"北京", "上海", "深圳"}};
  testing::WriteOutputLine("demo_regex_outputs.jsonl", "", true);
  testing::WriteOutputLine("demo_choice_outputs.jsonl", "", true);
  std::vector<GenerationRequest> batch;
  for (size_t r = 0; r < regexes.size(); ++r) {
    for (int seed = 0; seed < 4; ++seed) {
      GrammarSpec spec;
      spec.kind = GrammarSpec::Kind::kRegex;
      spec.regex = regexes[r];
      GenerationRequest request = Request("Reply:", static_cast<uint64_t>(seed), 200);
      request.grammar = Compile(spec);
      batch.push_back(std::move(request));
    }
  }
  for (const auto& list : choices) {
    for (int seed = 0; seed < 4; ++seed) {
      GrammarSpec spec;
      spec.kind = GrammarSpec::Kind::kChoice;
      spec.choices = list;
      GenerationRequest request = Request("Pick one:", static_cast<uint64_t>(seed), 50);
      request.grammar = Compile(spec);
      batch.push_back(std::move(request));
    }
  }
  const std::vector<Reply> replies = Run(std::move(batch));
  size_t next = 0;
  for (const std::string& regex : regexes) {
    for (int seed = 0; seed < 4; ++seed, ++next) {
      EXPECT_EQ(replies[next].reason, scheduler::FinishReason::kStop) << regex << ": " << replies[next].text;
      testing::WriteOutputLine("demo_regex_outputs.jsonl", Json{{"regex", regex}, {"output", replies[next].text}}.dump(),
                               false);
    }
  }
  for (const auto& list : choices) {
    for (int seed = 0; seed < 4; ++seed, ++next) {
      EXPECT_EQ(replies[next].reason, scheduler::FinishReason::kStop) << replies[next].text;
      testing::WriteOutputLine("demo_choice_outputs.jsonl", Json{{"choices", list}, {"output", replies[next].text}}.dump(),
                               false);
    }
  }
}

}  // namespace
}  // namespace gantry::guided
