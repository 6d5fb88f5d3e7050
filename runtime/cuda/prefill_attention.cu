// Prefill attention: causal attention of prompt chunks, and of decodes mixed
// into the same batch, read straight from the paged KV cache.
//
// Sequence s has ctx = seq_lens[s] tokens cached (this step's included) and
// q_len queries at positions ctx - q_len ... ctx - 1; a query at p sees keys
// j <= p, and j > p - sliding_window when a window is set.
//
// bf16 / fp16 follow FlashAttention-2:
//  * A thread block takes one (sequence, KV head, tile of 64 rows), where a
//    row is a (query, query head) pair: the G query heads sharing a KV head
//    are packed into the rows (row = query * G + head in group), so each K/V
//    tile gathered from the cache serves all of them. G need not divide 64: a
//    tile may start and end in the middle of a query's heads.
//  * 4 warps of 16 rows each. S = Q K^T and O += P V run on tensor cores
//    (mma.sync m16n8k16, float32 accumulators); operands come from shared
//    memory through ldmatrix. Rows are padded by 16 bytes so the 8 rows of an
//    ldmatrix 8x8 matrix land on distinct banks for every head_dim.
//  * K/V tiles (64 keys; 32 for head_dim 256 to fit registers and shared
//    memory) are gathered row by row through the block table with 16-byte
//    cp.async, double-buffered: tile n+1 loads while tile n is computed.
//    Only tiles inside the causal/window range of the tile's rows are
//    visited; the mask is applied only to tiles that straddle its edges.
//  * Online softmax in float32, base 2 (scores times scale * log2 e, exp2f).
//    P is rounded to the 16-bit type for the P V product, as FlashAttention
//    does; the row sums add up the rounded P, so the output is an exact
//    convex combination of the weights actually used. O is rounded once.
//  * Q stays in registers for head_dim <= 128; for 256 it is re-read from
//    shared memory per K tile (the 128 float accumulators of O leave no room).
// float32 runs a plain CUDA-core kernel with the same row packing (16-row
// tiles, 32 keys a step) and the same online softmax, float32 throughout
// (float32 models only; simplicity over speed). exp2f is the only special
// function, in both paths; no fast-math.
//
// Grid: x = row tile (the last, longest-running tiles first), y = KV head,
// z = sequence (blocks loop when num_seqs exceeds the z limit). It depends
// only on host-side sizes (max_query_len, heads, num_seqs): blocks past a
// sequence's rows exit at once, so the launch can be captured in a CUDA
// graph. Nothing is allocated and nothing synchronises. q, out and the caches
// must be 16-byte aligned (head vectors move in 16-byte pieces).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "runtime/cuda/dtype.cuh"
#include "runtime/cuda/launch.h"
#include "runtime/cuda/ptx.cuh"

namespace gantry::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kMaxGridZ = 65535;

// What the kernels read, with the group size and base-2 scale precomputed.
struct PrefillParams {
  const void* q;                // [num_tokens, num_heads, head_dim]
  void* out;                    // [num_tokens, num_heads, head_dim]
  const void* k_cache;          // [num_blocks, block_size, num_kv_heads, head_dim]
  const void* v_cache;          // [num_blocks, block_size, num_kv_heads, head_dim]
  const int32_t* block_tables;  // block j of sequence s at s * bt_seq_stride + j * bt_block_stride
  const int32_t* seq_lens;      // [num_seqs]
  const int32_t* query_start;   // [num_seqs + 1]
  int64_t bt_seq_stride;
  int64_t bt_block_stride;
  int num_seqs;
  int num_heads;
  int num_kv_heads;
  int group;  // query heads per KV head
  int block_size;
  int sliding_window;  // 0 = off
  float scale_log2;    // scale * log2(e)
};

// The rows of one thread block and the keys they see.
struct RowTile {
  int q_begin;    // token row of the sequence's first query
  int rows;       // q_len * group: (query, head) rows of the sequence
  int t0;         // first row of this tile
  int first_pos;  // position of the sequence's query 0
  int p_lo;       // position of the tile's first row
  int p_hi;       // position of the tile's last valid row
  int k_begin;    // keys [k_begin, k_end) are seen by some row of the tile
  int k_end;
};

