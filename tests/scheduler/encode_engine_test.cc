// ModelEngine serving an encoder model (embeddings, rerank) on a fake
// encoder and a fake clock: inputs of several requests batched into steps
// within the token budget, requests split across steps, errors, cancels,
// and the checks at submission. Most tests step by hand; the last runs the
// engine's thread (ThreadSanitizer sees the hand-off).
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/batch_planner.h"
#include "scheduler/error_reason.h"
#include "scheduler/model_engine.h"

namespace gantry::scheduler {
namespace {

using ::gantry::ReasonOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Output row of an input: {its length, its first token, its first type}.
// Records each step's batch (input lengths) and can fail a step.
class FakeEncoder : public runtime::EncoderRunner {
 public:
  FakeEncoder() {
    info_.config.architecture_name = "BertModel";
    info_.config.vocab_size = 100;
    info_.config.hidden_size = 3;
    info_.config.num_heads = 1;
    info_.config.type_vocab_size = 2;
    info_.max_tokens = 16;
    info_.output_size = 3;
    info_.device = "cpu";
    info_.dtype = "float32";
  }
  const runtime::EncoderInfo& info() const override { return info_; }
  absl::StatusOr<std::vector<std::vector<float>>> Encode(absl::Span<const runtime::EncoderInput> batch) override {
    std::vector<int64_t> lengths;
    for (const auto& input : batch) lengths.push_back(static_cast<int64_t>(input.tokens.size()));
    steps.push_back(lengths);
    if (fail_next) {
      fail_next = false;
      return absl::ResourceExhaustedError("out of memory encoding");
    }
    std::vector<std::vector<float>> out;
    for (const auto& input : batch) {
      out.push_back({static_cast<float>(input.tokens.size()), static_cast<float>(input.tokens[0]),
                     input.token_types.empty() ? -1.0f : static_cast<float>(input.token_types[0])});
    }
    return out;
  }

  std::vector<std::vector<int64_t>> steps;
  bool fail_next = false;

