// ModelEngine on a fake runner and a fake clock. Most tests step the engine
// by hand (no thread, no sleeps); the last ones run its thread so the
// ThreadSanitizer build sees the producer/consumer hand-off.
#include "scheduler/model_engine.h"

#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/scheduler/engine_replies.h"
#include "tests/scheduler/fake_runner.h"

namespace gantry::scheduler {
namespace {

using ::gantry::testing::FakeRunner;
using ::testing::HasSubstr;

struct Outcome {
  std::vector<int32_t> tokens;
  FinishReason reason = FinishReason::kNone;
  absl::Status error;
  Usage usage;
};

LoadedModel FakeModel(FakeRunner** runner, int64_t num_blocks, int32_t block_size = 4, int64_t max_context = 256) {
  auto fake = std::make_unique<FakeRunner>(num_blocks, block_size, max_context);
  *runner = fake.get();
  LoadedModel model;
  model.runner = std::move(fake);
  return model;
}

// Pops everything already in `stream` into `out`; true once the last event came.
bool Collect(RequestStream& stream, Outcome* out) {
  StreamEvent event;
  while (stream.Pop(&event, absl::ZeroDuration())) {
    for (const auto& t : event.tokens) out->tokens.push_back(t.id);
    if (!event.error.ok()) out->error = event.error;
    if (event.last()) {
      out->reason = event.reason;
      out->usage = event.usage;
      return true;
    }
  }
  return false;
}

// Steps until every stream has ended.
std::vector<Outcome> RunToEnd(ModelEngine& engine, const std::vector<std::shared_ptr<RequestStream>>& streams) {
  std::vector<Outcome> outcomes(streams.size());
  std::vector<bool> done(streams.size(), false);
  for (int step = 0; step < 10000; ++step) {
    bool all = true;
    for (size_t i = 0; i < streams.size(); ++i) {
      if (!done[i]) done[i] = Collect(*streams[i], &outcomes[i]);
      all = all && done[i];
    }
    if (all) return outcomes;
    engine.StepOnce();
  }
  ADD_FAILURE() << "requests did not finish";
  return outcomes;
}

const auto Prompt = &testing::RequestIgnoringEos;
// What the fake model produces for `prompt`, computed without the engine.
const auto Expected = &FakeRunner::Continuation;

TEST(ModelEngineTest, GeneratesMaxTokensAndFinishesWithLength) {
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 64), {}, &clock);
  auto stream = engine.Submit(Prompt({5, 6, 7}, 10));
  ASSERT_TRUE(stream.ok()) << stream.status();
  auto out = RunToEnd(engine, {*stream});
  EXPECT_EQ(out[0].tokens, Expected({5, 6, 7}, 10));
  EXPECT_EQ(out[0].reason, FinishReason::kLength);
  EXPECT_EQ(engine.Stats().blocks_free, 64) << "a finished request frees its blocks";
}

// Hears every step's report.
class StepRecorder : public SchedulerObserver {
 public:
  void OnStep(const std::string& model, const StepReport& report) override { reports.push_back(report); }
  std::vector<StepReport> reports;
};

TEST(ModelEngineTest, StepReportsCarryTheRunnersDeviceWait) {
  FakeClock clock;
  FakeRunner* runner;
  StepRecorder recorder;
  ModelEngine engine("m", FakeModel(&runner, 64), {}, &clock, &recorder);
  runner->device_seconds = 0.25;
  auto stream = engine.Submit(Prompt({5, 6, 7}, 3));
  ASSERT_TRUE(stream.ok()) << stream.status();
  RunToEnd(engine, {*stream});
  ASSERT_EQ(recorder.reports.size(), 3u);  // the prompt's step, then two decodes
  for (size_t i = 0; i < recorder.reports.size(); ++i) {
    EXPECT_EQ(recorder.reports[i].device_wait, absl::Milliseconds(250));
    EXPECT_GT(recorder.reports[i].start, absl::Time()) << "when the step was launched";
    if (i > 0) EXPECT_GE(recorder.reports[i].start, recorder.reports[i - 1].start);
  }
  EXPECT_EQ(recorder.reports[0].prompt_tokens, 3);
  EXPECT_EQ(recorder.reports[2].decode_tokens, 1);
}

