// Decode attention (one query per sequence) straight from the paged KV cache,
// split along the context ("flash decoding"). Decode is bound by reading K and
// V, so the design serves the memory system: one thread block per (sequence,
// KV head, split) computes all query heads of its KV head, so each K/V row is
// read from memory once whatever the grouped-query ratio; the block streams
// its token range through shared memory in fixed chunks with 16-byte
// cp.async copies, double-buffered so the next chunk's loads are in flight
// while the current one is computed, and keeps an online softmax (running
// max, running sum, rescaled accumulators) so shared memory stays bounded for
// any context length. Splits make a long context at a small batch fill the
// GPU; each split derives its token range from seq_lens on the device, so the
// grid depends only on host-side sizes and the launch can be captured in a
// CUDA graph and replayed with other lengths. A sequence's visible keys are
// cut evenly over all the launched splits, as long as each gets at least
// kMinSplitTokens of them (a shorter context uses fewer splits; the others
// exit at once): at a small batch the splits are what spreads a short
// context over the multiprocessors, and a block's time is mostly fixed
// latency for so few rows. With one split in use the block writes the output
// itself. Otherwise each split writes its unnormalised partial result to the
// workspace, makes it visible (__threadfence) and counts itself in on its
// (sequence, KV head) counter; the last to arrive merges the partials with
// log-sum-exp rescaling, in split order, and resets the counter to 0 for the
// next launch or graph replay. So one kernel per layer, and a replay is
// bit-for-bit the eager result whatever order the splits finish in.
// Under programmatic dependent launch a decode step's blocks read seq_lens,
// the block tables and every key but the last before waiting for the kernel
// just before (PagedAttentionArgs::prior_writes_last_key_only): at a short
// context a block is a chain of dependent round trips (length, table, rows),
// and these need not follow the projection that writes q and the new key.
// Scores live in the log2 domain (q is pre-scaled by scale * log2(e)) so the
// softmax uses exp2f, an accurate (2 ulp) function, not a fast-math intrinsic.
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "runtime/cuda/dtype.cuh"
#include "runtime/cuda/launch.h"
#include "runtime/cuda/ptx.cuh"
#include "runtime/cuda/pdl.cuh"

namespace gantry::cuda {
namespace {

constexpr int kThreads = 128;  // 4 warps: 3 blocks fit one SM at head_dim 128
constexpr int kWarps = kThreads / 32;
constexpr int kMaxGroup = 16;  // query heads per KV head; kernels.cc rejects more
// Fewest keys per split while a context is shorter than num_splits times it:
// thinner splits would add blocks and partials to merge, not speed.
constexpr int kMinSplitTokens = 16;
// Partials the merge reads per round trip to L2 (per thread: one float4 of
// each, and the split's max and sum).
constexpr int kMergeBatch = 16;
constexpr float kLog2e = 1.4426950408889634f;

constexpr int Min(int a, int b) { return a < b ? a : b; }

// Compile-time geometry of one (storage type, head_dim) instantiation.
template <typename T, int kHeadDim>
struct Config {
  // K/V rows are copied as 16-byte vectors: the smallest row (16 x 2 bytes)
  // is two of them, so no narrower fallback is needed.
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte vector
  static constexpr int kRowBytes = kHeadDim * static_cast<int>(sizeof(T));
  static constexpr int kRowVecs = kHeadDim / kVec;
  // Tokens per chunk: about 16 KiB of K (and as much of V) per stage, so two
  // stages of both fit three blocks per SM at head_dim 128; the chunk also
  // bounds the per-head score buffer.
  static constexpr int kChunk = Min(256, 16384 / kRowBytes);
  // Scores: kTpt adjacent threads share one token, each taking an interleaved
  // part of the row; their partial dot products meet through shuffles.
  static constexpr int kTpt = kChunk >= kThreads ? 1 : kThreads / kChunk;
  static constexpr int kQkTokens = kChunk * kTpt / kThreads;  // tokens per thread
  static constexpr int kQkVecs = kRowVecs / kTpt;             // 16-byte vectors per thread and token
  // Rows of at least 128 bytes are XOR-swizzled in 16-byte units (no bank
  // conflicts between the kTpt-interleaved score reads of 8/kTpt rows);
  // shorter rows are padded by 16 bytes instead.
  static constexpr bool kSwizzle = kRowVecs >= 8;
  static constexpr int kRowStride = kSwizzle ? kRowBytes : kRowBytes + 16;
  static constexpr int kStageBytes = kChunk * kRowStride;
  static constexpr int kLoadsPerThread = kChunk * kRowVecs / kThreads;  // cp.async per stage of K (or V)
  // Weighted sum of V: a thread owns 4 output dims (8-byte reads of 16-bit
  // rows, 16-byte of float32) for one or more query heads. With fewer heads
  // than head slots the spare slots take other tokens of the chunk ("token
  // lanes"), summed at the end.
  static constexpr int kPvVecs = kHeadDim / 4;
  static constexpr int kHeadSlots = kThreads / kPvVecs;
  static constexpr int kHeadsPerThread = (kMaxGroup + kHeadSlots - 1) / kHeadSlots;