// False when the tile holds no row of the sequence (padding sequence, or a
// sequence shorter than max_query_len).
__device__ __forceinline__ bool MakeRowTile(const PrefillParams& p, int seq, int m_tile, int block_m,
                                            RowTile& t) {
  t.q_begin = p.query_start[seq];
  const int q_len = p.query_start[seq + 1] - t.q_begin;
  t.rows = q_len * p.group;
  t.t0 = m_tile * block_m;
  if (q_len <= 0 || t.t0 >= t.rows) return false;
  const int ctx = p.seq_lens[seq];
  const int last = min(t.t0 + block_m, t.rows) - 1;
  t.first_pos = ctx - q_len;
  t.p_lo = t.first_pos + t.t0 / p.group;
  t.p_hi = t.first_pos + last / p.group;
  t.k_end = min(t.p_hi + 1, ctx);
  t.k_begin = p.sliding_window > 0 ? max(0, t.p_lo - p.sliding_window + 1) : 0;
  return true;
}

// Element offset of row t's head vector in q / out.
__device__ __forceinline__ int64_t RowOffset(const PrefillParams& p, const RowTile& t, int row, int kv_head,
                                             int head_dim) {
  const int64_t token = t.q_begin + row / p.group;
  const int head = kv_head * p.group + row % p.group;
  return (token * p.num_heads + head) * head_dim;
}

// Element offset of token j's head vector in the K/V cache.
__device__ __forceinline__ int64_t CacheOffset(const PrefillParams& p, int seq, int j, int kv_head,
                                               int head_dim) {
  const int64_t block =
      p.block_tables[seq * p.bt_seq_stride + static_cast<int64_t>(j / p.block_size) * p.bt_block_stride];
  return ((block * p.block_size + j % p.block_size) * p.num_kv_heads + kv_head) * head_dim;
}

__device__ __forceinline__ bool Masked(int key, int pos, int window) {
  return key > pos || (window > 0 && key <= pos - window);
}

// ---------------------------------------------------------------------------
// PTX wrappers: ldmatrix (cp.async and mma.sync: ptx.cuh).

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(shared)));
}

// As LdMatrixX4, each matrix transposed.
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* shared) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(shared)));
}

// (lo, hi) rounded to T and packed (lo in the low half, as the mma operand
// fragments order columns); `sum` gains the rounded values.
template <typename T>
__device__ __forceinline__ uint32_t PackRounded(float lo, float hi, float& sum) {
  uint32_t bits;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    sum += __low2float(v) + __high2float(v);
    memcpy(&bits, &v, 4);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    sum += __low2float(v) + __high2float(v);
    memcpy(&bits, &v, 4);
  }
  return bits;
}

template <typename T>
__device__ __forceinline__ uint32_t Pack(float lo, float hi) {
  float unused = 0.0f;
  return PackRounded<T>(lo, hi, unused);
}

// ---------------------------------------------------------------------------
// bf16 / fp16: tensor cores.

