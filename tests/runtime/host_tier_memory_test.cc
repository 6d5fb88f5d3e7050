// HostArena: first-fit blocks, aligned, neighbours merged when freed, full
// when no run fits; pinning needs a GPU build and a GPU.
#include "runtime/host_tier_memory.h"

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/model_runner.h"

namespace gantry::runtime {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

std::unique_ptr<HostArena> Arena(uint64_t bytes) {
  auto arena = HostArena::Create(bytes, /*pin=*/false);
  EXPECT_TRUE(arena.ok()) << arena.status();
  return arena.ok() ? *std::move(arena) : nullptr;
}

TEST(HostArenaTest, CapacityIsRoundedToHugePagesAndStartsFree) {
  auto arena = Arena(3 * kMiB);
  ASSERT_NE(arena, nullptr);
  const HostArenaStats stats = arena->stats();
  EXPECT_EQ(stats.capacity, 4 * kMiB);
  EXPECT_EQ(stats.used, 0u);
  EXPECT_EQ(stats.largest_free, 4 * kMiB);
  EXPECT_FALSE(stats.pinned);
}

TEST(HostArenaTest, BlocksAreAlignedDisjointAndWritable) {
  auto arena = Arena(2 * kMiB);
  ASSERT_NE(arena, nullptr);
  std::vector<char*> blocks;
  for (uint64_t bytes : {1ull, 4095ull, 4096ull, 4097ull, 100000ull}) {
    char* block = static_cast<char*>(arena->Allocate(bytes));
    ASSERT_NE(block, nullptr) << bytes;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(block) % HostArena::kAlignment, 0u);
    std::memset(block, static_cast<int>(bytes & 0x7F), bytes);
    blocks.push_back(block);
  }
  EXPECT_EQ(arena->stats().used, 4096u + 4096u + 4096u + 8192u + 102400u);
  // Each block kept its own bytes: none overlaps another.
  const std::vector<uint64_t> sizes = {1, 4095, 4096, 4097, 100000};
  for (size_t i = 0; i < blocks.size(); ++i) {
    for (uint64_t b = 0; b < sizes[i]; ++b) ASSERT_EQ(blocks[i][b], static_cast<char>(sizes[i] & 0x7F)) << i;
  }
  for (char* block : blocks) arena->Free(block);
  EXPECT_EQ(arena->stats().used, 0u);
  EXPECT_EQ(arena->stats().largest_free, 2 * kMiB) << "freed neighbours merge back into one run";
}

TEST(HostArenaTest, FullWhenNoRunFitsAndFreedRunsMerge) {
  auto arena = Arena(2 * kMiB);
  ASSERT_NE(arena, nullptr);
  void* a = arena->Allocate(kMiB / 2);
  void* b = arena->Allocate(kMiB / 2);
  void* c = arena->Allocate(kMiB / 2);
  void* d = arena->Allocate(kMiB / 2);
  ASSERT_TRUE(a && b && c && d);
  EXPECT_EQ(arena->Allocate(1), nullptr) << "full";
  arena->Free(b);
  arena->Free(d);
  EXPECT_EQ(arena->Allocate(kMiB), nullptr) << "two free halves apart are not one run";
  arena->Free(c);  // b, c and d merge
  void* big = arena->Allocate(3 * kMiB / 2);
  EXPECT_EQ(big, b);
  arena->Free(a);
  arena->Free(big);
  EXPECT_EQ(arena->stats().largest_free, 2 * kMiB);
  arena->Free(nullptr);  // nothing
}

TEST(HostArenaTest, RandomAllocationsNeverOverlapAndAllComeBack) {
  auto arena = Arena(8 * kMiB);
  ASSERT_NE(arena, nullptr);
  std::mt19937_64 rng(5);
  struct Held {
    char* data;
    uint64_t bytes;
    char tag;
  };
  std::vector<Held> held;
  for (int i = 0; i < 3000; ++i) {
    if (!held.empty() && rng() % 2 == 0) {
      const size_t k = rng() % held.size();
      for (uint64_t b = 0; b < held[k].bytes; b += 511) ASSERT_EQ(held[k].data[b], held[k].tag);
      arena->Free(held[k].data);
      held.erase(held.begin() + static_cast<long>(k));
      continue;
    }
    const uint64_t bytes = 1 + rng() % (256 * 1024);
    char* data = static_cast<char*>(arena->Allocate(bytes));
    if (data == nullptr) continue;  // full for now
    const char tag = static_cast<char>(i & 0x7F);
    std::memset(data, tag, bytes);
    held.push_back({data, bytes, tag});
  }
  for (const Held& h : held) arena->Free(h.data);
  EXPECT_EQ(arena->stats().used, 0u);
  EXPECT_EQ(arena->stats().largest_free, 8 * kMiB);
}

TEST(HostArenaTest, PinningNeedsAGpu) {
  auto pinned = HostArena::Create(2 * kMiB, /*pin=*/true);
  if (CudaDeviceCount() == 0) {
    EXPECT_FALSE(pinned.ok());
  } else {
    ASSERT_TRUE(pinned.ok()) << pinned.status();
    EXPECT_TRUE((*pinned)->stats().pinned);
  }
}

TEST(HostArenaTest, ZeroBytesIsAnError) {
  EXPECT_EQ(HostArena::Create(0, false).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gantry::runtime