  static_assert(kHeadDim % kVec == 0 && kRowVecs >= 2, "rows are whole 16-byte vectors");
  static_assert(kChunk % 4 == 0 && kChunk >= 16, "the weighted sum reads tokens in fours");
  static_assert(kThreads % kChunk == 0 || kChunk % kThreads == 0, "threads tile the chunk");
  static_assert(kRowVecs % kTpt == 0 && kTpt <= 8, "a token's threads split its row evenly");
  static_assert(!kSwizzle || kRowVecs % 8 == 0, "the swizzle permutes groups of 8 vectors");
  static_assert((kChunk * kRowVecs) % kThreads == 0, "every thread issues the same copies");
  static_assert(kThreads % kPvVecs == 0 && kHeadSlots >= 1, "threads tile the output dims");
  // The stages are reused for the token-lane reduction: [token lanes, group, head_dim] floats.
  static_assert(4 * kStageBytes >= 4 * kHeadDim * (kHeadSlots > kMaxGroup ? kHeadSlots : kMaxGroup),
                "the final reduction fits in the stages");
  static_assert(kHeadDim % 4 == 0, "the merge reads partials as float4");

  // Byte offset of 16-byte vector v of chunk row c inside a stage.
  static __device__ __forceinline__ int VecOffset(int c, int v) {
    if constexpr (kSwizzle) {
      return c * kRowStride + ((v ^ ((c * kTpt) & 7)) << 4);
    } else {
      return c * kRowStride + (v << 4);
    }
  }

  // Dynamic shared memory: K stages, V stages, two chunks of cache offsets,
  // per-head softmax state, then q and the scores, sized by the group.
  static size_t SmemBytes(int group) {
    return 4 * static_cast<size_t>(kStageBytes) + 2 * kChunk * sizeof(int64_t) + 3 * kMaxGroup * sizeof(float) +
           static_cast<size_t>(group) * (kHeadDim + kChunk) * sizeof(float);
  }
};

// Two packed 16-bit values (element 0 in the low half) to float, exactly.
template <typename T>
__device__ __forceinline__ void Unpack2(uint32_t w, float& lo, float& hi);
template <>
__device__ __forceinline__ void Unpack2<__nv_bfloat16>(uint32_t w, float& lo, float& hi) {
  lo = __uint_as_float(w << 16);
  hi = __uint_as_float(w & 0xffff0000u);
}
template <>
__device__ __forceinline__ void Unpack2<__half>(uint32_t w, float& lo, float& hi) {
  lo = __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xffffu)));
  hi = __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16)));
}

// 16 bytes of shared memory (16/sizeof(T) elements) to float.
template <typename T>
__device__ __forceinline__ void LoadVec16(const unsigned char* src, float* out) {
  const uint4 raw = *reinterpret_cast<const uint4*>(src);
  if constexpr (sizeof(T) == 4) {
    out[0] = __uint_as_float(raw.x);
    out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z);
    out[3] = __uint_as_float(raw.w);
  } else {
    Unpack2<T>(raw.x, out[0], out[1]);
    Unpack2<T>(raw.y, out[2], out[3]);
    Unpack2<T>(raw.z, out[4], out[5]);
    Unpack2<T>(raw.w, out[6], out[7]);
  }
}