template <int kHeadDim>
struct MmaTile {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = 16 * kWarps;              // rows: 16 per warp
  static constexpr int kBlockN = kHeadDim <= 128 ? 64 : 32;  // keys per K/V tile
  static constexpr bool kQInRegisters = kHeadDim <= 128;
  static constexpr int kStride = kHeadDim + 8;  // shared row, in elements: +16 bytes against bank conflicts
  static constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  // Q [kBlockM][kStride], then K and V, each [2 stages][kBlockN][kStride].
  static constexpr int kSmemBytes = (kBlockM + 4 * kBlockN) * kStride * 2;
  static_assert(kBlockM * kChunks % kThreads == 0 && kBlockN * kChunks % kThreads == 0);
  static_assert(16 * kChunks % 32 == 0);
};

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(MmaTile<kHeadDim>::kThreads) PrefillAttentionMmaKernel(const PrefillParams p) {
  using Tile = MmaTile<kHeadDim>;
  constexpr int kThreads = Tile::kThreads, kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN;
  constexpr int kStride = Tile::kStride, kChunks = Tile::kChunks;
  constexpr int kSteps = kHeadDim / 16;    // k-steps of Q K^T
  constexpr int kDTiles = kHeadDim / 8;    // n-tiles of O
  constexpr int kNTiles = kBlockN / 8;     // n-tiles of S
  constexpr bool kQInRegisters = Tile::kQInRegisters;

  extern __shared__ __align__(16) unsigned char shared[];
  T* const sQ = reinterpret_cast<T*>(shared);  // [kBlockM][kStride]; then the output staging
  T* const sK = sQ + kBlockM * kStride;        // [2][kBlockN][kStride]
  T* const sV = sK + 2 * kBlockN * kStride;    // [2][kBlockN][kStride]
  const T* const q = static_cast<const T*>(p.q);
  T* const out = static_cast<T*>(p.out);
  const T* const k_cache = static_cast<const T*>(p.k_cache);
  const T* const v_cache = static_cast<const T*>(p.v_cache);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int quad_row = lane / 4, quad_col = lane % 4;  // mma fragment coordinates
  const int kv_head = blockIdx.y;
  // The last row tiles see the most keys: start them first.
  const int m_tile = gridDim.x - 1 - blockIdx.x;

  for (int seq = blockIdx.z; seq < p.num_seqs; seq += gridDim.z) {
    RowTile t;
    if (!MakeRowTile(p, seq, m_tile, kBlockM, t)) continue;  // uniform over the block

    // Q rows, one (query, head) pair each; rows past the sequence are zero.
#pragma unroll
    for (int i = 0; i < kBlockM * kChunks / kThreads; ++i) {
      const int c = tid + i * kThreads, r = c / kChunks, ch = c % kChunks;
      T* dst = sQ + r * kStride + ch * 8;
      if (t.t0 + r < t.rows) {
        CpAsync16(dst, q + RowOffset(p, t, t.t0 + r, kv_head, kHeadDim) + ch * 8);
      } else {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
      }
    }
    CpAsyncCommit();

    // Gathers keys [n0, n0 + kBlockN) into a stage, row by row through the
    // block table. Keys no row sees (and those past the context) are zero,
    // so no NaN from stale shared memory reaches P V.
    auto load_kv = [&](int n0, int stage) {
      T* const dk = sK + stage * kBlockN * kStride;
      T* const dv = sV + stage * kBlockN * kStride;
#pragma unroll
      for (int i = 0; i < kBlockN * kChunks / kThreads; ++i) {
        const int c = tid + i * kThreads, r = c / kChunks, ch = c % kChunks;
        const int j = n0 + r, at = r * kStride + ch * 8;
        if (j >= t.k_begin && j < t.k_end) {
          const int64_t src = CacheOffset(p, seq, j, kv_head, kHeadDim) + ch * 8;
          CpAsync16(dk + at, k_cache + src);
          CpAsync16(dv + at, v_cache + src);
        } else {
          *reinterpret_cast<uint4*>(dk + at) = make_uint4(0, 0, 0, 0);
          *reinterpret_cast<uint4*>(dv + at) = make_uint4(0, 0, 0, 0);
        }
      }
    };
    const int n_first = t.k_begin / kBlockN;
    const int num_tiles = t.k_end > t.k_begin ? (t.k_end - 1) / kBlockN - n_first + 1 : 0;
    if (num_tiles > 0) load_kv(n_first * kBlockN, 0);
    CpAsyncCommit();

    // Positions of this thread's two rows (fragment rows quad_row, +8).
    int row_pos[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) row_pos[h] = t.first_pos + (t.t0 + warp * 16 + quad_row + 8 * h) / p.group;

    // A fragments of this warp's 16 Q rows: lanes 0-15 address rows 0-15 at
    // column 0, lanes 16-31 the same rows at column 8 (a0..a3 of m16n8k16).
    const T* const q_frag_base = sQ + (warp * 16 + lane % 16) * kStride + (lane / 16) * 8;
    uint32_t q_frag[kQInRegisters ? kSteps : 1][4];
    if constexpr (kQInRegisters) {
      CpAsyncWait<1>();  // Q landed; the first K/V tile may still be in flight
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) LdMatrixX4(q_frag[kk], q_frag_base + kk * 16);
    }

    float o[kDTiles][4];
#pragma unroll
    for (int d = 0; d < kDTiles; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float row_max[2] = {-INFINITY, -INFINITY};  // base 2, scaled
    float row_sum[2] = {0.0f, 0.0f};            // this thread's columns only; summed over the quad at the end

    for (int it = 0; it < num_tiles; ++it) {
      const int n0 = (n_first + it) * kBlockN;
      const int stage = it & 1;
      if (it + 1 < num_tiles) {
        // The other stage was released by the barrier ending the last iteration.
        load_kv(n0 + kBlockN, stage ^ 1);
        CpAsyncCommit();
        CpAsyncWait<1>();
      } else {
        CpAsyncWait<0>();
      }
      __syncthreads();
      const T* const k_tile = sK + stage * kBlockN * kStride;
      const T* const v_tile = sV + stage * kBlockN * kStride;

      // S = Q K^T. K is stored [key][dim], i.e. the col-major B operand: the
      // four matrices are (keys 0-7, dims 0-7), (0-7, 8-15), (8-15, 0-7),
      // (8-15, 8-15) = b0, b1 of n-tile 2nn and b0, b1 of n-tile 2nn + 1.
      float s[kNTiles][4];
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
      const T* const k_frag_base = k_tile + ((lane & 7) + (lane >> 4) * 8) * kStride + ((lane >> 3) & 1) * 8;
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
        uint32_t a[4];
        if constexpr (kQInRegisters) {
#pragma unroll
          for (int x = 0; x < 4; ++x) a[x] = q_frag[kk][x];
        } else {
          LdMatrixX4(a, q_frag_base + kk * 16);
        }
#pragma unroll
        for (int nn = 0; nn < kBlockN / 16; ++nn) {
          uint32_t b[4];
          LdMatrixX4(b, k_frag_base + nn * 16 * kStride + kk * 16);
          Mma<T>(s[2 * nn], a, b[0], b[1]);
          Mma<T>(s[2 * nn + 1], a, b[2], b[3]);
        }
      }

      // Mask only tiles that cross the causal diagonal or the window's edge
      // for some row of the tile (rows past the sequence are never written).
      const bool need_mask = n0 + kBlockN - 1 > t.p_lo ||
                             (p.sliding_window > 0 && n0 <= t.p_hi - p.sliding_window);
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float x = s[n][e] * p.scale_log2;
          if (need_mask && Masked(n0 + n * 8 + 2 * quad_col + (e & 1), row_pos[e >> 1], p.sliding_window)) {
            x = -INFINITY;
          }
          s[n][e] = x;
        }
      }

      // Online softmax; a row is spread over the 4 lanes of a quad.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float m = row_max[h];