 private:
  runtime::EncoderInfo info_;
};

LoadedModel EncoderModel(FakeEncoder** encoder, int64_t max_seq_length = 0) {
  auto fake = std::make_unique<FakeEncoder>();
  *encoder = fake.get();
  LoadedModel model;
  model.task.task = runtime::ModelTask::kEmbed;
  model.task.embedding.max_seq_length = max_seq_length;
  model.encoder = std::move(fake);
  return model;
}

EncodeRequest Inputs(std::vector<std::vector<int32_t>> inputs) {
  EncodeRequest request;
  for (auto& tokens : inputs) request.inputs.push_back({std::move(tokens), {}});
  return request;
}

std::vector<int32_t> Tokens(int n, int32_t first) {
  std::vector<int32_t> tokens(n, 7);
  tokens[0] = first;
  return tokens;
}

// The one event of `stream`, if it has come.
std::optional<StreamEvent> Result(RequestStream& stream) {
  StreamEvent event;
  if (!stream.Pop(&event, absl::ZeroDuration())) return std::nullopt;
  return event;
}

TEST(PlanEncodeStepTest, TakesALeadingRunWithinInputsAndPaddedTokens) {
  PlannerLimits limits{4, 32};
  EXPECT_EQ(PlanEncodeStep({}, limits), 0);
  EXPECT_EQ(PlanEncodeStep({5, 5, 5, 5, 5}, limits), 4);  // max_batch
  EXPECT_EQ(PlanEncodeStep({8, 8, 8, 9}, limits), 3);     // 4 x 9 = 36 > 32
  EXPECT_EQ(PlanEncodeStep({2, 2, 20, 1}, limits), 2);    // 3 x 20 = 60; the order is kept
  EXPECT_EQ(PlanEncodeStep({40, 1}, limits), 1);          // over the budget alone: still runs
}

TEST(EncodeEngineTest, BatchesInputsOfSeveralRequestsAndAnswersEachInOrder) {
  FakeEncoder* encoder;
  FakeClock clock;
  EngineOptions options;
  options.max_batch = 8;
  options.max_encode_tokens = 40;
  options.max_step_tokens = 1;  // a generation step's limit: not an encoder's
  ModelEngine engine("embed", EncoderModel(&encoder), options, &clock);
  EXPECT_EQ(engine.task(), runtime::ModelTask::kEmbed);
  EXPECT_EQ(engine.info().max_context, 16);
  EXPECT_EQ(engine.info().num_blocks, 0);
  auto a = engine.SubmitEncode(Inputs({Tokens(4, 11), Tokens(6, 12)}));
  auto b = engine.SubmitEncode(Inputs({Tokens(3, 21), Tokens(5, 22), Tokens(5, 23), Tokens(10, 24)}));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(engine.Stats().waiting, 2);
  clock.Advance(absl::Seconds(1));
  ASSERT_TRUE(engine.StepOnce());
  // 5 inputs padded to 6 = 30 tokens fit; a sixth (10 long) would make 60.
  EXPECT_THAT(encoder->steps, ElementsAre(ElementsAre(4, 6, 3, 5, 5)));
  auto first = Result(**a);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->reason, FinishReason::kStop);
  ASSERT_EQ(first->outputs.size(), 2u);
  EXPECT_EQ(first->outputs[0], (std::vector<float>{4, 11, -1}));
  EXPECT_EQ(first->outputs[1], (std::vector<float>{6, 12, -1}));
  EXPECT_EQ(first->usage.prompt_tokens, 10);
  EXPECT_DOUBLE_EQ(first->usage.queue_seconds, 1.0);
  EXPECT_FALSE(Result(**b).has_value());  // its last input is still pending
  EXPECT_EQ(engine.Stats().running, 1);
  ASSERT_TRUE(engine.StepOnce());
  auto second = Result(**b);
  ASSERT_TRUE(second.has_value());
  ASSERT_EQ(second->outputs.size(), 4u);
  EXPECT_EQ(second->outputs[3][1], 24);
  EXPECT_EQ(second->usage.prompt_tokens, 23);
  EXPECT_FALSE(engine.StepOnce());  // nothing left
  EXPECT_EQ(engine.Stats().waiting, 0);
  EXPECT_EQ(engine.Stats().running, 0);
}

TEST(EncodeEngineTest, TokenTypesReachTheEncoder) {
  FakeEncoder* encoder;
  FakeClock clock;
  ModelEngine engine("rerank", EncoderModel(&encoder), EngineOptions{}, &clock);
  EncodeRequest request;
  request.inputs.push_back({{2, 5, 3, 6, 3}, {1, 0, 0, 1, 1}});
  auto stream = engine.SubmitEncode(std::move(request));
  ASSERT_TRUE(stream.ok());
  engine.StepOnce();
  auto result = Result(**stream);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->outputs[0][2], 1);
}

