// ModelEngine running ahead (EngineOptions::run_ahead): step N + 1 planned
// and launched before step N is collected, on a fake runner that takes the
// pending tokens from the step in flight as the runtime does. Whatever the
// engine does ahead, every request's tokens, finish reason and usage must be
// what it gets one step at a time, and every block must come back.
#include <cstdio>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/model_engine.h"
#include "tests/scheduler/engine_replies.h"
#include "tests/scheduler/fake_runner.h"

namespace gantry::scheduler {
namespace {

using ::gantry::testing::FakeRunner;

LoadedModel FakeModel(FakeRunner** runner, int64_t num_blocks, int max_in_flight, int64_t max_context = 256) {
  auto fake = std::make_unique<FakeRunner>(num_blocks, /*block_size=*/4, max_context);
  fake->max_in_flight = max_in_flight;
  *runner = fake.get();
  LoadedModel model;
  model.runner = std::move(fake);
  return model;
}

struct Outcome {
  std::vector<int32_t> tokens;
  FinishReason reason = FinishReason::kNone;
  absl::Status error;
  int64_t completion_tokens = -1;
  bool done = false;
};

void Drain(RequestStream& stream, Outcome* out) {
  StreamEvent event;
  while (!out->done && stream.Pop(&event, absl::ZeroDuration())) {
    for (const auto& t : event.tokens) out->tokens.push_back(t.id);
    if (!event.error.ok()) out->error = event.error;
    if (event.last()) {
      out->reason = event.reason;
      out->completion_tokens = event.usage.completion_tokens;
      out->done = true;
    }
  }
}

const auto Prompt = &testing::RequestIgnoringEos;
// What the fake model produces for `prompt`, computed without the engine.
const auto Expected = &FakeRunner::Continuation;

TEST(RunAheadEngineTest, LaunchesTheNextStepBeforeCollectingTheLast) {
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 64, 2), {}, &clock);
  auto stream = *engine.Submit(Prompt({5, 6, 7}, 4));
  Outcome out;
  engine.StepOnce();  // the prompt: launched and left running
  EXPECT_EQ(runner->calls, (std::vector<std::string>{"launch"}));
  engine.StepOnce();  // the first decode launched on the prompt's pending token, then the prompt collected
  EXPECT_EQ(runner->calls, (std::vector<std::string>{"launch", "launch", "collect"}));
  Drain(*stream, &out);
  EXPECT_EQ(out.tokens, Expected({5, 6, 7}, 1));
  EXPECT_EQ(runner->max_in_flight_seen, 2);
  while (!out.done) {
    engine.StepOnce();
    Drain(*stream, &out);
  }
  EXPECT_EQ(out.tokens, Expected({5, 6, 7}, 4));
  EXPECT_EQ(out.reason, FinishReason::kLength);
  EXPECT_EQ(out.completion_tokens, 4);
  // The fourth token is the last by max_tokens: nothing runs on past it.
  EXPECT_EQ(runner->steps, 4);
  EXPECT_EQ(runner->pending_tokens_seen, 3);
  EXPECT_EQ(engine.Stats().blocks_free, 64);
  EXPECT_EQ(engine.Stats().running, 0);
}

TEST(RunAheadEngineTest, AStopFoundLateDropsTheStepRunAheadOfIt) {
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 64, 2), {}, &clock);
  const std::vector<int32_t> expected = Expected({9}, 6);
  GenerationRequest request = Prompt({9}, 20);
  request.stop_token_ids = {expected[3]};
  auto stream = *engine.Submit(request);
  Outcome out;
  while (!out.done) {
    engine.StepOnce();
    Drain(*stream, &out);
  }
  EXPECT_EQ(out.tokens, std::vector<int32_t>(expected.begin(), expected.begin() + 4));
  EXPECT_EQ(out.reason, FinishReason::kStop);
  EXPECT_EQ(out.completion_tokens, 4);
  EXPECT_EQ(runner->steps, 5) << "one step ran ahead past the stop; its token was dropped";
  EXPECT_FALSE(engine.StepOnce()) << "nothing is left in flight or to do";
  EXPECT_EQ(runner->calls.size(), 10u) << "every launched step collected";
  EXPECT_EQ(engine.Stats().blocks_free, 64);
}

TEST(RunAheadEngineTest, WithoutOverlapOrRunAheadOneStepIsInFlight) {
  for (bool overlap : {false, true}) {
    FakeClock clock;
    FakeRunner* runner;
    EngineOptions options;
    options.overlap_steps = overlap;
    options.run_ahead = false;
    ModelEngine engine("m", FakeModel(&runner, 64, 2), options, &clock);
    auto stream = *engine.Submit(Prompt({5, 6, 7}, 6));
    Outcome out;
    while (!out.done) {
      engine.StepOnce();
      Drain(*stream, &out);
    }
    EXPECT_EQ(out.tokens, Expected({5, 6, 7}, 6));
    EXPECT_EQ(runner->max_in_flight_seen, 1) << overlap;
    EXPECT_EQ(runner->pending_tokens_seen, 0) << overlap;
  }
}