// 4 elements of shared memory (8 or 16 bytes) to float.
template <typename T>
__device__ __forceinline__ void LoadVec4(const unsigned char* src, float* out) {
  if constexpr (sizeof(T) == 4) {
    const float4 v = *reinterpret_cast<const float4*>(src);
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
  } else {
    const uint2 raw = *reinterpret_cast<const uint2*>(src);
    Unpack2<T>(raw.x, out[0], out[1]);
    Unpack2<T>(raw.y, out[2], out[3]);
  }
}

__device__ __forceinline__ float WarpMax(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}
__device__ __forceinline__ float WarpSum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// One thread block per (sequence, KV head, split): grid (num_seqs *
// num_kv_heads, num_splits). Attends the split's share of the visible keys
// for the `group` query heads of the KV head. Of the num_splits blocks of a
// sequence, the first `active` = min(num_splits, ceil(visible /
// kMinSplitTokens)) share the visible keys evenly (each has >= 1 key); the
// rest exit. active == 1: the block writes the normalised output. Otherwise
// each writes its unnormalised accumulator, its running max (log2 domain) and
// its sum of exponentials to the workspace, and the last of them to finish
// merges them into the output. A padding sequence (no visible keys) gets zero
// rows from its split 0.
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kThreads, 3)
    DecodeSplitKernel(const T* __restrict__ q,                // [num_seqs, num_heads, head_dim]
                      const T* __restrict__ k_cache,          // [num_blocks, block_size, num_kv_heads, head_dim]
                      const T* __restrict__ v_cache,          // [num_blocks, block_size, num_kv_heads, head_dim]
                      // block j of sequence s at block_tables[s * bt_seq_stride + j * bt_block_stride]
                      const int32_t* __restrict__ block_tables, int64_t bt_seq_stride, int64_t bt_block_stride,
                      const int32_t* __restrict__ seq_lens,   // [num_seqs]; <= 0: padding
                      int num_kv_heads, int group, int block_size, int sliding_window,
                      float qk_scale_log2,                    // scale * log2(e)
                      bool last_key_pending,                  // PagedAttentionArgs::prior_writes_last_key_only
                      T* __restrict__ out,                    // [num_seqs, num_heads, head_dim]
                      unsigned* __restrict__ counters,        // [num_seqs * num_heads], zero at rest
                      float* __restrict__ ws_acc,             // [num_seqs, num_heads, num_splits, head_dim]
                      float* __restrict__ ws_max,             // [num_seqs, num_heads, num_splits]
                      float* __restrict__ ws_sum) {           // [num_seqs, num_heads, num_splits]
  using Cfg = Config<T, kHeadDim>;
  constexpr int kChunk = Cfg::kChunk;
  constexpr int kTpt = Cfg::kTpt;

  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* const k_stages = smem;                           // [2][kChunk rows]
  unsigned char* const v_stages = smem + 2 * Cfg::kStageBytes;    // [2][kChunk rows]
  // [2][kChunk] element offsets of the rows of this KV head, -1 past the split end
  int64_t* const slot_s = reinterpret_cast<int64_t*>(smem + 4 * Cfg::kStageBytes);
  float* const m_s = reinterpret_cast<float*>(slot_s + 2 * kChunk);  // [kMaxGroup] running max (log2 domain)
  float* const l_s = m_s + kMaxGroup;                                 // [kMaxGroup] running sum of exp2
  float* const alpha_s = l_s + kMaxGroup;                             // [kMaxGroup] this chunk's rescale factor
  float* const q_s = alpha_s + kMaxGroup;                             // [group, head_dim], pre-scaled
  float* const p_s = q_s + group * kHeadDim;                          // [group, kChunk] scores, then probabilities

  const int tid = threadIdx.x;
  const int seq = blockIdx.x / num_kv_heads;
  const int kv_head = blockIdx.x % num_kv_heads;
  const int split = blockIdx.y;
  const int num_splits = gridDim.y;
  const int num_heads = num_kv_heads * group;
  const int64_t first_row = static_cast<int64_t>(seq) * num_heads + static_cast<int64_t>(kv_head) * group;

  // q, and the cache's last key, come from the kernel just before this one;
  // without last_key_pending seq_lens, the tables and any key may too. Every
  // block waits once, before it reads them and before it exits: here, or
  // (last_key_pending) at its early exit or before q and the last key's row.
  auto wait_for_prior_grid = [] {
    WaitForPriorGrid();
    AllowDependentLaunch();  // the next kernel may start loading its weights
  };
  if (!last_key_pending) wait_for_prior_grid();

  // Visible keys [lo, hi): the query sits at position seq_len - 1.
  const int hi = max(seq_lens[seq], 0);
  const int lo = sliding_window > 0 ? max(0, hi - sliding_window) : 0;
  const int64_t visible = hi - lo;
  // Splits in use: all of them once every one gets kMinSplitTokens keys;
  // active <= visible, so each has >= 1 key.
  const int active = static_cast<int>(
      min(static_cast<int64_t>(num_splits), (visible + kMinSplitTokens - 1) / kMinSplitTokens));
  // Whole blocks leave here, so no barrier below is skipped by some threads only.
  if (active == 0) {  // a padding sequence: nothing to attend
    if (last_key_pending) wait_for_prior_grid();
    if (split == 0) {
      for (int i = tid; i < group * kHeadDim; i += kThreads) out[first_row * kHeadDim + i] = FromFloat<T>(0.0f);
    }
    return;
  }
  if (split >= active) {
    if (last_key_pending) wait_for_prior_grid();
    return;
  }
  const int begin = lo + static_cast<int>(visible * split / active);
  const int end = lo + static_cast<int>(visible * (split + 1) / active);

  if (tid < kMaxGroup) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }

  const int num_chunks = (end - begin + kChunk - 1) / kChunk;
  const int32_t* const table = block_tables + static_cast<int64_t>(seq) * bt_seq_stride;

  // Element offsets of chunk `chunk`'s rows (this KV head), -1 past the split end.
  auto compute_slots = [&](int chunk, int buf) {
    const int start = begin + chunk * kChunk;
    for (int c = tid; c < kChunk; c += kThreads) {
      const int j = start + c;
      int64_t offset = -1;
      if (j < end) {
        const int64_t block = table[static_cast<int64_t>(j / block_size) * bt_block_stride];
        offset = ((block * block_size + j % block_size) * num_kv_heads + kv_head) * kHeadDim;
      }
      slot_s[buf * kChunk + c] = offset;
    }
  };
  // Two commit groups per chunk, K then V, so the scores can start while V
  // is still arriving.
  // Row skip_row (>= 0) is left out: it is copied later, on its own.
  auto issue_loads = [&](int buf, int skip_row) {
    const int64_t* slots = slot_s + buf * kChunk;
#pragma unroll
    for (int i = 0; i < Cfg::kLoadsPerThread; ++i) {
      const int idx = tid + i * kThreads;
      const int c = idx / Cfg::kRowVecs, v = idx % Cfg::kRowVecs;
      const int64_t offset = slots[c];
      if (c != skip_row) {
        CpAsync16(k_stages + buf * Cfg::kStageBytes + Cfg::VecOffset(c, v),
                  k_cache + (offset >= 0 ? offset + v * Cfg::kVec : 0), offset >= 0);
      }
    }
    CpAsyncCommit();
#pragma unroll
    for (int i = 0; i < Cfg::kLoadsPerThread; ++i) {
      const int idx = tid + i * kThreads;
      const int c = idx / Cfg::kRowVecs, v = idx % Cfg::kRowVecs;
      const int64_t offset = slots[c];
      if (c != skip_row) {
        CpAsync16(v_stages + buf * Cfg::kStageBytes + Cfg::VecOffset(c, v),
                  v_cache + (offset >= 0 ? offset + v * Cfg::kVec : 0), offset >= 0);
      }
    }
    CpAsyncCommit();
  };

  // Weighted-sum ownership: dims [4 * dvec, 4 * dvec + 4) of heads
  // h0, h0 + kHeadSlots, ... (< group), over the chunk's 4-token groups
  // token_lane, token_lane + num_lanes, ...
  const int dvec = tid % Cfg::kPvVecs;
  const int slot = tid / Cfg::kPvVecs;
  const int h0 = slot % group;
  const int token_lane = slot / group;
  const int num_lanes = max(1, Cfg::kHeadSlots / group);
  const bool pv_active = token_lane < num_lanes;
  float acc[Cfg::kHeadsPerThread][4];