TEST(ModelEngineTest, AStepIsPublishedWhileTheNextRuns) {
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 64), {}, &clock);
  auto stream = *engine.Submit(Prompt({5, 6, 7}, 3));
  Outcome out;
  engine.StepOnce();  // launches the prompt's step and returns
  EXPECT_EQ(runner->calls, (std::vector<std::string>{"launch"}));
  EXPECT_FALSE(Collect(*stream, &out));
  EXPECT_TRUE(out.tokens.empty()) << "nothing is published before its step is collected";
  engine.StepOnce();  // collects it, launches the next, then publishes the first token
  EXPECT_EQ(runner->calls, (std::vector<std::string>{"launch", "collect", "launch"}));
  EXPECT_FALSE(Collect(*stream, &out));
  EXPECT_EQ(out.tokens, Expected({5, 6, 7}, 1));
  EXPECT_EQ(engine.Stats().running, 1);
  auto rest = RunToEnd(engine, {stream});
  out.tokens.insert(out.tokens.end(), rest[0].tokens.begin(), rest[0].tokens.end());
  EXPECT_EQ(out.tokens, Expected({5, 6, 7}, 3));
  EXPECT_EQ(runner->calls.size(), 6u) << "three steps, each launched and collected once";
  EXPECT_EQ(engine.Stats().blocks_free, 64);
}

TEST(ModelRunnerDefaultTest, LaunchHoldsOneStepUntilCollected) {
  FakeRunner runner(8);
  const std::vector<int32_t> tokens = {5, 6, 7};
  const std::vector<int32_t> table = {0};
  runtime::SamplingParams greedy;
  runtime::StepSequence seq;
  seq.id = 1;
  seq.tokens = tokens;
  seq.num_prompt = 3;
  seq.num_tokens = 3;
  seq.block_table = table;
  seq.sampling = &greedy;
  ASSERT_TRUE(runner.Launch({seq}).ok());
  EXPECT_EQ(runner.Launch({seq}).code(), absl::StatusCode::kFailedPrecondition);
  auto result = runner.Collect();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->sequences.at(0).token, FakeRunner::NextToken({5, 6, 7}));
  EXPECT_EQ(runner.steps, 1) << "the refused launch ran nothing";
  EXPECT_EQ(runner.Collect().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ModelEngineTest, WithoutOverlapAStepIsCollectedAtOnce) {
  FakeClock clock;
  FakeRunner* runner;
  EngineOptions options;
  options.overlap_steps = false;
  ModelEngine engine("m", FakeModel(&runner, 64), options, &clock);
  auto stream = *engine.Submit(Prompt({5, 6, 7}, 2));
  Outcome out;
  engine.StepOnce();
  EXPECT_EQ(runner->calls, (std::vector<std::string>{"launch", "collect"}));
  EXPECT_FALSE(Collect(*stream, &out));
  EXPECT_EQ(out.tokens, Expected({5, 6, 7}, 1));
  engine.StepOnce();
  EXPECT_TRUE(Collect(*stream, &out));
  EXPECT_EQ(out.tokens, Expected({5, 6, 7}, 2));
  EXPECT_EQ(engine.Stats().blocks_free, 64);
}

TEST(ModelEngineTest, StopTokenEndsTheRequest) {
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 64), {}, &clock);
  const std::vector<int32_t> expected = Expected({9}, 5);
  GenerationRequest request = Prompt({9}, 20);
  request.stop_token_ids = {expected[3]};
  auto out = RunToEnd(engine, {*engine.Submit(request)});
  EXPECT_EQ(out[0].tokens, std::vector<int32_t>(expected.begin(), expected.begin() + 4));
  EXPECT_EQ(out[0].reason, FinishReason::kStop);
}

