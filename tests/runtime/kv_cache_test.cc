#include "runtime/kv_cache.h"

#include <set>

#include "gtest/gtest.h"

namespace gantry::runtime {
namespace {

TEST(BlockAllocatorTest, AllocatesDistinctBlocksAndRefusesOverdraw) {
  BlockAllocator allocator(5);
  std::vector<int32_t> a, b;
  ASSERT_TRUE(allocator.Allocate(3, &a).ok());
  ASSERT_TRUE(allocator.Allocate(2, &b).ok());
  std::set<int32_t> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 5u);
  EXPECT_EQ(allocator.num_free(), 0);

  std::vector<int32_t> c;
  absl::Status status = allocator.Allocate(1, &c);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(c.empty());

  allocator.Free(&a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(allocator.num_free(), 3);
  ASSERT_TRUE(allocator.Allocate(3, &c).ok());
  EXPECT_EQ(allocator.num_free(), 0);
}

TEST(BlockAllocatorTest, AppendingKeepsExistingBlocks) {
  BlockAllocator allocator(4);
  std::vector<int32_t> table;
  ASSERT_TRUE(allocator.Allocate(1, &table).ok());
  int32_t first = table[0];
  ASSERT_TRUE(allocator.Allocate(2, &table).ok());
  EXPECT_EQ(table.size(), 3u);
  EXPECT_EQ(table[0], first);
}

TEST(BlockAllocatorTest, BlocksForTokens) {
  EXPECT_EQ(BlocksForTokens(0, 16), 0);
  EXPECT_EQ(BlocksForTokens(1, 16), 1);
  EXPECT_EQ(BlocksForTokens(16, 16), 1);
  EXPECT_EQ(BlocksForTokens(17, 16), 2);
}

}  // namespace
}  // namespace gantry::runtime
