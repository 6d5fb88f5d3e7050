// The host tier's budget and LRU, on a fake clock.
#include "scheduler/host_tier.h"

#include "gtest/gtest.h"
#include "tests/scheduler/fake_runner.h"

namespace gantry::scheduler {
namespace {

std::shared_ptr<const runtime::HostWeights> Weights(uint64_t bytes, const std::string& name) {
  return std::make_shared<testing::FakeHostWeights>(bytes, name);
}

TEST(HostTierTest, KeepsWithinBudgetDroppingTheLeastRecentlyUsed) {
  FakeClock clock;
  HostTier tier(1000, &clock);
  bool kept = false;
  EXPECT_TRUE(tier.Put("a", Weights(400, "a"), &kept).empty());
  EXPECT_TRUE(kept);
  clock.Advance(absl::Seconds(1));
  EXPECT_TRUE(tier.Put("b", Weights(400, "b"), &kept).empty());
  clock.Advance(absl::Seconds(1));
  ASSERT_NE(tier.Get("a"), nullptr);  // a is now the more recently used
  clock.Advance(absl::Seconds(1));
  EXPECT_EQ(tier.Put("c", Weights(400, "c"), &kept), std::vector<std::string>{"b"});
  EXPECT_TRUE(kept);
  EXPECT_TRUE(tier.Contains("a"));
  EXPECT_FALSE(tier.Contains("b"));
  EXPECT_EQ(tier.used_bytes(), 800u);

  // Too big for the whole budget: not kept, nothing dropped for it.
  EXPECT_TRUE(tier.Put("huge", Weights(1001, "huge"), &kept).empty());
  EXPECT_FALSE(kept);
  EXPECT_EQ(tier.used_bytes(), 800u);

  // Replacing an entry frees its old bytes first.
  EXPECT_TRUE(tier.Put("a", Weights(600, "a2"), &kept).empty());
  EXPECT_EQ(tier.used_bytes(), 1000u);
  tier.Drop("a");
  EXPECT_EQ(tier.used_bytes(), 400u);
  EXPECT_EQ(tier.Get("a"), nullptr);
}

}  // namespace
}  // namespace gantry::scheduler
