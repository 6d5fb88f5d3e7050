// The KV cache's blocks, owned by the scheduler (as vLLM's KVCacheManager
// beside its scheduler): the pool, reference counts, each sequence's block
// table, and automatic prefix caching. The runtime holds the cache tensors
// and is told, every step, which blocks each sequence uses; it allocates
// nothing.
//
// Prefix caching: a block that is full is keyed by a hash chained from its
// parent block's hash and its own token ids, so equal keys mean equal
// prefixes. A new sequence shares the blocks of its longest cached prefix
// (reference-counted) and computes only the rest. Blocks no sequence
// references stay cached, evictable least recently used first, until the
// pool needs them. A hit also compares the block's stored token ids, so a
// hash collision can never hand a sequence someone else's keys and values.
//
// Torch-free and single-threaded: the engine's stepping thread owns it.
#ifndef GANTRY_SCHEDULER_KV_CACHE_MANAGER_H_
#define GANTRY_SCHEDULER_KV_CACHE_MANAGER_H_

#include <cstdint>
#include <list>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"

namespace gantry::scheduler {

inline int64_t BlocksFor(int64_t tokens, int64_t block_size) { return (tokens + block_size - 1) / block_size; }

// The cached prefix of a token sequence, as FindCachedPrefix found it.
struct PrefixHit {
  int64_t num_tokens = 0;      // leading tokens whose keys and values are cached (whole blocks)
  int64_t num_blocks = 0;      // blocks holding them
  int64_t num_evictable = 0;   // of those, blocks no sequence references now (they count as free)
};

struct KvCacheStats {
  int64_t num_blocks = 0;
  int64_t free_blocks = 0;        // never-used or uncached blocks plus evictable cached ones
  int64_t cached_blocks = 0;      // blocks with a prefix key, referenced or not
  int64_t query_tokens = 0;       // prompt tokens looked up when sequences started
  int64_t hit_tokens = 0;         // of those, tokens found cached
  int64_t evictions = 0;          // cached blocks reused for something else
};

class KvCacheManager {
 public:
  // `prefix_caching` false: blocks are never shared or kept after release.
  KvCacheManager(int64_t num_blocks, int64_t block_size, bool prefix_caching);

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  bool prefix_caching() const { return prefix_caching_; }
  // Blocks a sequence can be given now: unused ones plus cached ones no
  // sequence references (evicted on demand).
  int64_t NumFreeBlocks() const { return static_cast<int64_t>(free_.size() + evictable_.size()); }

  // The longest cached prefix of `tokens`, in whole blocks, leaving at least
  // one token to compute (a step needs one to produce the next token's
  // logits). Empty with prefix caching off.
  PrefixHit FindCachedPrefix(absl::Span<const int32_t> tokens) const;

  // What the planner asks. Free blocks that growing `key` to hold
  // `total_tokens` takes (0 when its table already covers them).
  int64_t BlocksToGrow(int64_t key, int64_t total_tokens) const;
  // Free blocks that starting a sequence on `hit` and giving it room for
  // `total_tokens` takes: the new blocks, plus the hit's evictable blocks,
  // which stop being free once shared.
  int64_t BlocksToStart(const PrefixHit& hit, int64_t total_tokens) const;
  // Free blocks that releasing `key` would give back: those only it references.
  int64_t BlocksFreedByRelease(int64_t key) const;

  // Starts `key` (holding nothing) on the cached prefix of `tokens`, which
  // must be what FindCachedPrefix returns now; returns it. Counts the lookup
  // in the stats.
  PrefixHit Start(int64_t key, absl::Span<const int32_t> tokens);
  // Extends `key`'s table to hold `total_tokens`, taking unused blocks first,
  // then evicting cached ones least recently used first. RESOURCE_EXHAUSTED,
  // changing nothing, when too few are free.
  absl::Status Grow(int64_t key, int64_t total_tokens);
  // After a step: the first `num_computed` of `tokens` are in `key`'s blocks;
  // blocks that became full get their prefix key (when caching is on).
  void CacheComputedBlocks(int64_t key, absl::Span<const int32_t> tokens, int64_t num_computed);
  // Drops `key`'s references. Full blocks with a key stay cached, the
  // sequence's later blocks first in line for eviction; the rest are free.
  void Release(int64_t key);

  // `key`'s block table (empty for an unknown key).
  absl::Span<const int32_t> BlockTable(int64_t key) const;
  bool Holds(int64_t key) const { return tables_.contains(key); }

  KvCacheStats Stats() const;
  // Checks the books: every block free, evictable or referenced exactly as
  // often as tables name it, and every prefix key mapping to a cached block.
  // For tests; INTERNAL naming the first inconsistency.
  absl::Status CheckConsistency() const;

 private:
  struct Block {
    int32_t ref_count = 0;
    uint64_t hash = 0;             // prefix key; meaningful when `cached`
    bool cached = false;
    std::vector<int32_t> tokens;   // the block's token ids when cached: checked on every hit
    std::list<int32_t>::iterator lru;  // position in evictable_ when cached and unreferenced
  };
  struct Table {
    std::vector<int32_t> blocks;
    int64_t num_cached_blocks = 0;  // leading blocks that have a prefix key (or were checked for one)
    uint64_t last_hash = 0;         // the prefix key of block num_cached_blocks - 1
  };

  uint64_t ChainHash(uint64_t parent, absl::Span<const int32_t> block_tokens) const;
  // The cached prefix of `tokens`; with `blocks`, appends the blocks holding
  // it, with `last_hash`, the key of its last block (0 for none).
  PrefixHit WalkPrefix(absl::Span<const int32_t> tokens, std::vector<int32_t>* blocks, uint64_t* last_hash) const;
  int32_t TakeBlock();  // a free block: unused first, else the least recently used cached one

  const int64_t block_size_;
  const bool prefix_caching_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;          // unused blocks, a stack
  std::list<int32_t> evictable_;       // cached blocks nobody references; front = least recently used
  absl::flat_hash_map<uint64_t, int32_t> cached_;  // prefix key -> block
  absl::flat_hash_map<int64_t, Table> tables_;
  int64_t query_tokens_ = 0, hit_tokens_ = 0, evictions_ = 0;
};

}  // namespace gantry::scheduler

#endif  // GANTRY_SCHEDULER_KV_CACHE_MANAGER_H_
