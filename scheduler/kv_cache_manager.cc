#include "scheduler/kv_cache_manager.h"

#include <algorithm>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"

namespace gantry::scheduler {

KvCacheManager::KvCacheManager(int64_t num_blocks, int64_t block_size, bool prefix_caching)
    : block_size_(block_size), prefix_caching_(prefix_caching), blocks_(static_cast<size_t>(num_blocks)) {
  free_.reserve(blocks_.size());
  // A stack: block 0 is handed out first, which keeps tests readable.
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

uint64_t KvCacheManager::ChainHash(uint64_t parent, absl::Span<const int32_t> block_tokens) const {
  return absl::HashOf(parent, block_tokens);
}

PrefixHit KvCacheManager::WalkPrefix(absl::Span<const int32_t> tokens, std::vector<int32_t>* blocks,
                                     uint64_t* last_hash) const {
  PrefixHit hit;
  if (!prefix_caching_ || tokens.empty()) return hit;
  const int64_t max_blocks = (static_cast<int64_t>(tokens.size()) - 1) / block_size_;
  uint64_t hash = 0;
  for (int64_t i = 0; i < max_blocks; ++i) {
    const auto block_tokens = tokens.subspan(i * block_size_, block_size_);
    const uint64_t next = ChainHash(hash, block_tokens);
    auto it = cached_.find(next);
    if (it == cached_.end()) break;
    const Block& block = blocks_[it->second];
    if (!std::equal(block.tokens.begin(), block.tokens.end(), block_tokens.begin(), block_tokens.end())) break;
    hash = next;
    ++hit.num_blocks;
    if (block.ref_count == 0) ++hit.num_evictable;
    if (blocks != nullptr) blocks->push_back(it->second);
  }
  hit.num_tokens = hit.num_blocks * block_size_;
  if (last_hash != nullptr) *last_hash = hash;
  return hit;
}

PrefixHit KvCacheManager::FindCachedPrefix(absl::Span<const int32_t> tokens) const {
  return WalkPrefix(tokens, nullptr, nullptr);
}

int64_t KvCacheManager::BlocksToGrow(int64_t key, int64_t total_tokens) const {
  auto it = tables_.find(key);
  const int64_t held = it == tables_.end() ? 0 : static_cast<int64_t>(it->second.blocks.size());
  return std::max<int64_t>(0, BlocksFor(total_tokens, block_size_) - held);
}

int64_t KvCacheManager::BlocksToStart(const PrefixHit& hit, int64_t total_tokens) const {
  return std::max<int64_t>(0, BlocksFor(total_tokens, block_size_) - hit.num_blocks) + hit.num_evictable;
}

int64_t KvCacheManager::BlocksFreedByRelease(int64_t key) const {
  auto it = tables_.find(key);
  if (it == tables_.end()) return 0;
  return std::count_if(it->second.blocks.begin(), it->second.blocks.end(),
                       [&](int32_t b) { return blocks_[b].ref_count == 1; });
}

PrefixHit KvCacheManager::Start(int64_t key, absl::Span<const int32_t> tokens) {
  Table& table = tables_[key];
  const PrefixHit hit = WalkPrefix(tokens, &table.blocks, &table.last_hash);
  for (int32_t b : table.blocks) {
    Block& block = blocks_[b];
    if (block.ref_count++ == 0) evictable_.erase(block.lru);
  }
  table.num_cached_blocks = hit.num_blocks;
  if (prefix_caching_) {
    query_tokens_ += static_cast<int64_t>(tokens.size());
    hit_tokens_ += hit.num_tokens;
  }
  return hit;
}

int32_t KvCacheManager::TakeBlock() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else {
    b = evictable_.front();
    evictable_.pop_front();
    Block& block = blocks_[b];
    cached_.erase(block.hash);  // the key maps to this block: keys are unique
    block.cached = false;
    block.tokens.clear();
    ++evictions_;
  }
  blocks_[b].ref_count = 1;
  return b;
}

absl::Status KvCacheManager::Grow(int64_t key, int64_t total_tokens) {
  const int64_t need = BlocksToGrow(key, total_tokens);
  if (need > NumFreeBlocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache: ", total_tokens, " tokens need ", need,
                                                     " more blocks, ", NumFreeBlocks(), " of ", num_blocks(),
                                                     " free"));
  }
  Table& table = tables_[key];
  for (int64_t i = 0; i < need; ++i) table.blocks.push_back(TakeBlock());
  return absl::OkStatus();
}