#pragma unroll
  for (int hh = 0; hh < Cfg::kHeadsPerThread; ++hh) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[hh][e] = 0.0f;
  }
  // Byte offset of dims [4 * dvec, +4) within a row, before the swizzle.
  const int pv_vec = dvec * 4 / Cfg::kVec;
  const int pv_byte = (dvec * 4 % Cfg::kVec) * static_cast<int>(sizeof(T));

  const int part = tid % kTpt;
  const int warp = tid / 32, lane = tid % 32;

  // Chunk 0's copies go out before the wait (last_key_pending) but for the
  // last key's row when this split holds it: that row follows the wait in a
  // group of its own (committed empty otherwise, keeping the counts uniform).
  const int last_key_row = hi - 1 - begin;  // in chunk 0 of this split when < kChunk and end == hi
  const int deferred_row = last_key_pending && end == hi && last_key_row < kChunk ? last_key_row : -1;
  compute_slots(0, 0);
  __syncthreads();
  issue_loads(0, deferred_row);
  if (num_chunks > 1) compute_slots(1, 1);
  if (last_key_pending) wait_for_prior_grid();
  if (deferred_row >= 0) {
    const int64_t offset = slot_s[deferred_row];
    for (int v = tid; v < Cfg::kRowVecs; v += kThreads) {
      CpAsync16(k_stages + Cfg::VecOffset(deferred_row, v), k_cache + offset + v * Cfg::kVec, true);
      CpAsync16(v_stages + Cfg::VecOffset(deferred_row, v), v_cache + offset + v * Cfg::kVec, true);
    }
  }
  CpAsyncCommit();
  for (int i = tid; i < group * kHeadDim; i += kThreads) {
    q_s[i] = ToFloat(q[first_row * kHeadDim + i]) * qk_scale_log2;
  }

  for (int chunk = 0; chunk < num_chunks; ++chunk) {
    const int buf = chunk & 1;
    // Barrier A: chunk + 1's offsets and q are visible, and the previous
    // chunk is done with stage buf ^ 1, p_s and alpha_s.
    __syncthreads();
    if (chunk + 1 < num_chunks) {
      issue_loads(buf ^ 1, -1);
    } else {
      CpAsyncCommit();  // empty groups keep the wait counts below uniform
      CpAsyncCommit();
    }
    // This chunk's K has landed (V, and chunk + 1, may be pending). Chunk 0:
    // behind its K and V come the deferred row's group, then chunk 1's two.
    if (chunk == 0) {
      CpAsyncWait<2>();
    } else {
      CpAsyncWait<3>();
    }
    __syncthreads();   // Barrier B: every thread's K copies are visible

    const int chunk_start = begin + chunk * kChunk;
    const int valid = min(kChunk, end - chunk_start);
    const unsigned char* const k_stage = k_stages + buf * Cfg::kStageBytes;
    const unsigned char* const v_stage = v_stages + buf * Cfg::kStageBytes;

    // Scores (log2 domain) for every head of the group, -inf past `valid`.
#pragma unroll
    for (int i = 0; i < Cfg::kQkTokens; ++i) {
      const int c = tid / kTpt + i * (kThreads / kTpt);
      float kf[Cfg::kQkVecs][Cfg::kVec];
#pragma unroll
      for (int k = 0; k < Cfg::kQkVecs; ++k) LoadVec16<T>(k_stage + Cfg::VecOffset(c, k * kTpt + part), kf[k]);
      for (int h = 0; h < group; ++h) {
        const float* qh = q_s + h * kHeadDim;
        float dot = 0.0f;
#pragma unroll
        for (int k = 0; k < Cfg::kQkVecs; ++k) {
#pragma unroll
          for (int e = 0; e < Cfg::kVec; e += 4) {
            const float4 q4 = *reinterpret_cast<const float4*>(qh + (k * kTpt + part) * Cfg::kVec + e);
            dot = fmaf(q4.x, kf[k][e], dot);
            dot = fmaf(q4.y, kf[k][e + 1], dot);
            dot = fmaf(q4.z, kf[k][e + 2], dot);
            dot = fmaf(q4.w, kf[k][e + 3], dot);
          }
        }
#pragma unroll
        for (int offset = kTpt / 2; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
        if (part == 0) p_s[h * kChunk + c] = c < valid ? dot : -INFINITY;
      }
    }
    // Offsets for chunk + 2 go to the buffer chunk's loads came from (issued
    // before barrier A of this chunk).
    if (chunk + 2 < num_chunks) compute_slots(chunk + 2, buf);
    CpAsyncWait<2>();  // this chunk's V has landed
    __syncthreads();   // Barrier C: scores and V visible

    // Online softmax, one warp per head: new running max, probabilities in
    // place of the scores (0 past `valid`, so the weighted sum may read whole
    // 4-token groups), rescale factor for the old accumulators.
    for (int h = warp; h < group; h += kWarps) {
      float* const ph = p_s + h * kChunk;
      float chunk_max = -INFINITY;
      for (int c = lane; c < valid; c += 32) chunk_max = fmaxf(chunk_max, ph[c]);
      chunk_max = WarpMax(chunk_max);
      const float m_old = m_s[h];
      const float m_new = fmaxf(m_old, chunk_max);  // finite: valid >= 1
      float sum = 0.0f;
      for (int c = lane; c < kChunk; c += 32) {
        const float p = c < valid ? exp2f(ph[c] - m_new) : 0.0f;
        ph[c] = p;
        sum += p;
      }
      sum = WarpSum(sum);
      if (lane == 0) {
        const float alpha = exp2f(m_old - m_new);  // 0 on the first chunk (m_old = -inf)
        alpha_s[h] = alpha;
        l_s[h] = l_s[h] * alpha + sum;
        m_s[h] = m_new;
      }
    }
    __syncthreads();  // Barrier D: probabilities and rescale factors visible

    // Weighted sum of V.
    if (pv_active) {
#pragma unroll
      for (int hh = 0; hh < Cfg::kHeadsPerThread; ++hh) {
        const int h = h0 + hh * Cfg::kHeadSlots;
        if (h < group) {
          const float alpha = alpha_s[h];
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[hh][e] *= alpha;
        }
      }
      const int num_quads = (valid + 3) / 4;
      for (int quad = token_lane; quad < num_quads; quad += num_lanes) {
        const int c0 = quad * 4;
        float vf[4][4];
#pragma unroll
        for (int j = 0; j < 4; ++j) LoadVec4<T>(v_stage + Cfg::VecOffset(c0 + j, pv_vec) + pv_byte, vf[j]);
#pragma unroll
        for (int hh = 0; hh < Cfg::kHeadsPerThread; ++hh) {
          const int h = h0 + hh * Cfg::kHeadSlots;
          if (h < group) {
            const float4 p = *reinterpret_cast<const float4*>(p_s + h * kChunk + c0);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              float a = acc[hh][e];
              a = fmaf(p.x, vf[0][e], a);
              a = fmaf(p.y, vf[1][e], a);
              a = fmaf(p.z, vf[2][e], a);
              a = fmaf(p.w, vf[3][e], a);
              acc[hh][e] = a;
            }
          }
        }
      }
    }
  }

  // Sum the token lanes through shared memory (the stages are free now).
  CpAsyncWait<0>();
  __syncthreads();
  float* const red = reinterpret_cast<float*>(smem);  // [num_lanes, group, head_dim]
  if (pv_active) {
#pragma unroll
    for (int hh = 0; hh < Cfg::kHeadsPerThread; ++hh) {
      const int h = h0 + hh * Cfg::kHeadSlots;
      if (h < group) {
        *reinterpret_cast<float4*>(red + (token_lane * group + h) * kHeadDim + dvec * 4) =
            make_float4(acc[hh][0], acc[hh][1], acc[hh][2], acc[hh][3]);
      }
    }
  }
  __syncthreads();

  for (int i = tid; i < group * kHeadDim; i += kThreads) {
    float sum = 0.0f;
    for (int t = 0; t < num_lanes; ++t) sum += red[t * group * kHeadDim + i];
    const int h = i / kHeadDim;
    if (active == 1) {
      out[first_row * kHeadDim + i] = FromFloat<T>(sum / l_s[h]);  // l >= 1: the max term is exp2(0)
    } else {
      ws_acc[((first_row + h) * num_splits + split) * kHeadDim + i % kHeadDim] = sum;
    }
  }
  if (active == 1) return;
  if (tid < group) {
    ws_max[(first_row + tid) * num_splits + split] = m_s[tid];
    ws_sum[(first_row + tid) * num_splits + split] = l_s[tid];
  }

  // Count this split in once its partials are visible device-wide (each
  // thread fences its own writes before the barrier); the last to arrive
  // merges, and leaves the counter at 0 for the next launch.
  __shared__ bool is_last;
  __threadfence();
  __syncthreads();
  if (tid == 0) {
    const unsigned arrived = atomicAdd(&counters[first_row], 1u) + 1;
    is_last = arrived == static_cast<unsigned>(active);
    if (is_last) counters[first_row] = 0;
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();  // the other splits' partials are read after their count

  // out = sum_i w_i acc_i / sum_i w_i l_i, w_i = exp2(m_i - max_i m_i), over
  // the active splits in order, spread over all the block's warps: each
  // thread owns 4 dims (a float4) of one head, so at group * head_dim / 4 <=
  // kThreads (8B-shaped: 4 heads x 128 dims) every thread makes one pass. It
  // reads kMergeBatch splits' partials, maxes and sums at once (one round
  // trip to L2 for up to kMergeBatch splits, unrolled) and folds them into a
  // running max, sum and accumulator: no barrier, no shared memory, no
  // separate pass for the max. The partials were written by other blocks:
  // read them from L2 (ld.cg), never from a stale L1 line. The order of the
  // arithmetic depends only on `active`, so the result does not depend on
  // which block merges.
  constexpr int kSlots = kHeadDim / 4;  // float4 slots per head
  for (int e = tid; e < group * kSlots; e += kThreads) {
    const int h = e / kSlots, dv = e % kSlots;
    const int64_t row = first_row + h;
    const float* const m_row = ws_max + row * num_splits;
    const float* const l_row = ws_sum + row * num_splits;
    const float4* const acc_row = reinterpret_cast<const float4*>(ws_acc + row * num_splits * kHeadDim) + dv;
    float m_run = -INFINITY, l_run = 0.0f;
    float4 a_run = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int j0 = 0; j0 < active; j0 += kMergeBatch) {
      float m[kMergeBatch], l[kMergeBatch];
      float4 acc[kMergeBatch];
#pragma unroll
      for (int u = 0; u < kMergeBatch; ++u) {
        const int j = j0 + u;
        if (j < active) {
          m[u] = __ldcg(m_row + j);
          l[u] = __ldcg(l_row + j);
          acc[u] = __ldcg(acc_row + static_cast<int64_t>(j) * kSlots);
        } else {
          m[u] = -INFINITY;  // weight 0
          l[u] = 0.0f;
          acc[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
      }
      float m_new = m_run;
#pragma unroll
      for (int u = 0; u < kMergeBatch; ++u) m_new = fmaxf(m_new, m[u]);  // finite: split j0 holds a key
      const float rescale = exp2f(m_run - m_new);                       // 0 on the first batch
      l_run *= rescale;
      a_run.x *= rescale;
      a_run.y *= rescale;
      a_run.z *= rescale;
      a_run.w *= rescale;
#pragma unroll
      for (int u = 0; u < kMergeBatch; ++u) {
        const float w = exp2f(m[u] - m_new);
        l_run = fmaf(w, l[u], l_run);
        a_run.x = fmaf(w, acc[u].x, a_run.x);
        a_run.y = fmaf(w, acc[u].y, a_run.y);
        a_run.z = fmaf(w, acc[u].z, a_run.z);
        a_run.w = fmaf(w, acc[u].w, a_run.w);
      }
      m_run = m_new;
    }
    // l_run >= 1: the split holding the overall max contributes exp2(0) * l >= 1.
    T* const o = out + row * kHeadDim + dv * 4;
    o[0] = FromFloat<T>(a_run.x / l_run);
    o[1] = FromFloat<T>(a_run.y / l_run);
    o[2] = FromFloat<T>(a_run.z / l_run);
    o[3] = FromFloat<T>(a_run.w / l_run);
  }
}

template <typename T, int kHeadDim>
cudaError_t LaunchTyped(const PagedAttentionArgs& a, cudaStream_t stream) {
  using Cfg = Config<T, kHeadDim>;
  const int group = a.num_heads / a.num_kv_heads;
  const size_t smem = Cfg::SmemBytes(group);
  auto* kernel = &DecodeSplitKernel<T, kHeadDim>;
  if (smem > 48 * 1024) {
    // Per launch, not once: the attribute is per device. It is a host-side
    // setting, allowed while a stream is being captured.
    const cudaError_t error =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (error != cudaSuccess) return error;
  }
  const int num_splits = a.num_splits;
  const int64_t rows = static_cast<int64_t>(a.num_seqs) * a.num_heads;
  // Workspace layout: see DecodeAttentionWorkspaceBytes (kernels.cc).
  unsigned* counters = num_splits > 1 ? reinterpret_cast<unsigned*>(a.workspace) : nullptr;
  float* ws_acc = num_splits > 1 ? a.workspace + (rows + 3) / 4 * 4 : nullptr;
  float* ws_max = num_splits > 1 ? ws_acc + rows * num_splits * kHeadDim : nullptr;
  float* ws_sum = num_splits > 1 ? ws_max + rows * num_splits : nullptr;

  const dim3 grid(static_cast<unsigned>(a.num_seqs * a.num_kv_heads), static_cast<unsigned>(num_splits));
  return LaunchKernel(kernel, grid, dim3(kThreads), smem, stream, static_cast<const T*>(a.q),
                      static_cast<const T*>(a.k_cache), static_cast<const T*>(a.v_cache), a.block_tables,
                      a.bt_seq_stride, a.bt_block_stride, a.seq_lens, a.num_kv_heads, group, a.block_size,
                      a.sliding_window, a.scale * kLog2e, a.prior_writes_last_key_only, static_cast<T*>(a.out),
                      counters, ws_acc, ws_max, ws_sum);
}

}  // namespace

cudaError_t LaunchDecodeAttention(const PagedAttentionArgs& args, cudaStream_t stream) {
  // The 16-byte cache copies need 16-byte aligned caches (cudaMalloc and
  // LibTorch allocations are); q and out are read and written per element.
  if ((reinterpret_cast<uintptr_t>(args.k_cache) | reinterpret_cast<uintptr_t>(args.v_cache)) % 16 != 0) {
    return cudaErrorMisalignedAddress;
  }
  // The merge reads the partials as float4 (cudaMalloc'd and LibTorch workspaces are 16-byte aligned).
  if (args.num_splits > 1 && reinterpret_cast<uintptr_t>(args.workspace) % 16 != 0) {
    return cudaErrorMisalignedAddress;
  }
  return DispatchDType(args.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    switch (args.head_dim) {
      case 16: return LaunchTyped<T, 16>(args, stream);
      case 32: return LaunchTyped<T, 32>(args, stream);
      case 64: return LaunchTyped<T, 64>(args, stream);
      case 128: return LaunchTyped<T, 128>(args, stream);
      case 256: return LaunchTyped<T, 256>(args, stream);
    }
    return cudaErrorInvalidValue;
  });
}

}  // namespace gantry::cuda