TEST(RunAheadEngineTest, ACancelledRequestInFlightLeavesTheOthersIntact) {
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 64, 2), {}, &clock);
  auto a = *engine.Submit(Prompt({1, 2, 3}, 10));
  auto b = *engine.Submit(Prompt({4, 5}, 10));
  Outcome out_a, out_b;
  for (int i = 0; i < 4; ++i) engine.StepOnce();
  b->Cancel();
  while (!out_a.done || !out_b.done) {
    engine.StepOnce();
    Drain(*a, &out_a);
    Drain(*b, &out_b);
  }
  EXPECT_EQ(out_a.tokens, Expected({1, 2, 3}, 10));
  EXPECT_EQ(out_b.reason, FinishReason::kCancelled);
  const std::vector<int32_t> b_all = Expected({4, 5}, 10);
  ASSERT_LE(out_b.tokens.size(), b_all.size());
  EXPECT_EQ(out_b.tokens, std::vector<int32_t>(b_all.begin(), b_all.begin() + out_b.tokens.size()));
  EXPECT_EQ(engine.Stats().blocks_free, 64);
}

TEST(RunAheadEngineTest, GeneratedTokensReachThePrefixCache) {
  // Blocks a step fills while the next runs ahead are cached with their
  // real tokens, not the placeholder: a later prompt that repeats a finished
  // request's prompt and output finds all of it but the last partial block.
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 64, 2), {}, &clock);
  const std::vector<int32_t> prompt = {21, 22, 23, 24, 25, 26, 27, 28};
  auto first = *engine.Submit(Prompt(prompt, 10));
  Outcome out_first;
  while (!out_first.done) {
    engine.StepOnce();
    Drain(*first, &out_first);
  }
  ASSERT_EQ(out_first.tokens, Expected(prompt, 10));
  std::vector<int32_t> longer = prompt;
  longer.insert(longer.end(), out_first.tokens.begin(), out_first.tokens.end());
  longer.push_back(50);  // 19 tokens: blocks 0-3 (16 tokens) were computed by the first request
  GenerationRequest request = Prompt(longer, 3);
  auto second = *engine.Submit(request);
  Outcome out_second;
  Usage usage;
  StreamEvent event;
  while (!out_second.done) {
    engine.StepOnce();
    while (second->Pop(&event, absl::ZeroDuration())) {
      for (const auto& t : event.tokens) out_second.tokens.push_back(t.id);
      if (event.last()) {
        usage = event.usage;
        out_second.done = true;
      }
    }
  }
  EXPECT_EQ(out_second.tokens, Expected(longer, 3));
  EXPECT_EQ(usage.cached_prompt_tokens, 16);
}

// Guided sequences cannot run ahead: a step that samples one is collected
// before the next is planned (their tokens are checked in guided_engine_test).
TEST(RunAheadEngineTest, AFailedStepFailsItsRequestsAndTheEngineGoesOn) {
  FakeClock clock;
  FakeRunner* runner;
  ModelEngine engine("m", FakeModel(&runner, 64, 2), {}, &clock);
  auto a = *engine.Submit(Prompt({1, 2, 3}, 8));
  runner->fail_at_step = 3;  // the third step's launch fails, with the second still in flight
  Outcome out_a;
  while (!out_a.done) {
    engine.StepOnce();
    Drain(*a, &out_a);
  }
  EXPECT_THAT(out_a.error.message(), ::testing::HasSubstr("fake: device fault"));
  EXPECT_EQ(out_a.tokens, Expected({1, 2, 3}, out_a.tokens.size()));
  while (engine.StepOnce()) {
  }
  EXPECT_EQ(engine.Stats().blocks_free, 64);
  auto b = *engine.Submit(Prompt({7, 8}, 5));
  Outcome out_b;
  while (!out_b.done) {
    engine.StepOnce();
    Drain(*b, &out_b);
  }
  EXPECT_EQ(out_b.tokens, Expected({7, 8}, 5));
  EXPECT_EQ(engine.Stats().blocks_free, 64);
}

