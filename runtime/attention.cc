#include "runtime/internal/attention.h"

#include <algorithm>
#include <limits>

#include "runtime/internal/torch_util.h"

namespace gantry::runtime {
namespace {

AttentionGroup BuildGroup(const std::vector<BatchSequence>& sequences,
                          const std::vector<size_t>& members, const std::vector<int64_t>& first_row,
                          int64_t block_size, int64_t sliding_window, const at::Device& device) {
  AttentionGroup group;
  group.num_seqs = static_cast<int64_t>(members.size());
  for (size_t m : members) {
    group.max_q = std::max(group.max_q, sequences[m].num_new);
    group.max_k = std::max(group.max_k, sequences[m].num_computed + sequences[m].num_new);
  }
  const int64_t n = group.num_seqs, lq = group.max_q, lk = group.max_k;
  std::vector<int64_t> q_rows(n * lq, 0), k_slots(n * lk, 0), q_pos(n * lq, 0), k_len(n);
  std::vector<int64_t> src_rows, dst_rows;
  for (int64_t s = 0; s < n; ++s) {
    const BatchSequence& seq = sequences[members[s]];
    const int64_t context = seq.num_computed + seq.num_new;
    k_len[s] = context;
    for (int64_t i = 0; i < seq.num_new; ++i) {
      q_rows[s * lq + i] = first_row[members[s]] + i;
      q_pos[s * lq + i] = seq.num_computed + i;
      src_rows.push_back(s * lq + i);
      dst_rows.push_back(first_row[members[s]] + i);
    }
    for (int64_t j = 0; j < context; ++j) {
      k_slots[s * lk + j] = static_cast<int64_t>(seq.block_table[j / block_size]) * block_size +
                            j % block_size;
    }
  }
  group.q_rows = Upload(q_rows, device);
  group.k_slots = Upload(k_slots, device);
  group.src_rows = Upload(src_rows, device);
  group.dst_rows = Upload(dst_rows, device);
  // Padded queries sit at position 0 and see key 0, which every sequence
  // has: their rows stay finite and are dropped after the attention.
  at::Tensor query_pos = Upload(q_pos, device).view({n, lq, 1});
  at::Tensor key_pos = at::arange(lk, at::TensorOptions().dtype(at::kLong).device(device)).view({1, 1, lk});
  at::Tensor lengths = Upload(k_len, device).view({n, 1, 1});
  at::Tensor mask = key_pos.le(query_pos).logical_and(key_pos.lt(lengths));
  if (sliding_window > 0) mask = mask.logical_and(key_pos.gt(query_pos - sliding_window));
  group.mask = mask.view({n, 1, 1, lq, lk});
  return group;
}

at::Tensor GroupAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                          const AttentionGroup& group, double scale, at::Tensor& out) {
  const int64_t n = group.num_seqs, lq = group.max_q, lk = group.max_k;
  const int64_t heads = q.size(1), head_dim = q.size(2), kv_heads = k_cache.size(1);
  const int64_t g = heads / kv_heads;
  // Scores, softmax and the weighted sum run in float32 whatever the model's
  // dtype, as flash attention accumulates: rounding scores or probabilities
  // to bfloat16 costs visible accuracy over many layers.
  // [n, kv_heads, g * lq, head_dim]: each kv head's queries in one matrix, so
  // grouped-query attention needs no copy of K or V per query head.
  at::Tensor queries = q.index_select(0, group.q_rows)
                           .view({n, lq, kv_heads, g, head_dim})
                           .permute({0, 2, 3, 1, 4})
                           .reshape({n, kv_heads, g * lq, head_dim})
                           .to(at::kFloat);
  at::Tensor keys = k_cache.index_select(0, group.k_slots)
                        .view({n, lk, kv_heads, head_dim})
                        .transpose(1, 2)
                        .to(at::kFloat);
  at::Tensor values = v_cache.index_select(0, group.k_slots)
                          .view({n, lk, kv_heads, head_dim})
                          .transpose(1, 2)
                          .to(at::kFloat);
  at::Tensor scores = at::matmul(queries, keys.transpose(-1, -2)).mul_(scale);  // [n, kv, g*lq, lk]
  scores = scores.view({n, kv_heads, g, lq, lk});
  scores.masked_fill_(group.mask.logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor probs = at::softmax(scores, -1).view({n, kv_heads, g * lq, lk});
  at::Tensor context = at::matmul(probs, values)  // [n, kv, g*lq, head_dim]
                           .to(q.scalar_type())
                           .view({n, kv_heads, g, lq, head_dim})
                           .permute({0, 3, 1, 2, 4})
                           .reshape({n * lq, heads * head_dim});
  out.index_copy_(0, group.dst_rows, context.index_select(0, group.src_rows));
  return out;
}

}  // namespace

AttentionBatch BuildAttentionBatch(const std::vector<BatchSequence>& sequences, int64_t block_size,
                                   int64_t sliding_window, const at::Device& device) {
  AttentionBatch batch;
  std::vector<int64_t> positions, slots, first_row(sequences.size());
  std::vector<size_t> decodes, prefills;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const BatchSequence& seq = sequences[i];
    first_row[i] = static_cast<int64_t>(positions.size());
    for (int64_t p = seq.num_computed; p < seq.num_computed + seq.num_new; ++p) {
      positions.push_back(p);
      slots.push_back(static_cast<int64_t>(seq.block_table[p / block_size]) * block_size +
                      p % block_size);
    }
    (seq.num_new == 1 ? decodes : prefills).push_back(i);
  }
  batch.num_tokens = static_cast<int64_t>(positions.size());
  batch.positions = Upload(positions, device);
  batch.slot_mapping = Upload(slots, device);
  for (const auto* members : {&decodes, &prefills}) {
    if (!members->empty()) {
      batch.groups.push_back(
          BuildGroup(sequences, *members, first_row, block_size, sliding_window, device));
    }
  }
  return batch;
}

at::Tensor PagedAttention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                          const AttentionBatch& batch, double scale) {
  at::Tensor out = at::empty({q.size(0), q.size(1) * q.size(2)}, q.options());
  for (const auto& group : batch.groups) GroupAttention(q, k_cache, v_cache, group, scale, out);
  return out;
}

}  // namespace gantry::runtime
