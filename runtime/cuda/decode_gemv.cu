// Up to four decode rows times a weight matrix, with the element-wise work
// around the product fused in (kernels.h, DecodeGemv). At small batches a
// decode step is a stream of ~15 GB of weights through four products per
// layer; cuBLAS reads the small ones (o: 4096 x 4096, qkv: 6144 x 4096) at
// 2.8-3.0 TB/s, adds a split-K reduce kernel to o and down, picks its
// kernels (and so its rounding) by batch size, and leaves RMSNorm and SiLU
// as kernels of their own between the products (docs/PERFORMANCE.md). Here:
//
// - The products run on tensor cores (mma m16n8k16) with the decode rows as
//   columns of the 8-column B operand: any row count costs the same
//   instructions and the same weight traffic, and a row's arithmetic never
//   depends on the others (missing rows are zeros). Rows are capped at 4
//   (kDecodeGemvMaxRows): staging and normalising the input costs each
//   block about 1 us a row (qkv 20.0 us at 1 row, 28.3 at 8), so at 8 rows
//   a step is 4.6% slower than cuBLAS's (H100, 8B shapes). Two earlier versions lost: one row per
//   fmaf chain on CUDA cores is instruction-bound past 2 rows (8 rows read
//   weights at 0.9-1.5 TB/s), and mma fragments loaded straight from global
//   memory touch 16 rows x 64 bytes per load (137 against 179 tokens/s).
// - A block owns units of 16 weight rows (16 gate rows and their 16 up rows
//   for kSiluMul), looping over units; its 8 warps split k and stream their
//   slices into shared memory with cp.async, kStages 64-wide k stages in
//   flight per warp across unit boundaries, each load 4 rows x 128 bytes,
//   XOR-swizzled so the fragment reads are free of bank conflicts. The
//   mma's k order is a permutation of k that the A and B fragments share, so
//   every fragment register is one 32-bit word of a 16-byte shared-memory
//   read. The warps' partial sums meet in shared memory: no reduce kernel.
// - The first stages of weights are requested before the programmatic-
//   dependent-launch wait: no kernel writes weights, so under PDL those
//   loads overlap the tail of the kernel before (attention, rotary). With
//   l2_prefetch_units, whole units' rows are also asked into L2 there (one
//   bulk prefetch a row), for the product after attention, which leaves
//   most of the memory bandwidth idle for its ~10 us a layer at batch 1.
// - Inputs to normalise (RMSNorm of the residual stream, as RmsNorm computes
//   it) are staged once per block in shared memory, normalised there; plain
//   inputs (o's and down's, 8 x 14336 for down) travel with each stage's
//   weights instead.
// - The epilogue adds the bias, rounds to the storage type once, and stores,
//   adds into the residual stream, applies SiLU(gate) * up, or widens to
//   float32 (logits), with transformers' rounding points (kernels.h).
// - kRopeCache (the qkv projection) takes RopeAndCacheWrite's work too: a
//   unit's 16 rows are 8 consecutive elements i of one head and their
//   rotation partners i + head_dim / 2, which the mma puts in one lane's
//   accumulators j and j + 2, so one thread holds both halves of a pair and
//   rotates it (q) or writes it to the paged cache (k rotated, v as is) with
//   rope.cuh's arithmetic, as RopeAndCacheWrite. That saves a kernel per
//   layer and the qkv round trip through memory; the bits are those of
//   kStore + that kernel.
//   Each block makes its rows' sin/cos table in shared memory before the
//   programmatic-dependent-launch wait (positions and frequencies are
//   uploaded, never written by a kernel), overlapping the kernel before.
// - Each warp counts its next weight request's unit and stage rather than
//   dividing the item number: those 64-bit divisions (and kRopeCache's
//   head-of-unit division) in every request were 27% more instructions
//   and 13% more time for the fused qkv kernel (docs/PERFORMANCE.md).
//
// Numerics: each output is float32 mma accumulation over each warp's k slice
// in a fixed order, then the 8 warps' sums added in warp order: fixed by k
// alone, independent of the grid and of the other rows, so a row's result
// does not depend on where it runs or on the batch beside it (a seeded
// sequence samples the same tokens alone and in a batch).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/dtype.cuh"
#include "runtime/cuda/launch.h"
#include "runtime/cuda/pdl.cuh"
#include "runtime/cuda/ptx.cuh"
#include "runtime/cuda/rope.cuh"