// Many requests with random prompts, lengths, stop tokens, arrivals and
// cancellations, on a cache small enough to preempt and with prompts
// chunked: run ahead and one step at a time give every request the tokens
// the model produces, and every block comes back.
TEST(RunAheadEngineTest, RandomWorkloadsMatchTheModel) {
  // What the workloads exercised while running ahead, summed over the seeds.
  int64_t pending_tokens = 0, preemptions = 0, cancelled = 0, stopped = 0;
  for (int seed = 0; seed < 40; ++seed) {
    for (int in_flight : {1, 2}) {
      SCOPED_TRACE(::testing::Message() << "seed " << seed << ", in flight " << in_flight);
      std::mt19937 rng(seed);
      auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
      FakeClock clock;
      FakeRunner* runner;
      EngineOptions options;
      options.max_batch = uniform(2, 6);
      options.max_step_tokens = uniform(6, 24);
      options.prefix_caching = uniform(0, 1) == 1;
      const int64_t blocks = uniform(12, 28);
      ModelEngine engine("m", FakeModel(&runner, blocks, in_flight, /*max_context=*/48), options, &clock);
      struct Request {
        std::vector<int32_t> prompt;
        GenerationRequest request;
        int arrive = 0, cancel = -1;
        std::shared_ptr<RequestStream> stream;
        Outcome out;
      };
      std::vector<Request> requests(uniform(4, 12));
      const std::vector<int32_t> shared = {11, 12, 13, 14, 15};
      for (Request& r : requests) {
        if (uniform(0, 2) == 0) r.prompt = shared;  // prefix sharing
        for (int i = uniform(1, 14); i > 0; --i) r.prompt.push_back(uniform(3, 99));
        const int max_tokens = uniform(1, std::min<int>(20, 47 - static_cast<int>(r.prompt.size())));
        r.request = Prompt(r.prompt, max_tokens);
        if (uniform(0, 2) == 0) r.request.stop_token_ids = {Expected(r.prompt, max_tokens)[uniform(0, max_tokens - 1)]};
        r.arrive = uniform(0, 12);
        if (uniform(0, 4) == 0) r.cancel = r.arrive + uniform(0, 10);
      }
      for (int step = 0; step < 2000; ++step) {
        bool all_done = true;
        for (Request& r : requests) {
          if (step == r.arrive) r.stream = *engine.Submit(r.request);
          if (step == r.cancel && r.stream) r.stream->Cancel();
          if (r.stream) Drain(*r.stream, &r.out);
          all_done = all_done && r.out.done;
        }
        if (all_done) break;
        engine.StepOnce();
      }
      for (size_t i = 0; i < requests.size(); ++i) {
        const Request& r = requests[i];
        SCOPED_TRACE(::testing::Message() << "request " << i);
        ASSERT_TRUE(r.out.done);
        EXPECT_TRUE(r.out.error.ok()) << r.out.error;
        const std::vector<int32_t> model = Expected(r.prompt, r.request.max_tokens);
        std::vector<int32_t> want = model;
        FinishReason reason = FinishReason::kLength;
        if (!r.request.stop_token_ids.empty()) {
          auto stop = std::find(model.begin(), model.end(), r.request.stop_token_ids[0]);
          if (stop != model.end()) {
            want.assign(model.begin(), stop + 1);
            reason = FinishReason::kStop;
          }
        }
        if (in_flight == 2) {
          cancelled += r.out.reason == FinishReason::kCancelled;
          stopped += r.out.reason == FinishReason::kStop;
        }
        if (r.out.reason == FinishReason::kCancelled) {
          ASSERT_LE(r.out.tokens.size(), want.size());
          EXPECT_EQ(r.out.tokens, std::vector<int32_t>(want.begin(), want.begin() + r.out.tokens.size()));
        } else {
          EXPECT_EQ(r.out.tokens, want);
          EXPECT_EQ(r.out.reason, reason);
          EXPECT_EQ(r.out.completion_tokens, static_cast<int64_t>(want.size()));
        }
      }
      while (engine.StepOnce()) {
      }
      EXPECT_EQ(engine.Stats().blocks_free, blocks);
      EXPECT_EQ(engine.Stats().running, 0);
      if (in_flight == 1) EXPECT_EQ(runner->pending_tokens_seen, 0);
      EXPECT_LE(runner->max_in_flight_seen, in_flight);
      if (in_flight == 2) {
        pending_tokens += runner->pending_tokens_seen;
        preemptions += engine.Stats().preemptions;
      }
    }
  }
  EXPECT_GT(pending_tokens, 1000);
  EXPECT_GT(preemptions, 10);
  EXPECT_GT(cancelled, 5);
  EXPECT_GT(stopped, 10);
  std::printf("run ahead: %ld pending tokens, %ld preemptions, %ld cancelled, %ld stopped\n",
              static_cast<long>(pending_tokens), static_cast<long>(preemptions), static_cast<long>(cancelled),
              static_cast<long>(stopped));
}

}  // namespace
}  // namespace gantry::scheduler