#pragma unroll
        for (int n = 0; n < kNTiles; ++n) m = fmaxf(m, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
        // A row with every key masked so far keeps max -inf: subtract 0 so
        // that exp2f gives 0, not NaN.
        const float base = m == -INFINITY ? 0.0f : m;
        const float alpha = exp2f(row_max[h] - base);
        row_max[h] = m;
        row_sum[h] *= alpha;
#pragma unroll
        for (int d = 0; d < kDTiles; ++d) {
          o[d][2 * h] *= alpha;
          o[d][2 * h + 1] *= alpha;
        }
#pragma unroll
        for (int n = 0; n < kNTiles; ++n) {
          s[n][2 * h] = exp2f(s[n][2 * h] - base);
          s[n][2 * h + 1] = exp2f(s[n][2 * h + 1] - base);
        }
      }

      // O += P V. The S accumulators of n-tiles 2kk, 2kk + 1 are the A
      // fragment of k-step kk. V is stored [key][dim], so the B operand comes
      // through ldmatrix.trans: matrices (keys 0-7, dims 0-7), (8-15, 0-7),
      // (0-7, 8-15), (8-15, 8-15) = b0, b1 of d-tiles 2dd and 2dd + 1.
      const T* const v_frag_base = v_tile + ((lane & 7) + ((lane >> 3) & 1) * 8) * kStride + (lane >> 4) * 8;
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        uint32_t a[4];
        a[0] = PackRounded<T>(s[2 * kk][0], s[2 * kk][1], row_sum[0]);
        a[1] = PackRounded<T>(s[2 * kk][2], s[2 * kk][3], row_sum[1]);
        a[2] = PackRounded<T>(s[2 * kk + 1][0], s[2 * kk + 1][1], row_sum[0]);
        a[3] = PackRounded<T>(s[2 * kk + 1][2], s[2 * kk + 1][3], row_sum[1]);