namespace gantry::cuda {
namespace {

constexpr int kWarps = 8;  // per block
constexpr int kThreads = kWarps * 32;
constexpr int kStageVecs = 8;  // 16-byte vectors of a weight row per stage (64 k)
constexpr int kStages = 4;     // stages in flight per warp
constexpr int kRowBytes = kStageVecs * 16;
constexpr int kRopeOut = static_cast<int>(GemvOutput::kRopeCache);

// kRopeCache's destinations (RopeCacheArgs typed, offset to a launch's rows).
template <typename T>
struct RopeTarget {
  const int32_t* positions = nullptr;     // [rows]
  const int64_t* slot_mapping = nullptr;  // [rows]; < 0: k and v not written
  const float* inv_freq = nullptr;        // [head_dim / 2]
  T* q_out = nullptr;                     // [rows, num_heads, head_dim]
  T* k_cache = nullptr;                   // [slots, num_kv_heads, head_dim]
  T* v_cache = nullptr;                   // [slots, num_kv_heads, head_dim]
  int num_heads = 0, num_kv_heads = 0, head_dim = 0;
};

// Tiles of 16 weight rows in a unit: gate and up for kSiluMul, else one.
template <int kOut>
constexpr int TilesOf() {
  return kOut == static_cast<int>(GemvOutput::kSiluMul) ? 2 : 1;
}

// Rows of a stage: the weight rows, then (plain inputs) the 8 input rows'
// slices.
template <int kOut, bool kNorm>
constexpr int StageRows() {
  return TilesOf<kOut>() * 16 + (kNorm ? 0 : 8);
}

// Shared memory of a block: the normalised input (kNorm), then each warp's
// stages.
template <int kOut, bool kNorm>
constexpr size_t WarpStageBytes() {
  return static_cast<size_t>(kStages) * StageRows<kOut, kNorm>() * kRowBytes;
}
template <int kOut, bool kNorm>
size_t SmemBytes(int rows, int64_t k) {
  const size_t input = kNorm ? static_cast<size_t>(rows) * static_cast<size_t>(k) * 2 : 0;
  return input + kWarps * WarpStageBytes<kOut, kNorm>();
}

// The 8 values of a 16-byte vector of T as float32.
template <typename T>
__device__ __forceinline__ void Unpack(const uint4& v, float (&out)[8]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      out[2 * i] = __uint_as_float(words[i] << 16);
      out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    } else {
      __half2 h;
      static_assert(sizeof(h) == 4, "half2 is one word");
      memcpy(&h, &words[i], 4);
      const float2 f = __half22float2(h);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
}

template <typename T>
__device__ __forceinline__ uint4 Pack8(const float (&in)[8]) {
  uint32_t words[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const T lo = FromFloat<T>(in[2 * i]), hi = FromFloat<T>(in[2 * i + 1]);
    uint16_t a, b;
    memcpy(&a, &lo, 2);
    memcpy(&b, &hi, 2);
    words[i] = static_cast<uint32_t>(a) | (static_cast<uint32_t>(b) << 16);
  }
  return make_uint4(words[0], words[1], words[2], words[3]);
}

__device__ __forceinline__ float WarpSum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// Stages x [rows, vecs 16-byte vectors] in shared memory; with
// norm_weight, each row as RmsNorm: normalised = dtype(x * rsqrt(mean(x^2) +
// eps)), input = dtype(norm_weight * normalised). All rows at once (their
// loads in flight together, two barriers), each row's sum of squares in the
// same order whatever `rows` is. Ends with a block barrier.
template <typename T>
__device__ __forceinline__ void StageNormalisedInput(uint4* xs, const uint4* x, const uint4* norm_weight, int vecs,
                                                     int k, int rows, float eps) {
  __shared__ float warp_sums[kDecodeGemvMaxRows][kWarps];
  float sums[kDecodeGemvMaxRows] = {};
  for (int i = threadIdx.x; i < vecs; i += kThreads) {
#pragma unroll
    for (int r = 0; r < kDecodeGemvMaxRows; ++r) {
      if (r >= rows) break;
      const uint4 v = x[r * vecs + i];
      xs[r * vecs + i] = v;
      float f[8];
      Unpack<T>(v, f);
#pragma unroll
      for (int e = 0; e < 8; ++e) sums[r] += f[e] * f[e];
    }
  }
#pragma unroll
  for (int r = 0; r < kDecodeGemvMaxRows; ++r) {
    if (r >= rows) break;
    const float sum = WarpSum(sums[r]);
    if (threadIdx.x % 32 == 0) warp_sums[r][threadIdx.x / 32] = sum;
  }
  __syncthreads();
  float inv_rms[kDecodeGemvMaxRows];
#pragma unroll
  for (int r = 0; r < kDecodeGemvMaxRows; ++r) {
    if (r >= rows) break;
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += warp_sums[r][w];
    inv_rms[r] = rsqrtf(total / static_cast<float>(k) + eps);
  }
  // Each thread rewrites the vectors it staged: no barrier in between.
  for (int i = threadIdx.x; i < vecs; i += kThreads) {
    float g[8];
    Unpack<T>(norm_weight[i], g);
#pragma unroll
    for (int r = 0; r < kDecodeGemvMaxRows; ++r) {
      if (r >= rows) break;
      float f[8];
      Unpack<T>(xs[r * vecs + i], f);
#pragma unroll
      for (int e = 0; e < 8; ++e) f[e] = g[e] * Round<T>(f[e] * inv_rms[r]);
      xs[r * vecs + i] = Pack8<T>(f);
    }
  }
  __syncthreads();
}

// Unit u's first weight row (tile 0's row 0); TileRowAt adds tile g's row i
// to it, clamped by the caller to the tile's last valid row: rows past the
// end are read, never stored. kRopeCache (rope_half = head_dim / 2): rows
// 0..7 are elements 8 c .. 8 c + 7 of a head, rows 8..15 their partners
// rope_half later (c = the unit's place among the head's rope_half / 8
// units).
template <int kOut>
__device__ __forceinline__ int64_t TileBase(int64_t unit, int rope_half) {
  if constexpr (kOut == kRopeOut) {
    const int64_t per_head = rope_half / 8;
    return (unit / per_head) * (2 * rope_half) + (unit % per_head) * 8;
  } else {
    return unit * 16;
  }
}
template <int kOut>
__device__ __forceinline__ int64_t TileRowAt(int64_t base, int g, int i, int64_t n, int rope_half) {
  if constexpr (kOut == static_cast<int>(GemvOutput::kSiluMul)) {
    return g * (n / 2) + base + i;
  } else if constexpr (kOut == kRopeOut) {
    return base + (i >= 8 ? rope_half : 0) + (i & 7);
  } else {
    return base + i;
  }
}
template <int kOut>
__device__ __forceinline__ int64_t TileRow(int64_t unit, int g, int i, int64_t n, int rope_half) {
  return TileRowAt<kOut>(TileBase<kOut>(unit, rope_half), g, i, n, rope_half);
}
template <int kOut>
__device__ __forceinline__ int64_t TileEnd(int g, int64_t n) {
  return kOut == static_cast<int>(GemvOutput::kSiluMul) ? (g + 1) * (n / 2) : n;
}

// Stores element i < head_dim / 2 of one head of input row `in_row` and its
// partner i + head_dim / 2, given as the projection rounded to T (a, b), as
// RopeCacheKernel does: q rotated into q_out, k rotated and v as is into
// the cache slot (none when the slot is < 0). cos_table and sin_table:
// [rows, kMaxRopeHalf], each row's cos/sin of position * inv_freq rounded to T.
template <typename T>
__device__ __forceinline__ void StoreRotatedPair(const RopeTarget<T>& t, int in_row, int64_t row, float a, float b,
                                                 const float (*cos_table)[kMaxRopeHalf],
                                                 const float (*sin_table)[kMaxRopeHalf]) {
  const int rope_half = t.head_dim / 2;
  const int head = static_cast<int>(row / t.head_dim);
  const int i = static_cast<int>(row % t.head_dim);
  T* dst = nullptr;
  if (head < t.num_heads) {
    dst = t.q_out + (static_cast<int64_t>(in_row) * t.num_heads + head) * t.head_dim;
  } else {
    const int64_t slot = t.slot_mapping[in_row];
    if (slot < 0) return;
    const int kv_head = head - t.num_heads;
    if (kv_head >= t.num_kv_heads) {  // v: copied as is
      dst = t.v_cache + (slot * t.num_kv_heads + kv_head - t.num_kv_heads) * t.head_dim;
      dst[i] = FromFloat<T>(a);
      dst[i + rope_half] = FromFloat<T>(b);
      return;
    }
    dst = t.k_cache + (slot * t.num_kv_heads + kv_head) * t.head_dim;
  }
  RotatePair<T>(a, b, cos_table[in_row][i], sin_table[in_row][i], &dst[i], &dst[i + rope_half]);
}

// Byte offset of vector v of row r in a stage: the XOR puts rows 2j and
// 2j + 1 of one fragment read on different banks.
__device__ __forceinline__ int StageOffset(int r, int v) { return r * kRowBytes + ((v ^ ((r & 1) << 2)) << 4); }

// grid: blocks of kWarps warps; block b takes units b, b + gridDim.x, ...
// Warp w takes stages [S w / 8, S (w + 1) / 8) of each unit's k (S = k / 64
// rounded up). Lane l = 4 q + c: weight rows q and q + 8 of each tile times
// input row q, at vectors 4 m + c of each stage (m = 0, 1). Dynamic shared
// memory: SmemBytes.
template <typename T, int kOut, bool kNorm>
__global__ void __launch_bounds__(kThreads, 1)
    DecodeGemvKernel(const T* __restrict__ w,            // [n, k]
                     const T* __restrict__ bias,         // [n] or nullptr
                     const T* __restrict__ x,            // [rows, k]
                     const T* __restrict__ norm_weight,  // [k] (kNorm)
                     void* __restrict__ y,               // [rows, ...] see GemvOutput
                     const RopeTarget<T> rope,           // kRopeCache's destinations
                     int64_t n, int k, int rows, float eps,
                     int l2_prefetch_units) {            // DecodeGemvArgs::l2_prefetch_units
  constexpr bool kSilu = kOut == static_cast<int>(GemvOutput::kSiluMul);
  constexpr int kTiles = TilesOf<kOut>();
  constexpr int kWeightRows = kTiles * 16;
  constexpr int kStageRows = StageRows<kOut, kNorm>();
  constexpr int kCopies = kWeightRows * kStageVecs / 32;  // cp.async of weights per lane per stage
  extern __shared__ uint4 smem[];
  __shared__ float partial[kWarps][kTiles][4][32];  // [warp, tile, accumulator, lane]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int q = lane / 4, c = lane % 4;
  const int vecs = k / 8;
  const int stages = (vecs + kStageVecs - 1) / kStageVecs;
  const int stage_begin = stages * warp / kWarps;
  const int per_unit = stages * (warp + 1) / kWarps - stage_begin;  // may be 0
  const int64_t units = kSilu ? (n / 2 + 15) / 16 : (n + 15) / 16;
  const int rope_half = rope.head_dim / 2;  // kRopeCache
  const int64_t my_units = (units - blockIdx.x + gridDim.x - 1) / gridDim.x;
  const int64_t items = my_units * per_unit;  // (unit, stage) pairs of this warp, in order
  const int64_t y_stride = kSilu ? n / 2 : n;  // elements between rows of y
  uint4* xs = smem;  // [rows, vecs] the normalised input (kNorm)
  char* stage_base = reinterpret_cast<char*>(smem) + (kNorm ? static_cast<size_t>(rows) * vecs * 16 : 0) +
                     warp * WarpStageBytes<kOut, kNorm>();

  // The next weights' unit (its first row) and stage. Weights are requested
  // in item order (kStages - 1 before the loop, then one a step), so these
  // advance by counting: dividing the item number in every request cost
  // kRopeCache 27% more issued instructions than kStore on the H100.
  int64_t request_unit = blockIdx.x;
  int64_t request_base = TileBase<kOut>(request_unit, rope_half);
  int request_stage = 0;
  // Requests item `item`'s weights and (plain inputs) its input slice into
  // its stage buffer, either or both; commits a group either way (empty
  // groups keep the wait counts uniform).
  auto request = [&](int64_t item, bool weights, bool input) {
    if (item < items) {
      const int stage = weights ? request_stage : static_cast<int>(item % per_unit);
      const int v = (stage_begin + stage) * kStageVecs + lane % kStageVecs;
      char* buffer = stage_base + (item % kStages) * (kStageRows * kRowBytes);
      if (weights) {
#pragma unroll
        for (int i = 0; i < kCopies; ++i) {
          const int r = lane / kStageVecs + 4 * i;  // row of the stage
          const int g = r / 16;
          const int64_t row =
              std::min(TileRowAt<kOut>(request_base, g, r % 16, n, rope_half), TileEnd<kOut>(g, n) - 1);
          CpAsync16(buffer + StageOffset(r, lane % kStageVecs), w + row * k + static_cast<int64_t>(v) * 8, v < vecs);
        }
        if (++request_stage == per_unit) {
          request_stage = 0;
          request_unit += gridDim.x;
          request_base = TileBase<kOut>(request_unit, rope_half);
        }
      }
      if (!kNorm && input) {
        // The plain input's slice travels with the weights (a load from
        // global memory in the loop would stall it); missing rows are zeros.
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int r = lane / kStageVecs + 4 * i;
          CpAsync16(buffer + StageOffset(kWeightRows + r, lane % kStageVecs), x + static_cast<int64_t>(r) * k + v * 8,
                    r < rows && v < vecs);
        }
      }
    }
    CpAsyncCommit();
  };

