#include "scheduler/kv_cache_manager.h"

#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gantry::scheduler {
namespace {

using ::testing::ElementsAre;

std::vector<int32_t> Range(int32_t from, int32_t n) {
  std::vector<int32_t> out;
  for (int32_t i = 0; i < n; ++i) out.push_back(from + i);
  return out;
}

// Runs `tokens` as one sequence to the end: start, grow, compute everything.
PrefixHit RunSequence(KvCacheManager& kv, int64_t key, const std::vector<int32_t>& tokens) {
  const PrefixHit hit = kv.Start(key, tokens);
  EXPECT_TRUE(kv.Grow(key, static_cast<int64_t>(tokens.size())).ok());
  kv.CacheComputedBlocks(key, tokens, static_cast<int64_t>(tokens.size()));
  return hit;
}

TEST(KvCacheManagerTest, ASecondSequenceSharesTheFirstsFullBlocks) {
  KvCacheManager kv(16, 4, true);
  const std::vector<int32_t> a = Range(1, 10);
  EXPECT_EQ(RunSequence(kv, 1, a).num_tokens, 0);
  std::vector<int32_t> b = Range(1, 8);
  b.push_back(77);  // the same two full blocks, then something else
  const PrefixHit hit = RunSequence(kv, 2, b);
  EXPECT_EQ(hit.num_tokens, 8);
  EXPECT_EQ(hit.num_evictable, 0) << "the first still holds them";
  EXPECT_EQ(kv.BlockTable(1).subspan(0, 2), kv.BlockTable(2).subspan(0, 2));
  EXPECT_NE(kv.BlockTable(1)[2], kv.BlockTable(2)[2]);
  EXPECT_EQ(kv.NumFreeBlocks(), 16 - 4);
  EXPECT_TRUE(kv.CheckConsistency().ok());
  kv.Release(1);
  kv.Release(2);
  EXPECT_EQ(kv.NumFreeBlocks(), 16);
  EXPECT_EQ(kv.Stats().cached_blocks, 2);
  EXPECT_TRUE(kv.CheckConsistency().ok());
}

TEST(KvCacheManagerTest, AtLeastOneTokenIsLeftToCompute) {
  KvCacheManager kv(16, 4, true);
  const std::vector<int32_t> tokens = Range(1, 8);  // exactly two blocks
  RunSequence(kv, 1, tokens);
  kv.Release(1);
  EXPECT_EQ(kv.FindCachedPrefix(tokens).num_tokens, 4) << "the last block is computed again for its logits";
  std::vector<int32_t> longer = tokens;
  longer.push_back(9);
  EXPECT_EQ(kv.FindCachedPrefix(longer).num_tokens, 8);
}

TEST(KvCacheManagerTest, ADifferentTokenAnywhereEndsTheHitThere) {
  KvCacheManager kv(16, 4, true);
  RunSequence(kv, 1, Range(1, 13));
  kv.Release(1);
  std::vector<int32_t> changed = Range(1, 13);
  changed[5] = 99;  // in the second block
  EXPECT_EQ(kv.FindCachedPrefix(changed).num_tokens, 4);
  changed = Range(1, 13);
  changed[0] = 99;  // the first block differs: the later blocks' keys differ too
  EXPECT_EQ(kv.FindCachedPrefix(changed).num_tokens, 0);
}

TEST(KvCacheManagerTest, CachedBlocksSurviveTheirSequenceAndAreEvictedLeastRecentlyUsedFirst) {
  KvCacheManager kv(6, 4, true);
  const std::vector<int32_t> old_one = Range(100, 9);   // 2 full blocks + 1 partial
  const std::vector<int32_t> new_one = Range(200, 9);
  RunSequence(kv, 1, old_one);
  kv.Release(1);
  RunSequence(kv, 2, new_one);
  kv.Release(2);
  EXPECT_EQ(kv.Stats().cached_blocks, 4);
  EXPECT_EQ(kv.NumFreeBlocks(), 6);
  // 2 unused (the partial ones) go first; then the old sequence's tail
  // block, then its head, before anything of the newer one.
  ASSERT_TRUE(kv.Grow(3, 12).ok());  // 3 blocks
  EXPECT_EQ(kv.Stats().evictions, 1);
  EXPECT_EQ(kv.FindCachedPrefix(old_one).num_tokens, 4) << "the tail block went first";
  EXPECT_EQ(kv.FindCachedPrefix(new_one).num_tokens, 8);
  ASSERT_TRUE(kv.Grow(3, 16).ok());  // one more
  EXPECT_EQ(kv.FindCachedPrefix(old_one).num_tokens, 0);
  EXPECT_EQ(kv.FindCachedPrefix(new_one).num_tokens, 8);
  // A hit makes a block recently used again: the new sequence's head is
  // reused, its tail is next in line.
  RunSequence(kv, 4, Range(200, 5));
  kv.Release(4);
  ASSERT_TRUE(kv.Grow(3, 20).ok());
  EXPECT_EQ(kv.FindCachedPrefix(new_one).num_tokens, 4);
  EXPECT_TRUE(kv.CheckConsistency().ok());
  kv.Release(3);
  EXPECT_EQ(kv.NumFreeBlocks(), 6);
}

TEST(KvCacheManagerTest, GrowingBeyondThePoolChangesNothing) {
  KvCacheManager kv(3, 4, true);
  ASSERT_TRUE(kv.Grow(1, 8).ok());
  const auto status = kv.Grow(2, 12);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(kv.BlockTable(2), ElementsAre());
  EXPECT_EQ(kv.NumFreeBlocks(), 1);
  EXPECT_TRUE(kv.CheckConsistency().ok());
}

TEST(KvCacheManagerTest, ReleasingOneSharerLeavesTheOtherIntact) {
  KvCacheManager kv(8, 4, true);
  const std::vector<int32_t> tokens = Range(1, 9);
  RunSequence(kv, 1, tokens);
  RunSequence(kv, 2, tokens);
  const std::vector<int32_t> table(kv.BlockTable(2).begin(), kv.BlockTable(2).end());
  EXPECT_EQ(kv.BlocksFreedByRelease(1), 1) << "only its partial block is its own";
  kv.Release(1);
  // Fill the pool: the shared blocks are referenced, so never evicted.
  ASSERT_TRUE(kv.Grow(3, 4 * kv.NumFreeBlocks()).ok());
  EXPECT_EQ(kv.NumFreeBlocks(), 0);
  EXPECT_THAT(kv.BlockTable(2), ::testing::ElementsAreArray(table));
  EXPECT_EQ(kv.FindCachedPrefix(tokens).num_tokens, 8);
  EXPECT_TRUE(kv.CheckConsistency().ok());
}

TEST(KvCacheManagerTest, WithCachingOffNothingIsShared) {
  KvCacheManager kv(8, 4, false);
  RunSequence(kv, 1, Range(1, 9));
  kv.Release(1);
  EXPECT_EQ(kv.FindCachedPrefix(Range(1, 9)).num_tokens, 0);
  EXPECT_EQ(kv.Stats().cached_blocks, 0);
  EXPECT_EQ(kv.Stats().query_tokens, 0);
  EXPECT_TRUE(kv.CheckConsistency().ok());
}

TEST(KvCacheManagerTest, HitCountsAreReported) {
  KvCacheManager kv(16, 4, true);
  RunSequence(kv, 1, Range(1, 10));
  RunSequence(kv, 2, Range(1, 10));
  EXPECT_EQ(kv.Stats().query_tokens, 20);
  EXPECT_EQ(kv.Stats().hit_tokens, 8);
}

// Random starts, growth, computation and releases over a small pool with
// few distinct prefixes: the books stay consistent after every operation,
// and the pool is whole once everything is released.
TEST(KvCacheManagerTest, RandomOperationsKeepTheBooks) {
  std::mt19937 rng(7);
  KvCacheManager kv(24, 4, true);
  struct Live {
    std::vector<int32_t> tokens;
    int64_t computed = 0;
  };
  std::map<int64_t, Live> live;
  int64_t next_key = 1;
  for (int op = 0; op < 5000; ++op) {
    const int choice = static_cast<int>(rng() % 4);
    if (choice == 0 && live.size() < 6) {
      Live seq;
      const int32_t family = static_cast<int32_t>(rng() % 3);
      const int32_t length = 1 + static_cast<int32_t>(rng() % 20);
      for (int32_t i = 0; i < length; ++i) seq.tokens.push_back(family * 1000 + (i < 12 ? i : static_cast<int32_t>(rng() % 5)));
      seq.computed = kv.Start(next_key, seq.tokens).num_tokens;
      EXPECT_LT(seq.computed, length);
      live.emplace(next_key++, std::move(seq));
    } else if (choice == 1 && !live.empty()) {
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      Live& seq = it->second;
      const int64_t target = std::min<int64_t>(static_cast<int64_t>(seq.tokens.size()), seq.computed + 1 + static_cast<int64_t>(rng() % 6));
      if (kv.Grow(it->first, target).ok()) {
        seq.computed = target;
        kv.CacheComputedBlocks(it->first, seq.tokens, seq.computed);
        if (seq.computed == static_cast<int64_t>(seq.tokens.size())) seq.tokens.push_back(static_cast<int32_t>(rng() % 7));
      }
    } else if (!live.empty()) {
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      kv.Release(it->first);
      live.erase(it);
    }
    ASSERT_TRUE(kv.CheckConsistency().ok()) << kv.CheckConsistency() << " after operation " << op;
  }
  for (const auto& [key, seq] : live) kv.Release(key);
  EXPECT_EQ(kv.NumFreeBlocks(), 24);
  EXPECT_TRUE(kv.CheckConsistency().ok());
  EXPECT_GT(kv.Stats().hit_tokens, 0);
  EXPECT_GT(kv.Stats().evictions, 0);
}

}  // namespace
}  // namespace gantry::scheduler