TEST(ModelEngineTest, QueueFullAnswersResourceExhausted) {
  FakeClock clock;
  FakeRunner* runner;
  EngineOptions options;
  options.max_queue = 2;
  ModelEngine engine("m", FakeModel(&runner, 64), options, &clock);
  ASSERT_TRUE(engine.Submit(Prompt({1}, 4)).ok());
  ASSERT_TRUE(engine.Submit(Prompt({1}, 4)).ok());
  auto third = engine.Submit(Prompt({1}, 4));
  ASSERT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(), HasSubstr("queue of model m is full (2 waiting requests)"));
  // Once the queue drains there is room again.
  engine.StepOnce();
  EXPECT_TRUE(engine.Submit(Prompt({1}, 4)).ok());
}

TEST(ModelEngineTest, RejectsRequestsTheModelCannotServe) {
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 8, 4, 64), {}, &clock);
  auto bad_token = engine.Submit(Prompt({1, 100}, 4));
  EXPECT_EQ(bad_token.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_token.status().message(), HasSubstr("token id 100 at index 1 is outside the vocabulary [0, 100)"));
  auto too_long = engine.Submit(Prompt({1, 2, 3}, 62));
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_long.status().message(), HasSubstr("exceeds the context of 64 tokens"));
  auto too_many_blocks = engine.Submit(Prompt({1, 2, 3}, 40));
  EXPECT_EQ(too_many_blocks.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(too_many_blocks.status().message(), HasSubstr("needs 11 KV blocks; model m has 8"));
  EXPECT_EQ(engine.Submit(Prompt({}, 4)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelEngineTest, LongPromptsArePrefilledInChunks) {
  FakeClock clock;
  FakeRunner* runner;
  EngineOptions options;
  options.max_step_tokens = 8;
  ModelEngine engine("m", FakeModel(&runner, 64), options, &clock);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 30; ++i) prompt.push_back(10 + i);
  auto out = RunToEnd(engine, {*engine.Submit(Prompt(prompt, 3))});
  EXPECT_EQ(out[0].tokens, Expected(prompt, 3));
  EXPECT_EQ(runner->max_step_tokens_seen, 8);
  EXPECT_EQ(runner->steps, 4 + 2) << "30 prompt tokens in 4 chunks, then 2 decodes";
}

TEST(ModelEngineTest, BatchedOutputEqualsOneAtATime) {
  std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4}, {5, 6, 7, 8, 9, 10, 11}, {12, 13}, {14, 15, 16}};
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 256), {}, &clock);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& p : prompts) streams.push_back(*engine.Submit(Prompt(p, 12)));
  auto out = RunToEnd(engine, streams);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(out[i].tokens, Expected(prompts[i], 12)) << i;
  EXPECT_LE(runner->steps, 13) << "all five ran in the same steps";
}