  // The first stages' weights before the wait (no kernel writes weights);
  // their inputs only after it, since the kernel before writes them.
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) request(i, true, false);

  // The first units' weight rows into L2, also before the wait (see
  // DecodeGemvArgs::l2_prefetch_units): one bulk prefetch a row.
  if (l2_prefetch_units > 0) {
    const int prefetch_rows = static_cast<int>(std::min<int64_t>(l2_prefetch_units, my_units)) * kWeightRows;
    for (int e = threadIdx.x; e < prefetch_rows; e += kThreads) {
      const int64_t unit = blockIdx.x + static_cast<int64_t>(e / kWeightRows) * gridDim.x;
      const int g = (e % kWeightRows) / 16;
      const int64_t row = TileRow<kOut>(unit, g, e % 16, n, rope_half);
      if (row < TileEnd<kOut>(g, n)) PrefetchL2(w + row * k, static_cast<uint32_t>(k) * 2);
    }
  }

  // kRopeCache: the rows' sin/cos, before the wait (see the header). Read
  // after the barrier that precedes every epilogue.
  [[maybe_unused]] float(*cos_table)[kMaxRopeHalf] = nullptr;
  [[maybe_unused]] float(*sin_table)[kMaxRopeHalf] = nullptr;
  if constexpr (kOut == kRopeOut) {
    __shared__ float rope_cos[kDecodeGemvMaxRows][kMaxRopeHalf], rope_sin[kDecodeGemvMaxRows][kMaxRopeHalf];
    cos_table = rope_cos;
    sin_table = rope_sin;
    for (int e = threadIdx.x; e < rows * rope_half; e += kThreads) {
      const int r = e / rope_half, i = e % rope_half;
      RopeCosSin<T>(static_cast<float>(rope.positions[r]), rope.inv_freq[i], &rope_cos[r][i], &rope_sin[r][i]);
    }
  }