#pragma unroll
        for (int dd = 0; dd < kHeadDim / 16; ++dd) {
          uint32_t b[4];
          LdMatrixX4Trans(b, v_frag_base + kk * 16 * kStride + dd * 16);
          Mma<T>(o[2 * dd], a, b[0], b[1]);
          Mma<T>(o[2 * dd + 1], a, b[2], b[3]);
        }
      }
      __syncthreads();  // all warps are done with this stage before it is refilled
    }
    if (num_tiles == 0) {  // only for inconsistent inputs (q_len > seq_len): rows see no key, output 0
      CpAsyncWait<0>();
      __syncthreads();
    }

    // Normalise, round once, and stage through this warp's own Q rows (no
    // longer read) so that the stores to out are whole 16-byte chunks.
    T* const staged = sQ + warp * 16 * kStride;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = row_sum[h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      T* const dst = staged + (quad_row + 8 * h) * kStride + 2 * quad_col;
#pragma unroll
      for (int d = 0; d < kDTiles; ++d) {
        const uint32_t v = Pack<T>(o[d][2 * h] * inv, o[d][2 * h + 1] * inv);
        *reinterpret_cast<uint32_t*>(dst + d * 8) = v;
      }
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 16 * kChunks / 32; ++i) {
      const int c = lane + 32 * i, r = c / kChunks, ch = c % kChunks;
      const int row = t.t0 + warp * 16 + r;
      if (row < t.rows) {
        *reinterpret_cast<uint4*>(out + RowOffset(p, t, row, kv_head, kHeadDim) + ch * 8) =
            *reinterpret_cast<const uint4*>(staged + r * kStride + ch * 8);
      }
    }
    __syncthreads();  // shared memory is refilled for the next sequence (grid.z < num_seqs only)
  }
}

// ---------------------------------------------------------------------------
// float32: CUDA cores. 16 rows x 32 keys per step; each warp owns 4 rows for
// the scores and softmax (one key per lane), then every thread updates
// head_dim / 8 fixed elements of O.

template <int kHeadDim>
struct SimtTile {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = 16;
  static constexpr int kBlockN = 32;  // one key per lane
  static constexpr int kRowsPerWarp = kBlockM / kWarps;
  static constexpr int kKStride = kHeadDim + 1;  // odd: lane-indexed K rows hit distinct banks
  static constexpr int kVec = kHeadDim / 4;      // float4 per row
  static constexpr int kOutPerThread = kBlockM * kHeadDim / kThreads;
  // Q [kBlockM][kHeadDim], V [kBlockN][kHeadDim], P [kBlockM][kBlockN],
  // K [kBlockN][kKStride], per-row factors [kBlockM].
  static constexpr int kSmemBytes =
      4 * (kBlockM * kHeadDim + kBlockN * kHeadDim + kBlockM * kBlockN + kBlockN * kKStride + kBlockM);
  static_assert(kBlockN * kVec % kThreads == 0 && kBlockM * kHeadDim % kThreads == 0);
};

