#include "scheduler/batch_planner.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gantry::scheduler {
namespace {

using ::testing::ElementsAre;

MATCHER_P2(Runs, key, tokens, "") { return arg.key == key && arg.num_tokens == tokens; }

TEST(BatchPlannerTest, DecodesThenAdmitsFirstComeFirstServed) {
  // Two decoding, three waiting; max_batch 4 admits two.
  std::vector<RunningSequence> running = {{1, 10, 1, 3}, {2, 5, 1, 2}};
  std::vector<WaitingSequence> waiting = {{3, 6}, {4, 2}, {5, 1}};
  StepPlan plan = PlanStep(running, waiting, 100, {4, 2048, 4});
  EXPECT_THAT(plan.scheduled, ElementsAre(Runs(1, 1), Runs(2, 1), Runs(3, 6), Runs(4, 2)));
  EXPECT_THAT(plan.admitted, ElementsAre(3, 4));
  EXPECT_TRUE(plan.preempted.empty());
}

TEST(BatchPlannerTest, LongPromptsAreChunkedToTheTokenBudget) {
  std::vector<WaitingSequence> waiting = {{1, 100}, {2, 50}};
  StepPlan plan = PlanStep({}, waiting, 1000, {8, 64, 16});
  EXPECT_THAT(plan.scheduled, ElementsAre(Runs(1, 64)));
  // Next step: the first continues its prompt, the second gets what is left.
  std::vector<RunningSequence> running = {{1, 64, 36, 4}};
  plan = PlanStep(running, {{2, 50}}, 1000, {8, 64, 16});
  EXPECT_THAT(plan.scheduled, ElementsAre(Runs(1, 36), Runs(2, 28)));
}

TEST(BatchPlannerTest, NoOvertakingWhenTheHeadDoesNotFit) {
  // The head needs 3 blocks, 2 are free: nobody behind it is admitted.
  StepPlan plan = PlanStep({}, {{1, 12}, {2, 1}}, 2, {8, 2048, 4});
  EXPECT_TRUE(plan.scheduled.empty());
  EXPECT_TRUE(plan.admitted.empty());
}

TEST(BatchPlannerTest, PreemptsTheNewestWhenBlocksRunOut) {
  // Three decoding sequences all at a block boundary need one block each;
  // one is free: the two newest are preempted, oldest first served.
  std::vector<RunningSequence> running = {{1, 8, 1, 2}, {2, 8, 1, 2}, {3, 8, 1, 2}};
  StepPlan plan = PlanStep(running, {{4, 1}}, 1, {8, 2048, 4});
  EXPECT_THAT(plan.preempted, ElementsAre(3));
  EXPECT_THAT(plan.scheduled, ElementsAre(Runs(1, 1), Runs(2, 1)));
  EXPECT_TRUE(plan.admitted.empty()) << "no admission in a step that preempts";
}

TEST(BatchPlannerTest, ASequenceThatCannotFitPreemptsItself) {
  std::vector<RunningSequence> running = {{1, 8, 1, 2}};
  StepPlan plan = PlanStep(running, {}, 0, {8, 2048, 4});
  EXPECT_THAT(plan.preempted, ElementsAre(1));
  EXPECT_TRUE(plan.scheduled.empty());
}

}  // namespace
}  // namespace gantry::scheduler