  WaitForPriorGrid();  // x (and y, for kAddToResidual) come from the kernels before
  AllowDependentLaunch();
  if constexpr (kNorm) {
    StageNormalisedInput<T>(xs, reinterpret_cast<const uint4*>(x), reinterpret_cast<const uint4*>(norm_weight), vecs,
                            k, rows, eps);
  } else {
#pragma unroll
    for (int i = 0; i < kStages - 1; ++i) request(i, false, true);
    // Everything requested so far lands before the loop, whose waits count
    // only its own groups.
    CpAsyncWait<0>();
  }
  const uint4* xrow = xs + q * vecs;  // (kNorm)

  int64_t item = 0;
  for (int64_t u = 0; u < my_units; ++u) {
    const int64_t unit = blockIdx.x + u * gridDim.x;
    float acc[kTiles][4] = {};
    for (int s = 0; s < per_unit; ++s, ++item) {
      request(item + kStages - 1, true, true);
      CpAsyncWait<kStages - 1>();  // this lane's copies of `item` have landed
      __syncwarp();                // and the other lanes'
      const char* buffer = stage_base + (item % kStages) * (kStageRows * kRowBytes);
      const int v0 = (stage_begin + s) * kStageVecs;
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        const int v = 4 * m + c;
        uint4 xv = make_uint4(0, 0, 0, 0);
        if constexpr (kNorm) {
          if (q < rows && v0 + v < vecs) xv = xrow[v0 + v];
        } else {
          xv = *reinterpret_cast<const uint4*>(buffer + StageOffset(kWeightRows + q, v));
        }
        __syncwarp();  // mma.sync needs the whole warp converged
#pragma unroll
        for (int g = 0; g < kTiles; ++g) {
          const uint4 lo = *reinterpret_cast<const uint4*>(buffer + StageOffset(16 * g + q, v));
          const uint4 hi = *reinterpret_cast<const uint4*>(buffer + StageOffset(16 * g + q + 8, v));
          Mma<T>(acc[g], lo.x, hi.x, lo.y, hi.y, xv.x, xv.y);
          Mma<T>(acc[g], lo.z, hi.z, lo.w, hi.w, xv.z, xv.w);
        }
      }
      __syncwarp();  // the buffer is requested again next
    }
#pragma unroll
    for (int g = 0; g < kTiles; ++g) {
#pragma unroll
      for (int j = 0; j < 4; ++j) partial[warp][g][j][lane] = acc[g][j];
    }
    __syncthreads();
    // Threads 0..127 finish accumulator j of lane l (kSiluMul: the gate with
    // its up partner), adding the warps' partial sums in order. Accumulator
    // j of lane l = 4 q' + c' is tile row q' (+ 8 for j >= 2) times input
    // row 2 c' + (j & 1). kRopeCache: threads 0..63 each finish j and j + 2,
    // a rotation pair.
    if constexpr (kOut == kRopeOut) {
      if (threadIdx.x < 64) {
        const int j = threadIdx.x / 32, l = threadIdx.x % 32;
        float dot0 = 0.0f, dot1 = 0.0f;
#pragma unroll
        for (int wp = 0; wp < kWarps; ++wp) {
          dot0 += partial[wp][0][j][l];
          dot1 += partial[wp][0][j + 2][l];
        }
        const int in_row = 2 * (l % 4) + j;
        if (in_row < rows) {
          const int64_t row = TileRow<kOut>(unit, 0, l / 4, n, rope_half);
          const float a = Round<T>(dot0 + (bias != nullptr ? ToFloat(bias[row]) : 0.0f));
          const float b = Round<T>(dot1 + (bias != nullptr ? ToFloat(bias[row + rope_half]) : 0.0f));
          StoreRotatedPair(rope, in_row, row, a, b, cos_table, sin_table);
        }
      }
    } else if (threadIdx.x < 128) {
      const int j = threadIdx.x / 32, l = threadIdx.x % 32;
      float dot0 = 0.0f, dot1 = 0.0f;
#pragma unroll
      for (int wp = 0; wp < kWarps; ++wp) {
        dot0 += partial[wp][0][j][l];
        if constexpr (kSilu) dot1 += partial[wp][kTiles - 1][j][l];
      }
      const int tile_row = l / 4 + (j >= 2 ? 8 : 0);
      const int in_row = 2 * (l % 4) + (j & 1);
      const int64_t row = TileRow<kOut>(unit, 0, tile_row, n, rope_half);
      if (in_row < rows && row < TileEnd<kOut>(0, n)) {
        if constexpr (kSilu) {
          const int64_t up_row = TileRow<kOut>(unit, 1, tile_row, n, rope_half);
          const float gate = Round<T>(dot0 + (bias != nullptr ? ToFloat(bias[row]) : 0.0f));
          const float up = Round<T>(dot1 + (bias != nullptr ? ToFloat(bias[up_row]) : 0.0f));
          // Accurate expf and division, as SiluMul: exp(-x) may overflow to inf, giving silu = -0.
          static_cast<T*>(y)[in_row * y_stride + row] = FromFloat<T>(Round<T>(gate / (1.0f + expf(-gate))) * up);
        } else {
          const float dot = dot0 + (bias != nullptr ? ToFloat(bias[row]) : 0.0f);
          const int64_t at = in_row * y_stride + row;
          if constexpr (kOut == static_cast<int>(GemvOutput::kStore)) {
            static_cast<T*>(y)[at] = FromFloat<T>(dot);
          } else if constexpr (kOut == static_cast<int>(GemvOutput::kAddToResidual)) {
            T* residual = static_cast<T*>(y);
            residual[at] = FromFloat<T>(ToFloat(residual[at]) + Round<T>(dot));
          } else {
            static_cast<float*>(y)[at] = Round<T>(dot);
          }
        }
      }
    }
    __syncthreads();  // `partial` is rewritten by the next unit
  }
  CpAsyncWait<0>();  // no copy outlives the block (the requests past the last item are empty)
}