void KvCacheManager::CacheComputedBlocks(int64_t key, absl::Span<const int32_t> tokens, int64_t num_computed) {
  if (!prefix_caching_) return;
  auto it = tables_.find(key);
  if (it == tables_.end()) return;
  Table& table = it->second;
  const int64_t full = std::min<int64_t>(num_computed / block_size_, static_cast<int64_t>(table.blocks.size()));
  for (int64_t i = table.num_cached_blocks; i < full; ++i) {
    const auto block_tokens = tokens.subspan(i * block_size_, block_size_);
    const uint64_t hash = ChainHash(table.last_hash, block_tokens);
    // Another sequence may have computed the same block meanwhile: the first
    // keeps the key, this copy stays private and is freed with its sequence.
    if (cached_.emplace(hash, table.blocks[i]).second) {
      Block& block = blocks_[table.blocks[i]];
      block.cached = true;
      block.hash = hash;
      block.tokens.assign(block_tokens.begin(), block_tokens.end());
    }
    table.last_hash = hash;
    table.num_cached_blocks = i + 1;
  }
}

void KvCacheManager::Release(int64_t key) {
  auto it = tables_.find(key);
  if (it == tables_.end()) return;
  const std::vector<int32_t>& table = it->second.blocks;
  // Last block first: a sequence's tail is evicted before its prefix, which
  // more requests share.
  for (auto b = table.rbegin(); b != table.rend(); ++b) {
    Block& block = blocks_[*b];
    if (--block.ref_count > 0) continue;
    if (block.cached) {
      block.lru = evictable_.insert(evictable_.end(), *b);
    } else {
      free_.push_back(*b);
    }
  }
  tables_.erase(it);
}

absl::Span<const int32_t> KvCacheManager::BlockTable(int64_t key) const {
  auto it = tables_.find(key);
  if (it == tables_.end()) return {};
  return it->second.blocks;
}

KvCacheStats KvCacheManager::Stats() const {
  KvCacheStats stats;
  stats.num_blocks = num_blocks();
  stats.free_blocks = NumFreeBlocks();
  stats.cached_blocks = static_cast<int64_t>(cached_.size());
  stats.query_tokens = query_tokens_;
  stats.hit_tokens = hit_tokens_;
  stats.evictions = evictions_;
  return stats;
}

absl::Status KvCacheManager::CheckConsistency() const {
  std::vector<int32_t> refs(blocks_.size(), 0);
  for (const auto& [key, table] : tables_) {
    for (int32_t b : table.blocks) ++refs[b];
  }
  std::vector<int> listed(blocks_.size(), 0);
  for (int32_t b : free_) ++listed[b];
  for (int32_t b : evictable_) ++listed[b];
  for (size_t b = 0; b < blocks_.size(); ++b) {
    const Block& block = blocks_[b];
    if (block.ref_count != refs[b]) {
      return absl::InternalError(absl::StrCat("block ", b, " has ref_count ", block.ref_count, " but ", refs[b],
                                              " tables name it"));
    }
    if ((refs[b] == 0) != (listed[b] == 1) || listed[b] > 1) {
      return absl::InternalError(absl::StrCat("block ", b, " with ", refs[b], " references is listed free ",
                                              listed[b], " times"));
    }
    if (block.cached && cached_.find(block.hash) == cached_.end()) {
      return absl::InternalError(absl::StrCat("cached block ", b, " has no key"));
    }
  }
  for (int32_t b : free_) {
    if (blocks_[b].cached) return absl::InternalError(absl::StrCat("block ", b, " is free but cached"));
  }
  for (int32_t b : evictable_) {
    if (!blocks_[b].cached) return absl::InternalError(absl::StrCat("block ", b, " is evictable but not cached"));
  }
  for (const auto& [hash, b] : cached_) {
    if (!blocks_[b].cached || blocks_[b].hash != hash) {
      return absl::InternalError(absl::StrCat("key maps to block ", b, ", which does not hold it"));
    }
  }
  return absl::OkStatus();
}

}  // namespace gantry::scheduler
