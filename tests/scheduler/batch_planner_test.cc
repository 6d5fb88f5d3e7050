#include "scheduler/batch_planner.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gantry::scheduler {
namespace {

using ::testing::ElementsAre;

MATCHER_P2(Runs, key, tokens, "") { return arg.key == key && arg.num_tokens == tokens; }

// A pool of `total` blocks of 4 tokens in which sequence k of `held` holds
// held[k] blocks (keys 1, 2, ...).
KvCacheManager Pool(int64_t total, std::vector<int64_t> held = {}) {
  KvCacheManager kv(total, 4, /*prefix_caching=*/true);
  for (size_t k = 0; k < held.size(); ++k) EXPECT_TRUE(kv.Grow(static_cast<int64_t>(k) + 1, held[k] * 4).ok());
  return kv;
}

WaitingSequence Waiting(int64_t key, int64_t tokens) { return {key, tokens, {}}; }

TEST(BatchPlannerTest, DecodesThenAdmitsFirstComeFirstServed) {
  // Two decoding, three waiting; max_batch 4 admits two.
  std::vector<RunningSequence> running = {{1, 10, 1}, {2, 5, 1}};
  std::vector<WaitingSequence> waiting = {Waiting(3, 6), Waiting(4, 2), Waiting(5, 1)};
  StepPlan plan = PlanStep(running, waiting, Pool(105, {3, 2}), {4, 2048});
  EXPECT_THAT(plan.scheduled, ElementsAre(Runs(1, 1), Runs(2, 1), Runs(3, 6), Runs(4, 2)));
  EXPECT_THAT(plan.admitted, ElementsAre(3, 4));
  EXPECT_TRUE(plan.preempted.empty());
}

TEST(BatchPlannerTest, LongPromptsAreChunkedToTheTokenBudget) {
  std::vector<WaitingSequence> waiting = {Waiting(1, 100), Waiting(2, 50)};
  StepPlan plan = PlanStep({}, waiting, Pool(1000), {8, 64});
  EXPECT_THAT(plan.scheduled, ElementsAre(Runs(1, 64)));
  // Next step: the first continues its prompt, the second gets what is left.
  std::vector<RunningSequence> running = {{1, 64, 36}};
  plan = PlanStep(running, {Waiting(2, 50)}, Pool(1000, {16}), {8, 64});
  EXPECT_THAT(plan.scheduled, ElementsAre(Runs(1, 36), Runs(2, 28)));
}

TEST(BatchPlannerTest, NoOvertakingWhenTheHeadDoesNotFit) {
  // The head needs 3 blocks, 2 are free: nobody behind it is admitted.
  StepPlan plan = PlanStep({}, {Waiting(1, 12), Waiting(2, 1)}, Pool(2), {8, 2048});
  EXPECT_TRUE(plan.scheduled.empty());
  EXPECT_TRUE(plan.admitted.empty());
}

TEST(BatchPlannerTest, PreemptsTheNewestWhenBlocksRunOut) {
  // Three decoding sequences all at a block boundary need one block each;
  // one is free: the two newest are preempted, oldest first served.
  std::vector<RunningSequence> running = {{1, 8, 1}, {2, 8, 1}, {3, 8, 1}};
  StepPlan plan = PlanStep(running, {Waiting(4, 1)}, Pool(7, {2, 2, 2}), {8, 2048});
  EXPECT_THAT(plan.preempted, ElementsAre(3));
  EXPECT_THAT(plan.scheduled, ElementsAre(Runs(1, 1), Runs(2, 1)));
  EXPECT_TRUE(plan.admitted.empty()) << "no admission in a step that preempts";
}

TEST(BatchPlannerTest, ASequenceThatCannotFitPreemptsItself) {
  std::vector<RunningSequence> running = {{1, 8, 1}};
  StepPlan plan = PlanStep(running, {}, Pool(2, {2}), {8, 2048});
  EXPECT_THAT(plan.preempted, ElementsAre(1));
  EXPECT_TRUE(plan.scheduled.empty());
}

TEST(BatchPlannerTest, PreemptingASequenceFreesOnlyTheBlocksItAloneHolds) {
  // Sequences 1 and 2 share a cached 8-token prefix (2 blocks); 2 holds one
  // more block of its own. Preempting 2 frees that one block only, so 1
  // (needing 3 more, with 1 free) cannot be served either and goes too;
  // counting all of 2's blocks as freed would have scheduled it.
  KvCacheManager kv(5, 4, true);
  const std::vector<int32_t> prefix = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  kv.Start(1, prefix);
  ASSERT_TRUE(kv.Grow(1, 9).ok());
  kv.CacheComputedBlocks(1, prefix, 9);
  EXPECT_EQ(kv.Start(2, prefix).num_blocks, 2);
  ASSERT_TRUE(kv.Grow(2, 9).ok());
  ASSERT_EQ(kv.NumFreeBlocks(), 1);
  EXPECT_EQ(kv.BlocksFreedByRelease(2), 1);
  std::vector<RunningSequence> running = {{1, 9, 15}, {2, 9, 1}};  // 1 grows to 24 tokens: 6 blocks
  StepPlan plan = PlanStep(running, {}, kv, {8, 2048});
  EXPECT_THAT(plan.preempted, ElementsAre(2, 1));
  EXPECT_TRUE(plan.scheduled.empty());
}

TEST(BatchPlannerTest, AWaitingRequestComputesOnlyWhatIsNotCached) {
  KvCacheManager kv(4, 4, true);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  kv.Start(1, tokens);
  ASSERT_TRUE(kv.Grow(1, 10).ok());
  kv.CacheComputedBlocks(1, tokens, 10);
  kv.Release(1);  // two full blocks stay cached, evictable
  ASSERT_EQ(kv.NumFreeBlocks(), 4);
  WaitingSequence w{2, 10, kv.FindCachedPrefix(tokens)};
  EXPECT_EQ(w.cached.num_tokens, 8);
  EXPECT_EQ(w.cached.num_evictable, 2);
  // 2 cached tokens' worth of blocks are taken out of the free pool, plus one
  // new block for the remaining 2 tokens: 3 of 4.
  EXPECT_EQ(kv.BlocksToStart(w.cached, 10), 3);
  StepPlan plan = PlanStep({}, {w}, kv, {8, 2048});
  EXPECT_THAT(plan.scheduled, ElementsAre(Runs(2, 2)));
  // With one block free (three taken by someone else), it does not fit.
  ASSERT_TRUE(kv.Grow(9, 12).ok());  // evicts: uses the 2 unused blocks first, then 1 cached
  w.cached = kv.FindCachedPrefix(tokens);
  EXPECT_EQ(w.cached.num_tokens, 4) << "the LRU evicted the second (tail) block first";
  EXPECT_TRUE(PlanStep({}, {w}, kv, {8, 2048}).scheduled.empty());
}

}  // namespace
}  // namespace gantry::scheduler
