#include "runtime/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace gantry::runtime {

BlockAllocator::BlockAllocator(int64_t num_blocks) : num_blocks_(num_blocks) {
  free_.reserve(static_cast<size_t>(num_blocks));
  for (int64_t i = num_blocks - 1; i >= 0; --i) free_.push_back(static_cast<int32_t>(i));
}

absl::Status BlockAllocator::Allocate(int64_t count, std::vector<int32_t>* table) {
  if (count > num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache: ", count, " blocks needed, ",
                                                     num_free(), " of ", num_blocks_, " free"));
  }
  for (int64_t i = 0; i < count; ++i) {
    table->push_back(free_.back());
    free_.pop_back();
  }
  return absl::OkStatus();
}

void BlockAllocator::Free(std::vector<int32_t>* table) {
  for (auto it = table->rbegin(); it != table->rend(); ++it) free_.push_back(*it);
  table->clear();
}

}  // namespace gantry::runtime