template <int kHeadDim>
__global__ void __launch_bounds__(SimtTile<kHeadDim>::kThreads) PrefillAttentionSimtKernel(const PrefillParams p) {
  using Tile = SimtTile<kHeadDim>;
  constexpr int kThreads = Tile::kThreads, kBlockM = Tile::kBlockM, kBlockN = Tile::kBlockN;
  constexpr int kKStride = Tile::kKStride, kVec = Tile::kVec, kRowsPerWarp = Tile::kRowsPerWarp;

  extern __shared__ __align__(16) float shared_f32[];
  float* const sQ = shared_f32;                 // [kBlockM][kHeadDim]
  float* const sV = sQ + kBlockM * kHeadDim;    // [kBlockN][kHeadDim]
  float* const sP = sV + kBlockN * kHeadDim;    // [kBlockM][kBlockN]
  float* const sK = sP + kBlockM * kBlockN;     // [kBlockN][kKStride]
  float* const sRow = sK + kBlockN * kKStride;  // [kBlockM]: rescale factors, then row sums
  const float* const q = static_cast<const float*>(p.q);
  float* const out = static_cast<float*>(p.out);
  const float* const k_cache = static_cast<const float*>(p.k_cache);
  const float* const v_cache = static_cast<const float*>(p.v_cache);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int kv_head = blockIdx.y;
  const int m_tile = gridDim.x - 1 - blockIdx.x;

  for (int seq = blockIdx.z; seq < p.num_seqs; seq += gridDim.z) {
    RowTile t;
    if (!MakeRowTile(p, seq, m_tile, kBlockM, t)) continue;

    for (int c = tid; c < kBlockM * kVec; c += kThreads) {
      const int r = c / kVec, v = c % kVec;
      float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (t.t0 + r < t.rows) {
        x = *reinterpret_cast<const float4*>(q + RowOffset(p, t, t.t0 + r, kv_head, kHeadDim) + 4 * v);
      }
      *reinterpret_cast<float4*>(sQ + r * kHeadDim + 4 * v) = x;
    }

    // Softmax state of this warp's rows warp + 4 * e, the same in every lane.
    int row_pos[kRowsPerWarp];
    float row_max[kRowsPerWarp], row_sum[kRowsPerWarp];
#pragma unroll
    for (int e = 0; e < kRowsPerWarp; ++e) {
      row_pos[e] = t.first_pos + (t.t0 + warp + Tile::kWarps * e) / p.group;
      row_max[e] = -INFINITY;
      row_sum[e] = 0.0f;
    }
    float o[Tile::kOutPerThread];
#pragma unroll
    for (int i = 0; i < Tile::kOutPerThread; ++i) o[i] = 0.0f;

    const int n_begin = t.k_begin - t.k_begin % kBlockN;
    for (int n0 = n_begin; n0 < t.k_end; n0 += kBlockN) {
      __syncthreads();  // the last step's readers of K, V, P are done
#pragma unroll
      for (int i = 0; i < kBlockN * kVec / kThreads; ++i) {
        const int c = tid + i * kThreads, r = c / kVec, v = c % kVec;
        const int j = n0 + r;
        float4 kx = make_float4(0.0f, 0.0f, 0.0f, 0.0f), vx = kx;
        if (j >= t.k_begin && j < t.k_end) {
          const int64_t src = CacheOffset(p, seq, j, kv_head, kHeadDim) + 4 * v;
          kx = *reinterpret_cast<const float4*>(k_cache + src);
          vx = *reinterpret_cast<const float4*>(v_cache + src);
        }
        float* const dk = sK + r * kKStride + 4 * v;
        dk[0] = kx.x;
        dk[1] = kx.y;
        dk[2] = kx.z;
        dk[3] = kx.w;
        *reinterpret_cast<float4*>(sV + r * kHeadDim + 4 * v) = vx;
      }
      __syncthreads();

      const int key = n0 + lane;
#pragma unroll
      for (int e = 0; e < kRowsPerWarp; ++e) {
        const int r = warp + Tile::kWarps * e;
        float dot = 0.0f;
#pragma unroll 16
        for (int d = 0; d < kHeadDim; ++d) dot = fmaf(sQ[r * kHeadDim + d], sK[lane * kKStride + d], dot);
        float x = dot * p.scale_log2;
        if (Masked(key, row_pos[e], p.sliding_window)) x = -INFINITY;
        float m = fmaxf(row_max[e], x);
#pragma unroll
        for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
        const float base = m == -INFINITY ? 0.0f : m;
        const float alpha = exp2f(row_max[e] - base);
        const float prob = exp2f(x - base);
        float sum = prob;
#pragma unroll
        for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
        row_max[e] = m;
        row_sum[e] = row_sum[e] * alpha + sum;
        sP[r * kBlockN + lane] = prob;
        if (lane == 0) sRow[r] = alpha;
      }
      __syncthreads();

#pragma unroll
      for (int i = 0; i < Tile::kOutPerThread; ++i) {
        const int c = tid + i * kThreads, r = c / kHeadDim, d = c % kHeadDim;
        float acc = o[i] * sRow[r];
#pragma unroll 8
        for (int n = 0; n < kBlockN; ++n) acc = fmaf(sP[r * kBlockN + n], sV[n * kHeadDim + d], acc);
        o[i] = acc;
      }
    }

    __syncthreads();  // sRow's rescale factors are read
    if (lane == 0) {
#pragma unroll
      for (int e = 0; e < kRowsPerWarp; ++e) sRow[warp + Tile::kWarps * e] = row_sum[e];
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < Tile::kOutPerThread; ++i) {
      const int c = tid + i * kThreads, r = c / kHeadDim, d = c % kHeadDim;
      const float l = sRow[r];
      if (t.t0 + r < t.rows) out[RowOffset(p, t, t.t0 + r, kv_head, kHeadDim) + d] = l > 0.0f ? o[i] / l : 0.0f;
    }
    __syncthreads();  // shared memory is refilled for the next sequence
  }
}

