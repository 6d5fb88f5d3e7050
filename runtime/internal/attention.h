// Attention over the paged KV cache for a batch mixing prefill chunks and
// decodes. Sequences are padded into at most two groups (decodes, and prompt
// chunks) so each layer runs two batched attentions, never a loop over
// sequences. Built from LibTorch operators; a later fused kernel replaces
// PagedAttention without changing the metadata.
#ifndef GANTRY_RUNTIME_INTERNAL_ATTENTION_H_
#define GANTRY_RUNTIME_INTERNAL_ATTENTION_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace gantry::runtime {

struct BatchSequence {
  int64_t num_computed = 0;  // tokens already in the cache
  int64_t num_new = 0;       // tokens processed this step
  absl::Span<const int32_t> block_table;  // covers num_computed + num_new tokens
};

struct AttentionGroup {
  int64_t num_seqs = 0;
  int64_t max_q = 0;     // longest query run in the group
  int64_t max_k = 0;     // longest context in the group
  at::Tensor q_rows;     // [num_seqs * max_q] token row of each padded query (padding: 0)
  at::Tensor k_slots;    // [num_seqs * max_k] cache slot of each padded key (padding: 0)
  at::Tensor mask;       // [num_seqs, 1, 1, max_q, max_k] true where the query may attend
  at::Tensor src_rows;   // [valid] indices into num_seqs * max_q of real queries
  at::Tensor dst_rows;   // [valid] their token rows
};

struct AttentionBatch {
  int64_t num_tokens = 0;
  at::Tensor positions;     // [num_tokens] int64 position of each new token
  at::Tensor slot_mapping;  // [num_tokens] int64 cache slot each new token's k/v goes to
  std::vector<AttentionGroup> groups;
};

// Host-side bookkeeping, uploaded once per step. Tokens are laid out
// sequence after sequence, in the order of `sequences`.
AttentionBatch BuildAttentionBatch(const std::vector<BatchSequence>& sequences, int64_t block_size,
                                   int64_t sliding_window, const at::Device& device);

// q: [num_tokens, heads, head_dim]; caches: [slots, kv_heads, head_dim].
// Returns [num_tokens, heads * head_dim].
at::Tensor PagedAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                          const AttentionBatch& batch, double scale);

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_ATTENTION_H_
