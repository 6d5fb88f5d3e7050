// Paged KV cache bookkeeping: a pool of fixed-size blocks handed to sequences.
// The tensors themselves live in the model (runtime/internal/llama_model.h);
// this part is torch-free so it can be tested and reasoned about alone.
#ifndef GANTRY_RUNTIME_KV_CACHE_H_
#define GANTRY_RUNTIME_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace gantry::runtime {

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);

  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }

  // Appends `count` blocks to `table`, or changes nothing and returns
  // RESOURCE_EXHAUSTED when fewer are free.
  absl::Status Allocate(int64_t count, std::vector<int32_t>* table);
  // Returns every block of `table` to the pool and clears it.
  void Free(std::vector<int32_t>* table);

 private:
  int64_t num_blocks_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
};

// Blocks needed to hold `num_tokens` tokens.
inline int64_t BlocksForTokens(int64_t num_tokens, int64_t block_size) {
  return (num_tokens + block_size - 1) / block_size;
}

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_KV_CACHE_H_