// An attribute of the current device, asked once per device (`fallback`
// when the query fails).
template <cudaDeviceAttr kAttr>
int DeviceAttribute(int fallback) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> values[kMaxDevices];
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    (void)cudaGetLastError();
    return fallback;
  }
  int value = values[device].load(std::memory_order_relaxed);
  if (value == 0) {
    if (cudaDeviceGetAttribute(&value, kAttr, device) != cudaSuccess || value < 1) {
      (void)cudaGetLastError();
      value = fallback;
    }
    values[device].store(value, std::memory_order_relaxed);
  }
  return value;
}

template <typename T, int kOut, bool kNorm>
cudaError_t LaunchTyped(const DecodeGemvArgs& a, const void* x, void* y, const RopeTarget<T>& rope, int rows,
                        cudaStream_t stream) {
  auto* kernel = &DecodeGemvKernel<T, kOut, kNorm>;
  const size_t smem = SmemBytes<kOut, kNorm>(rows, a.k);
  if (smem > 39 * 1024) {  // past 48 KB with the static part (up to 9 KB: kStatic below)
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem));
        e != cudaSuccess) {
      return e;
    }
  }
  const int64_t units = kOut == static_cast<int>(GemvOutput::kSiluMul) ? (a.n / 2 + 15) / 16 : (a.n + 15) / 16;
  // One block per multiprocessor, looping over units: its warps' copies stay
  // in flight across units, and it stages (and normalises) the input once.
  const int64_t blocks = std::min<int64_t>(units, DeviceAttribute<cudaDevAttrMultiProcessorCount>(132));
  return LaunchKernel(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), smem, stream,
                      static_cast<const T*>(a.w), static_cast<const T*>(a.bias), static_cast<const T*>(x),
                      static_cast<const T*>(a.norm_weight), y, rope, a.n, static_cast<int>(a.k), rows, a.eps,
                      a.l2_prefetch_units);
}

