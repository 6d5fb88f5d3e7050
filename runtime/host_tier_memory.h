// Host memory for the host tier, reserved once (ReserveHostTierMemory) and
// lent to CopyWeightsToHost block by block.
//
// Why: fresh host memory is slow to get. On the H100 machine the kernel hands
// out new pages at about 2 GiB/s (4 KiB pages; 4.9 GiB/s with transparent huge
// pages), so pinning 16 GB for an evicted 8B model took 9-11 s, against 0.4 s
// for the device-to-host copy itself (41-48 GiB/s into pinned memory). Memory
// faulted in and pinned at start-up turns an eviction into that copy alone.
// Why hand-written: LibTorch's pinned allocator rounds every block up to a
// power of two and pins on first use; no library at hand offers a pinned,
// pre-faulted arena.
//
// Torch-free: the server and benchmarks call it.
#ifndef GANTRY_RUNTIME_HOST_TIER_MEMORY_H_
#define GANTRY_RUNTIME_HOST_TIER_MEMORY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace gantry::runtime {

struct HostArenaStats {
  uint64_t capacity = 0;       // bytes reserved
  uint64_t used = 0;           // bytes lent
  uint64_t largest_free = 0;   // the longest free run
  bool pinned = false;         // registered with CUDA (page-locked, DMA-able)
};

// A fixed range of anonymous memory, faulted in up front (transparent huge
// pages where the kernel allows) and, where CUDA is present, pinned; lent in
// page-aligned blocks, first fit, neighbours merged when freed. Thread-safe.
class HostArena {
 public:
  static constexpr uint64_t kAlignment = 4096;

  // Blocks the calling thread while the memory is faulted in and pinned
  // (about 4 s per 16 GiB on the H100 machine). `pin`: register it with
  // CUDA (an error where CUDA is absent or refuses).
  static absl::StatusOr<std::unique_ptr<HostArena>> Create(uint64_t bytes, bool pin);
  ~HostArena();
  HostArena(const HostArena&) = delete;
  HostArena& operator=(const HostArena&) = delete;

  // A block of at least `bytes` (> 0), kAlignment-aligned; nullptr when no
  // free run is long enough.
  void* Allocate(uint64_t bytes);
  // Gives back a block from Allocate (nullptr: nothing).
  void Free(void* block);

  HostArenaStats stats() const;
  bool pinned() const { return pinned_; }

 private:
  HostArena(char* base, uint64_t capacity, bool pinned) : base_(base), capacity_(capacity), pinned_(pinned) {}

  char* const base_;
  const uint64_t capacity_;
  const bool pinned_;
  mutable std::mutex mutex_;
  std::map<uint64_t, uint64_t> free_;  // offset -> length, no two adjacent
  std::map<uint64_t, uint64_t> lent_;  // offset -> length
  uint64_t used_ = 0;
};

// Reserves the host tier's memory for the whole process (pinned where a GPU
// is present) and blocks until it is ready; later copies to the host tier
// take blocks of it, and pin fresh memory only for what does not fit. Once
// per process: a second call fails (AlreadyExists).
absl::Status ReserveHostTierMemory(uint64_t bytes);

// The reserved arena, or nullptr (none yet, or none asked for).
HostArena* HostTierArena();

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_HOST_TIER_MEMORY_H_