TEST(ModelEngineTest, PreemptedRequestsResumeWithIdenticalOutput) {
  // 12 blocks of 4 tokens; four requests of 4 + 20 tokens need 6 blocks each
  // at the end: they cannot all stay, so the newest are preempted and
  // recomputed later.
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 12), {}, &clock);
  std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}, {13, 14, 15, 16}};
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& p : prompts) streams.push_back(*engine.Submit(Prompt(p, 20)));
  auto out = RunToEnd(engine, streams);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_TRUE(out[i].error.ok()) << out[i].error;
    EXPECT_EQ(out[i].reason, FinishReason::kLength);
    EXPECT_EQ(out[i].tokens, Expected(prompts[i], 20)) << i;
  }
  EXPECT_GT(engine.Stats().preemptions, 0);
  EXPECT_EQ(engine.Stats().blocks_free, 12);
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(ModelEngineTest, ASharedPrefixIsComputedOnce) {
  // Blocks of 16 tokens: a 1,000-token prefix is 62 full blocks (992 tokens).
  std::vector<int32_t> prefix;
  for (int i = 0; i < 1000; ++i) prefix.push_back(3 + (i * 7) % 90);
  const std::vector<int32_t> first = Concat(prefix, {11, 12, 13, 14, 15});
  const std::vector<int32_t> second = Concat(prefix, {21, 22, 23, 24, 25, 26, 27});
  for (bool caching : {true, false}) {
    SCOPED_TRACE(caching ? "prefix caching on" : "prefix caching off");
    FakeClock clock;
    FakeRunner* runner;
    EngineOptions options;
    options.prefix_caching = caching;
    ModelEngine engine("m", FakeModel(&runner, 200, 16, 2048), options, &clock);
    auto a = RunToEnd(engine, {*engine.Submit(Prompt(first, 4))});
    EXPECT_EQ(a[0].tokens, Expected(first, 4));
    EXPECT_EQ(a[0].usage.cached_prompt_tokens, 0);
    runner->prompt_tokens_sent.clear();
    auto b = RunToEnd(engine, {*engine.Submit(Prompt(second, 4))});
    EXPECT_EQ(b[0].tokens, Expected(second, 4)) << "the shared blocks hold the right tokens";
    ASSERT_FALSE(runner->prompt_tokens_sent.empty());
    EXPECT_EQ(runner->prompt_tokens_sent[0], caching ? 1007 - 992 : 1007) << "only the suffix is sent";
    EXPECT_EQ(b[0].usage.cached_prompt_tokens, caching ? 992 : 0);
    EXPECT_EQ(b[0].usage.prompt_tokens, 1007);
    const EngineStats stats = engine.Stats();
    EXPECT_EQ(stats.prefix_hit_tokens, caching ? 992 : 0);
    EXPECT_EQ(stats.prefix_query_tokens, caching ? 1005 + 1007 : 0);
    EXPECT_EQ(stats.blocks_free, 200) << "cached blocks count as free";
  }
}

TEST(ModelEngineTest, PreemptingOrCancellingASharerLeavesTheOthersIntact) {
  // Four requests share an 8-token prefix; 12 blocks of 4 cannot hold them
  // all to the end, so some are preempted, and one is cancelled midway.
  const std::vector<int32_t> prefix = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<std::vector<int32_t>> prompts;
  for (int32_t i = 0; i < 4; ++i) prompts.push_back(Concat(prefix, {20 + i, 30 + i}));
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 12), {}, &clock);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& p : prompts) streams.push_back(*engine.Submit(Prompt(p, 24)));
  for (int i = 0; i < 6; ++i) engine.StepOnce();
  streams[1]->Cancel();
  auto out = RunToEnd(engine, streams);
  EXPECT_EQ(out[1].reason, FinishReason::kCancelled);
  for (size_t i : {0, 2, 3}) {
    EXPECT_TRUE(out[i].error.ok()) << out[i].error;
    EXPECT_EQ(out[i].reason, FinishReason::kLength);
    EXPECT_EQ(out[i].tokens, Expected(prompts[i], 24)) << i;
  }
  EXPECT_GT(engine.Stats().preemptions, 0);
  EXPECT_GT(engine.Stats().prefix_hit_tokens, 0);
  EXPECT_EQ(engine.Stats().blocks_free, 12) << "the pool is whole again";
}

TEST(ModelEngineTest, FirstComeFirstServed) {
  FakeClock clock;
  FakeRunner* runner;
  EngineOptions options;
  options.max_batch = 1;
  ModelEngine engine("m", FakeModel(&runner, 64), options, &clock);
  auto first = *engine.Submit(Prompt({1}, 3));
  auto second = *engine.Submit(Prompt({2}, 3));
  Outcome a, b;
  // Three steps make the first's tokens; each StepOnce collects the step
  // the one before launched, so the fourth publishes the last token (and
  // launches the second's prompt).
  for (int i = 0; i < 4; ++i) engine.StepOnce();
  EXPECT_TRUE(Collect(*first, &a));
  EXPECT_FALSE(Collect(*second, &b)) << "the second waits for the only slot";
  EXPECT_TRUE(b.tokens.empty());
  RunToEnd(engine, {second});
}