// Rows in groups whose normalised inputs fit the block's shared memory (all
// 4 up to k = 11264), each group one launch that reads the weights once.
// Rows are independent, so the grouping changes no result.
template <typename T, int kOut, bool kNorm>
cudaError_t LaunchGroups(const DecodeGemvArgs& a, cudaStream_t stream) {
  int64_t group = kDecodeGemvMaxRows;
  if constexpr (kNorm) {
    const size_t limit = static_cast<size_t>(DeviceAttribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(48 * 1024));
    constexpr size_t kStatic = 9 * 1024;  // partial sums, the norm's warp sums, kRopeCache's sin/cos table
    const size_t fixed = SmemBytes<kOut, kNorm>(0, a.k) + kStatic;
    const size_t row_bytes = static_cast<size_t>(a.k) * 2;
    if (limit < fixed + row_bytes) return cudaErrorInvalidValue;
    group = std::min<int64_t>(static_cast<int64_t>((limit - fixed) / row_bytes), kDecodeGemvMaxRows);
  }
  const int64_t x_row = a.k * 2;
  const int64_t y_row = (kOut == static_cast<int>(GemvOutput::kSiluMul) ? a.n / 2 : a.n) *
                        (kOut == static_cast<int>(GemvOutput::kFloat32) ? 4 : 2);
  for (int64_t r = 0; r < a.rows; r += group) {
    const int rows = static_cast<int>(std::min<int64_t>(group, a.rows - r));
    const void* x = static_cast<const char*>(a.x) + r * x_row;
    void* y = a.y != nullptr ? static_cast<char*>(a.y) + r * y_row : nullptr;
    RopeTarget<T> rope;
    if constexpr (kOut == kRopeOut) {
      const RopeCacheArgs& in = *a.rope;
      rope.positions = in.positions + r;
      rope.slot_mapping = in.slot_mapping + r;
      rope.inv_freq = in.inv_freq;
      rope.q_out = static_cast<T*>(in.q_out) + r * in.num_heads * in.head_dim;
      rope.k_cache = static_cast<T*>(in.k_cache);
      rope.v_cache = static_cast<T*>(in.v_cache);
      rope.num_heads = in.num_heads;
      rope.num_kv_heads = in.num_kv_heads;
      rope.head_dim = in.head_dim;
    }
    if (cudaError_t e = LaunchTyped<T, kOut, kNorm>(a, x, y, rope, rows, stream); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

template <typename T, bool kNorm>
cudaError_t LaunchOutput(const DecodeGemvArgs& a, cudaStream_t stream) {
  switch (a.output) {
    case GemvOutput::kStore: return LaunchGroups<T, static_cast<int>(GemvOutput::kStore), kNorm>(a, stream);
    case GemvOutput::kAddToResidual:
      return LaunchGroups<T, static_cast<int>(GemvOutput::kAddToResidual), kNorm>(a, stream);
    case GemvOutput::kSiluMul: return LaunchGroups<T, static_cast<int>(GemvOutput::kSiluMul), kNorm>(a, stream);
    case GemvOutput::kFloat32: return LaunchGroups<T, static_cast<int>(GemvOutput::kFloat32), kNorm>(a, stream);
    case GemvOutput::kRopeCache: return LaunchGroups<T, kRopeOut, kNorm>(a, stream);
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t LaunchForType(const DecodeGemvArgs& a, cudaStream_t stream) {
  return a.norm_weight != nullptr ? LaunchOutput<T, true>(a, stream) : LaunchOutput<T, false>(a, stream);
}

}  // namespace

cudaError_t LaunchDecodeGemv(const DecodeGemvArgs& args, cudaStream_t stream) {
  switch (args.dtype) {
    case DType::kBFloat16: return LaunchForType<__nv_bfloat16>(args, stream);
    case DType::kFloat16: return LaunchForType<__half>(args, stream);
    case DType::kFloat32: break;
  }
  return cudaErrorInvalidValue;
}

}  // namespace gantry::cuda
