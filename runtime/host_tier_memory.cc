#include "runtime/host_tier_memory.h"

#include <ATen/ATen.h>
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

#ifdef GANTRY_WITH_CUDA_KERNELS
#include "runtime/cuda/host_memory.h"
#endif

namespace gantry::runtime {
namespace {

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

// Faults every page of [base, base + bytes) in: one madvise where the kernel
// has MADV_POPULATE_WRITE, else a write per page from several threads.
void FaultIn(char* base, uint64_t bytes) {
  if (madvise(base, bytes, MADV_POPULATE_WRITE) == 0) return;
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const int threads = static_cast<int>(std::clamp<unsigned>(std::thread::hardware_concurrency(), 1, 8));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([=] {
      const uint64_t begin = bytes * t / threads / page * page, end = bytes * (t + 1) / threads;
      for (uint64_t at = begin; at < end; at += page) base[at] = 0;
    });
  }
  for (std::thread& w : workers) w.join();
}

std::atomic<HostArena*> g_arena{nullptr};
std::mutex g_reserve_mutex;

}  // namespace

absl::StatusOr<std::unique_ptr<HostArena>> HostArena::Create(uint64_t bytes, bool pin) {
  if (bytes == 0) return absl::InvalidArgumentError("host arena: 0 bytes");
  constexpr uint64_t kHugePage = uint64_t{2} << 20;
  const uint64_t capacity = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* mapped = mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("host arena: mmap of ", capacity, " bytes failed: ", std::strerror(errno)));
  }
  char* base = static_cast<char*>(mapped);
  (void)madvise(base, capacity, MADV_HUGEPAGE);  // a hint: 2.3x faster faulting where THP is on
  FaultIn(base, capacity);
  if (pin) {
#ifdef GANTRY_WITH_CUDA_KERNELS
    if (absl::Status s = cuda::PinHostMemory(base, capacity); !s.ok()) {
      munmap(base, capacity);
      return absl::Status(s.code(), absl::StrCat("host arena: ", s.message()));
    }
#else
    munmap(base, capacity);
    return absl::FailedPreconditionError("host arena: pinning needs a build with Gantry's CUDA kernels");
#endif
  }
  std::unique_ptr<HostArena> arena(new HostArena(base, capacity, pin));
  arena->free_[0] = capacity;
  return arena;
}

HostArena::~HostArena() {
#ifdef GANTRY_WITH_CUDA_KERNELS
  if (pinned_) cuda::UnpinHostMemory(base_);
#endif
  munmap(base_, capacity_);
}

void* HostArena::Allocate(uint64_t bytes) {
  if (bytes == 0) return nullptr;
  const uint64_t length = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < length) continue;
    const uint64_t offset = it->first, rest = it->second - length;
    free_.erase(it);
    if (rest > 0) free_[offset + length] = rest;
    lent_[offset] = length;
    used_ += length;
    return base_ + offset;
  }
  return nullptr;
}

void HostArena::Free(void* block) {
  if (block == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  const uint64_t offset = static_cast<uint64_t>(static_cast<char*>(block) - base_);
  auto lent = lent_.find(offset);
  if (lent == lent_.end()) return;  // not ours (a caller bug): leave the arena consistent
  uint64_t start = offset, length = lent->second;
  used_ -= length;
  lent_.erase(lent);
  // Merge with the free runs on either side.
  auto next = free_.lower_bound(start);
  if (next != free_.end() && next->first == start + length) {
    length += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto previous = std::prev(next);
    if (previous->first + previous->second == start) {
      start = previous->first;
      length += previous->second;
      free_.erase(previous);
    }
  }
  free_[start] = length;
}

HostArenaStats HostArena::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  HostArenaStats stats;
  stats.capacity = capacity_;
  stats.used = used_;
  stats.pinned = pinned_;
  for (const auto& [offset, length] : free_) stats.largest_free = std::max(stats.largest_free, length);
  return stats;
}

absl::Status ReserveHostTierMemory(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(g_reserve_mutex);
  if (g_arena.load() != nullptr) return absl::AlreadyExistsError("the host tier's memory is already reserved");
  auto arena = HostArena::Create(bytes, /*pin=*/at::hasCUDA());
  if (!arena.ok()) return arena.status();
  g_arena.store(arena->release());  // for the process's life: tensors on it may live until exit
  return absl::OkStatus();
}

HostArena* HostTierArena() { return g_arena.load(); }

}  // namespace gantry::runtime