TEST(EncodeEngineTest, RefusesBadInputsNamingTheirIndex) {
  FakeEncoder* encoder;
  FakeClock clock;
  ModelEngine engine("embed", EncoderModel(&encoder, /*max_seq_length=*/8), EngineOptions{}, &clock);
  EXPECT_EQ(engine.info().max_context, 8);  // sentence-transformers' max_seq_length below the positions
  auto none = engine.SubmitEncode(EncodeRequest{});
  EXPECT_THAT(none.status().message(), HasSubstr("no inputs"));
  auto empty = engine.SubmitEncode(Inputs({{1, 2}, {}}));
  EXPECT_THAT(empty.status().message(), HasSubstr("input 1 is empty"));
  auto longer = engine.SubmitEncode(Inputs({Tokens(9, 1)}));
  EXPECT_EQ(longer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(longer.status().message(), HasSubstr("input 0 has 9 tokens; model embed takes at most 8"));
  EXPECT_EQ(ReasonOf(longer.status()), "CONTEXT_LENGTH");
  auto vocab = engine.SubmitEncode(Inputs({{1, 100}}));
  EXPECT_THAT(vocab.status().message(), HasSubstr("input 0: token id 100 is outside the vocabulary [0, 100)"));
  EncodeRequest types;
  types.inputs.push_back({{1, 2}, {0, 2}});
  EXPECT_THAT(engine.SubmitEncode(types).status().message(), HasSubstr("token type 2 is outside [0, 2)"));
  GenerationRequest generation;
  generation.prompt = {1, 2};
  auto wrong = engine.Submit(generation);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(wrong.status().message(), HasSubstr("model embed serves embed, not text generation"));
  EXPECT_EQ(ReasonOf(wrong.status()), "UNSUPPORTED");
  EXPECT_TRUE(encoder->steps.empty());
}

TEST(EncodeEngineTest, AFailedStepFailsItsRequestsOnly) {
  FakeEncoder* encoder;
  FakeClock clock;
  EngineOptions options;
  options.max_batch = 2;
  ModelEngine engine("embed", EncoderModel(&encoder), options, &clock);
  auto a = engine.SubmitEncode(Inputs({Tokens(2, 1), Tokens(2, 2)}));
  auto b = engine.SubmitEncode(Inputs({Tokens(2, 3)}));
  encoder->fail_next = true;
  engine.StepOnce();
  auto failed = Result(**a);
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(failed->error.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReasonOf(failed->error), "DEVICE_MEMORY");
  engine.StepOnce();
  auto fine = Result(**b);
  ASSERT_TRUE(fine.has_value());
  EXPECT_TRUE(fine->error.ok());
  EXPECT_EQ(fine->outputs[0][1], 3);
}

TEST(EncodeEngineTest, CancelledRequestsLeaveBeforeTheirInputsRun) {
  FakeEncoder* encoder;
  FakeClock clock;
  ModelEngine engine("embed", EncoderModel(&encoder), EngineOptions{}, &clock);
  auto a = engine.SubmitEncode(Inputs({Tokens(2, 1)}));
  auto b = engine.SubmitEncode(Inputs({Tokens(3, 2)}));
  (*a)->Cancel();
  engine.StepOnce();
  EXPECT_EQ(Result(**a)->reason, FinishReason::kCancelled);
  EXPECT_THAT(encoder->steps, ElementsAre(ElementsAre(3)));
  EXPECT_EQ(Result(**b)->reason, FinishReason::kStop);
}

TEST(EncodeEngineTest, GenerationModelsRefuseEncodeRequests) {
  // A generation engine needs a runner; a fake with no steps is enough here.
  class IdleRunner : public runtime::ModelRunner {
   public:
    IdleRunner() {
      info_.num_blocks = 4;
      info_.block_size = 4;
      info_.max_context = 16;
      info_.config.vocab_size = 10;
    }
    const runtime::ModelInfo& info() const override { return info_; }
    void ReleaseSequence(runtime::SequenceId) override {}
    absl::StatusOr<runtime::StepResult> Step(absl::Span<const runtime::StepSequence>) override {
      return absl::InternalError("unused");
    }

   private:
    runtime::ModelInfo info_;
  };
  FakeClock clock;
  LoadedModel model;
  model.runner = std::make_unique<IdleRunner>();
  ModelEngine engine("chat", std::move(model), EngineOptions{}, &clock);
  auto refused = engine.SubmitEncode(Inputs({{1, 2}}));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("model chat serves text generation, not embeddings or rerank"));
}

TEST(EncodeEngineTest, ConcurrentCallersOnTheEngineThread) {
  FakeEncoder* encoder;
  FakeClock clock;
  EngineOptions options;
  options.max_batch = 16;
  options.max_encode_tokens = 256;
  options.max_queue = 1000;
  ModelEngine engine("embed", EncoderModel(&encoder), options, &clock);
  engine.Start();
  std::vector<std::thread> callers;
  std::atomic<int> answered{0};
  for (int t = 0; t < 8; ++t) {
    callers.emplace_back([&, t] {
      for (int r = 0; r < 20; ++r) {
        auto stream = engine.SubmitEncode(Inputs({Tokens(1 + (t + r) % 16, t), Tokens(3, 50 + r)}));
        ASSERT_TRUE(stream.ok()) << stream.status();
        StreamEvent event;
        ASSERT_TRUE((*stream)->Pop(&event, absl::Seconds(30)));
        ASSERT_EQ(event.outputs.size(), 2u);
        EXPECT_EQ(event.outputs[0][1], t);
        EXPECT_EQ(event.outputs[1][1], 50 + r);
        answered.fetch_add(1);
      }
    });
  }
  for (auto& c : callers) c.join();
  engine.Stop(std::nullopt);
  EXPECT_EQ(answered.load(), 160);
}

}  // namespace
}  // namespace gantry::scheduler