// ---------------------------------------------------------------------------
// Launch.

template <typename Kernel>
cudaError_t LaunchKernel(Kernel kernel, int threads, int smem_bytes, int rows_per_block,
                         const PagedAttentionArgs& args, const PrefillParams& params, cudaStream_t stream) {
  const int64_t m_tiles =
      (static_cast<int64_t>(args.max_query_len) * params.group + rows_per_block - 1) / rows_per_block;
  if (m_tiles == 0) return cudaSuccess;
  if (m_tiles > INT32_MAX / rows_per_block) return cudaErrorInvalidConfiguration;
  if (smem_bytes > 48 * 1024) {
    // Not a synchronisation; allowed while a stream is being captured.
    const cudaError_t error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
    if (error != cudaSuccess) return error;
  }
  const dim3 grid(static_cast<unsigned>(m_tiles), args.num_kv_heads, std::min(args.num_seqs, kMaxGridZ));
  kernel<<<grid, threads, smem_bytes, stream>>>(params);
  return cudaGetLastError();
}

template <typename T, int kHeadDim>
cudaError_t LaunchFor(const PagedAttentionArgs& args, const PrefillParams& params, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, float>) {
    using Tile = SimtTile<kHeadDim>;
    return LaunchKernel(PrefillAttentionSimtKernel<kHeadDim>, Tile::kThreads, Tile::kSmemBytes, Tile::kBlockM, args,
                        params, stream);
  } else {
    using Tile = MmaTile<kHeadDim>;
    return LaunchKernel(PrefillAttentionMmaKernel<T, kHeadDim>, Tile::kThreads, Tile::kSmemBytes, Tile::kBlockM,
                        args, params, stream);
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

cudaError_t LaunchPrefillAttention(const PagedAttentionArgs& args, cudaStream_t stream) {
  // The kernels move head vectors in 16-byte pieces.
  if (!Aligned16(args.q) || !Aligned16(args.out) || !Aligned16(args.k_cache) || !Aligned16(args.v_cache)) {
    return cudaErrorMisalignedAddress;
  }
  PrefillParams params;
  params.q = args.q;
  params.out = args.out;
  params.k_cache = args.k_cache;
  params.v_cache = args.v_cache;
  params.block_tables = args.block_tables;
  params.seq_lens = args.seq_lens;
  params.query_start = args.query_start;
  params.bt_seq_stride = args.bt_seq_stride;
  params.bt_block_stride = args.bt_block_stride;
  params.num_seqs = args.num_seqs;
  params.num_heads = args.num_heads;
  params.num_kv_heads = args.num_kv_heads;
  params.group = args.num_heads / args.num_kv_heads;
  params.block_size = args.block_size;
  params.sliding_window = args.sliding_window;
  params.scale_log2 = args.scale * kLog2e;
  return DispatchDType(args.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    switch (args.head_dim) {
      case 16: return LaunchFor<T, 16>(args, params, stream);
      case 32: return LaunchFor<T, 32>(args, params, stream);
      case 64: return LaunchFor<T, 64>(args, params, stream);
      case 128: return LaunchFor<T, 128>(args, params, stream);
      case 256: return LaunchFor<T, 256>(args, params, stream);
    }
    return cudaErrorInvalidValue;
  });
}

}  // namespace gantry::cuda