TEST(ModelEngineTest, CancelledRequestLeavesAndFreesItsBlocks) {
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 64), {}, &clock);
  auto stream = *engine.Submit(Prompt({1, 2, 3, 4, 5, 6}, 100));
  for (int i = 0; i < 5; ++i) engine.StepOnce();
  EXPECT_LT(engine.Stats().blocks_free, 64);
  stream->Cancel();
  engine.StepOnce();
  Outcome out;
  ASSERT_TRUE(Collect(*stream, &out));
  EXPECT_EQ(out.reason, FinishReason::kCancelled);
  EXPECT_EQ(out.tokens.size(), 5u);
  EXPECT_EQ(engine.Stats().blocks_free, 64);
  EXPECT_EQ(engine.Stats().running, 0);
}

TEST(ModelEngineTest, StatsCountWaitingAndRunning) {
  FakeClock clock;
  FakeRunner* runner;
  EngineOptions options;
  options.max_batch = 2;
  ModelEngine engine("m", FakeModel(&runner, 64), options, &clock);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(engine.Submit(Prompt({1}, 5)).ok());
  EXPECT_EQ(engine.Stats().waiting, 3);
  engine.StepOnce();
  EXPECT_EQ(engine.Stats().running, 2);
  EXPECT_EQ(engine.Stats().waiting, 1);
}

TEST(ModelEngineTest, StopWithZeroGraceCancelsEverything) {
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 64), {}, &clock);
  auto stream = *engine.Submit(Prompt({1}, 100));
  engine.StepOnce();
  engine.Stop(absl::ZeroDuration());
  Outcome out;
  ASSERT_TRUE(Collect(*stream, &out));
  EXPECT_EQ(out.reason, FinishReason::kCancelled);
  EXPECT_EQ(engine.Submit(Prompt({1}, 1)).status().code(), absl::StatusCode::kUnavailable);
}

// Pops until the last event, waiting on the stream's condition variable.
Outcome Await(RequestStream& stream) {
  Outcome out;
  StreamEvent event;
  while (stream.Pop(&event, absl::Seconds(30))) {
    for (const auto& t : event.tokens) out.tokens.push_back(t.id);
    if (!event.error.ok()) out.error = event.error;
    if (event.last()) {
      out.reason = event.reason;
      return out;
    }
  }
  ADD_FAILURE() << "no last event";
  return out;
}

TEST(ModelEngineThreadTest, ConcurrentClientsOnTheEngineThread) {
  FakeClock clock;
  FakeRunner* runner;
  EngineOptions options;
  options.max_batch = 4;
  ModelEngine engine("m", FakeModel(&runner, 24), options, &clock);
  engine.Start();
  std::vector<std::thread> clients;
  std::vector<Outcome> outcomes(8);
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] {
      auto stream = engine.Submit(Prompt({i + 1, i + 2}, 16));
      ASSERT_TRUE(stream.ok()) << stream.status();
      if (i % 3 == 2) (*stream)->Cancel();
      outcomes[i] = Await(**stream);
      (void)engine.Stats();
    });
  }
  for (auto& c : clients) c.join();
  for (int i = 0; i < 8; ++i) {
    if (i % 3 == 2 && outcomes[i].reason == FinishReason::kCancelled) {
      EXPECT_LT(outcomes[i].tokens.size(), 16u);
    } else {  // a cancel may come after the request has finished
      EXPECT_EQ(outcomes[i].tokens, Expected({i + 1, i + 2}, 16)) << i;
    }
  }
  engine.Stop(std::nullopt);
  EXPECT_EQ(engine.Stats().running, 0);
}

TEST(ModelEngineThreadTest, StopDrainsRunningRequests) {
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 64), {}, &clock);
  engine.Start();
  auto stream = *engine.Submit(Prompt({3}, 30));
  engine.Stop(std::nullopt);
  Outcome out = Await(*stream);
  EXPECT_EQ(out.reason, FinishReason::kLength);
  EXPECT_EQ(out.tokens, Expected({3}, 30));
}

}  // namespace
}  // namespace gantry::scheduler
