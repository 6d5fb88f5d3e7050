// y = x W^T (+ bias) for decode batches of 1..8 rows (kernels.h). Every step
// of an 8B model streams all of its ~16 GB of weights through these products
// while doing two flops per weight per row, so the kernels are built to keep
// HBM busy, not the arithmetic units:
//
// bf16/fp16 (k % 8 == 0, x and W 16-byte aligned): tensor cores. A block of
// 8 warps owns 16 output features (W rows); each warp walks a slice of k
// with 16-byte streaming loads (L1 bypassed, L2 evict-first), 4 steps of
// 32 k deep, so every lane has 8 independent 16-byte W loads in flight.
// One mma.sync m16n8k16 multiplies 16 W rows by the x rows padded to 8
// (lane g of the warp supplies x row g, or zeros when g >= m). On CUDA cores
// m = 8 would cost ~10 instructions per weight (8 FMAs plus the conversions),
// close to the issue rate at 4.2 TB/s; the mma costs 1/256 of an instruction
// per weight, so m = 1 and m = 8 run at the same memory-bound speed.
// The k order inside the mma fragments is permuted so that each lane loads 8
// consecutive k (16 bytes) of a row: lane (g, t) holds k = 8t..8t+7 of the
// 32-k step, the first 4 feeding fragment columns {2t, 2t+1, 2t+8, 2t+9} of
// the first mma and the last 4 those of the second. A and B are permuted the
// same way (both hold the same k in lanes with the same t), so the product is
// unchanged.
//
// float32, and anything unaligned: CUDA cores. A warp owns 4 W rows; lane l
// reads vectors l, l + 32, ... (16 bytes, or single elements in the scalar
// fallback) and keeps a float32 sum per (x row, W row).
//
// Batch invariance: an output element's summation order depends only on k and
// the path, never on m or on the other rows of x:
//   tensor-core path: warp w accumulates its 32-k steps in increasing order
//     in one mma accumulator (the column of a row of x never mixes with other
//     columns inside an mma), then the 8 warps' partial sums are added in
//     warp order 0..7 in float32;
//   CUDA-core path: each lane adds its vectors in increasing order with fmaf,
//     then a fixed xor butterfly (offsets 16, 8, 4, 2, 1) sums the lanes.
// The bias is added in float32 after the dot product, then the value is
// rounded to the dtype once. The path depends on the dtype, k and the
// alignment of x and W: x + r * k keeps x's alignment whenever the vector
// paths apply, so a row computed alone (x pointing at it) takes the same path
// as in its batch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/dtype.cuh"
#include "runtime/cuda/launch.h"
#include "runtime/cuda/ptx.cuh"
#include "runtime/cuda/stream_load.cuh"

namespace gantry::cuda {
namespace {

// Tensor-core path: 16 W rows per block (the mma's M), 8 warps splitting k,
// each warp kUnroll steps of 32 k per iteration. 8 warps x 4 steps x 32 =
// 1024 k per block iteration: 4 iterations for k = 4096, 14 for 14336.
constexpr int kMmaRows = 16;
constexpr int kMmaWarps = 8;
constexpr int kMmaUnroll = 4;
constexpr int kStepK = 32;
constexpr int kIterK = kMmaWarps * kMmaUnroll * kStepK;

// CUDA-core path: 4 W rows per warp, 4 warps per block.
constexpr int kWarpRows = 4;
constexpr int kWarpsPerBlock = 4;

// kN values of T moved as one aligned vector.
template <typename T, int kN>
struct alignas(sizeof(T) * kN) Pack {
  T v[kN];
};

// 16 bytes of x: read by every block, so L1-cached.
__device__ __forceinline__ uint4 LoadCached(const void* p) { return __ldg(static_cast<const uint4*>(p)); }

// One 32-k step: lo/hi are rows g and g + 8 of the tile, xv row g of x, all
// at k = 8t..8t+7 of the step. Fragment registers (PTX m16n8k16 layout):
// a0 = (row g, cols 2t..2t+1), a1 = (row g+8, same), a2 = (row g, cols
// 2t+8..2t+9), a3 = (row g+8, same); b0 = (rows 2t..2t+1, col g), b1 =
// (rows 2t+8..2t+9, col g). Elements 0-3 of each load go to the first mma,
// 4-7 to the second, low element in the low half as in memory.
template <typename T>
__device__ __forceinline__ void MmaStep(float (&d)[4], const uint4& lo, const uint4& hi, const uint4& xv) {
  Mma<T>(d, lo.x, hi.x, lo.y, hi.y, xv.x, xv.y);
  Mma<T>(d, lo.z, hi.z, lo.w, hi.w, xv.z, xv.w);
}

// Needs k % 8 == 0 and 16-byte aligned x and w. grid = ceil(n / 16) blocks of
// kMmaWarps warps. Rows past n are clamped to row n - 1 for loading (their
// results are dropped), so the main loop needs no row checks.
template <typename T>
__global__ void __launch_bounds__(kMmaWarps * 32)
    SkinnyGemmMmaKernel(const T* __restrict__ x,     // [m, k]
                        const T* __restrict__ w,     // [n, k]
                        const T* __restrict__ bias,  // [n] or nullptr
                        T* __restrict__ y,           // [m, n]
                        int m, int64_t n, int64_t k) {
  __shared__ float partial[kMmaWarps][4][32];  // [warp, accumulator, lane]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kMmaRows;
  const T* w_lo = w + std::min<int64_t>(row0 + g, n - 1) * k + 8 * t;
  const T* w_hi = w + std::min<int64_t>(row0 + g + 8, n - 1) * k + 8 * t;
  // Lanes past the batch read row 0 too (the same sectors, so free) and
  // feed zero columns: a select, not a branch around the load.
  const bool has_x = g < m;
  const T* x_row = x + (has_x ? g : 0) * k + 8 * t;
  const uint64_t policy = EvictFirstPolicy();
  const uint4 zero = make_uint4(0, 0, 0, 0);

  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  // k offset of this warp's first step in the current block iteration.
  int64_t base = static_cast<int64_t>(warp) * kMmaUnroll * kStepK;
  const int64_t full_iters = k / kIterK;
  for (int64_t it = 0; it < full_iters; ++it, base += kIterK) {
    uint4 lo[kMmaUnroll], hi[kMmaUnroll], xv[kMmaUnroll];
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      lo[u] = LoadStream(w_lo + base + u * kStepK, policy);
      hi[u] = LoadStream(w_hi + base + u * kStepK, policy);
    }
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      xv[u] = LoadCached(x_row + base + u * kStepK);
      if (!has_x) xv[u] = zero;
    }
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) MmaStep<T>(acc, lo[u], hi[u], xv[u]);
  }
  if (full_iters * kIterK < k) {
    // The last, partial iteration: a lane's 8 values are all in k or all
    // out (k % 8 == 0); out-of-range ones are zeros in both operands.
    uint4 lo[kMmaUnroll], hi[kMmaUnroll], xv[kMmaUnroll];
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) {
      const bool in = base + u * kStepK + 8 * t < k;
      lo[u] = in ? LoadStream(w_lo + base + u * kStepK, policy) : zero;
      hi[u] = in ? LoadStream(w_hi + base + u * kStepK, policy) : zero;
      xv[u] = in ? LoadCached(x_row + base + u * kStepK) : zero;
      if (!has_x) xv[u] = zero;
    }
#pragma unroll
    for (int u = 0; u < kMmaUnroll; ++u) MmaStep<T>(acc, lo[u], hi[u], xv[u]);
  }

#pragma unroll
  for (int c = 0; c < 4; ++c) partial[warp][c][lane] = acc[c];
  __syncthreads();
  // Thread (c, l) of the first 128 finishes accumulator c of lane l:
  // d0, d1 = rows g, cols (x rows) 2t, 2t+1; d2, d3 = row g + 8, same cols.
  if (threadIdx.x >= 4 * 32) return;
  const int l = threadIdx.x % 32, c = threadIdx.x / 32;
  const int64_t row = row0 + l / 4 + (c >= 2 ? 8 : 0);
  const int xrow = 2 * (l % 4) + (c & 1);
  if (xrow >= m || row >= n) return;
  float sum = partial[0][c][l];
#pragma unroll
  for (int v = 1; v < kMmaWarps; ++v) sum += partial[v][c][l];  // fixed warp order
  if (bias != nullptr) sum += ToFloat(bias[row]);
  y[xrow * n + row] = FromFloat<T>(sum);
}

// Any dtype, k and alignment with kVec = 1; float32 with kVec = 4 (k % 4 ==
// 0, 16-byte aligned x and w). grid = ceil(n / (kWarpRows * kWarpsPerBlock))
// blocks of kWarpsPerBlock warps; warp-uniform m checks keep one kernel for
// every batch size.
template <typename T, int kVec>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    SkinnyGemmWarpKernel(const T* __restrict__ x,     // [m, k]
                         const T* __restrict__ w,     // [n, k]
                         const T* __restrict__ bias,  // [n] or nullptr
                         T* __restrict__ y,           // [m, n]
                         int m, int64_t n, int64_t k) {
  using P = Pack<T, kVec>;
  const int lane = threadIdx.x % 32;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32) * kWarpRows;
  if (row0 >= n) return;  // whole warps only; no block barrier below
  const T* rows[kWarpRows];
#pragma unroll
  for (int r = 0; r < kWarpRows; ++r) rows[r] = w + std::min<int64_t>(row0 + r, n - 1) * k;
  const uint64_t policy = EvictFirstPolicy();

  float acc[kSkinnyGemmMaxRows][kWarpRows] = {};
  // One vector of each W row, then every x row against it.
  auto accumulate = [&](const P (&wv)[kWarpRows], int64_t i) {
#pragma unroll
    for (int mm = 0; mm < kSkinnyGemmMaxRows; ++mm) {
      if (mm >= m) break;
      P xv;
      if constexpr (kVec * sizeof(T) == 16) {
        const uint4 bits = LoadCached(x + mm * k + i * kVec);
        xv = *reinterpret_cast<const P*>(&bits);
      } else {
        xv.v[0] = x[mm * k + i];
      }
#pragma unroll
      for (int r = 0; r < kWarpRows; ++r) {
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[mm][r] = fmaf(ToFloat(wv[r].v[e]), ToFloat(xv.v[e]), acc[mm][r]);
      }
    }
  };
  auto load_w = [&](P (&wv)[kWarpRows], int64_t i) {
#pragma unroll
    for (int r = 0; r < kWarpRows; ++r) {
      if constexpr (kVec * sizeof(T) == 16) {
        const uint4 bits = LoadStream(rows[r] + i * kVec, policy);
        wv[r] = *reinterpret_cast<const P*>(&bits);
      } else {
        wv[r].v[0] = rows[r][i];
      }
    }
  };

  // Two vectors per lane per iteration so 8 W loads are in flight; the
  // vectors are still added in increasing order, as the remainder loop does.
  const int64_t num_vecs = k / kVec;
  int64_t i = lane;
  for (; i + 32 < num_vecs; i += 64) {
    P w0[kWarpRows], w1[kWarpRows];
    load_w(w0, i);
    load_w(w1, i + 32);
    accumulate(w0, i);
    accumulate(w1, i + 32);
  }
  for (; i < num_vecs; i += 32) {
    P w0[kWarpRows];
    load_w(w0, i);
    accumulate(w0, i);
  }

#pragma unroll
  for (int mm = 0; mm < kSkinnyGemmMaxRows; ++mm) {
    if (mm >= m) break;
#pragma unroll
    for (int r = 0; r < kWarpRows; ++r) {
      float s = acc[mm][r];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
      // The butterfly leaves the same sum in every lane; lane (mm, r) stores it.
      if (lane == mm * kWarpRows + r && row0 + r < n) {
        if (bias != nullptr) s += ToFloat(bias[row0 + r]);
        y[mm * n + row0 + r] = FromFloat<T>(s);
      }
    }
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T, int kVec>
void LaunchWarp(const SkinnyGemmArgs& a, cudaStream_t stream) {
  constexpr int64_t kRowsPerBlock = kWarpRows * kWarpsPerBlock;
  const auto blocks = static_cast<unsigned>((a.n + kRowsPerBlock - 1) / kRowsPerBlock);
  SkinnyGemmWarpKernel<T, kVec><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
      static_cast<const T*>(a.x), static_cast<const T*>(a.w), static_cast<const T*>(a.bias), static_cast<T*>(a.y),
      a.m, a.n, a.k);
}

template <typename T>
void Launch(const SkinnyGemmArgs& a, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  // y and bias are read and written per element, so only x and W decide.
  const bool vectors = a.k % kVec == 0 && Aligned16(a.x) && Aligned16(a.w);
  if (!vectors) return LaunchWarp<T, 1>(a, stream);
  if constexpr (std::is_same_v<T, float>) {
    LaunchWarp<T, kVec>(a, stream);
  } else {
    const auto blocks = static_cast<unsigned>((a.n + kMmaRows - 1) / kMmaRows);
    SkinnyGemmMmaKernel<T><<<blocks, kMmaWarps * 32, 0, stream>>>(
        static_cast<const T*>(a.x), static_cast<const T*>(a.w), static_cast<const T*>(a.bias),
        static_cast<T*>(a.y), a.m, a.n, a.k);
  }
}

}  // namespace

cudaError_t LaunchSkinnyGemm(const SkinnyGemmArgs& args, cudaStream_t stream) {
  return DispatchDType(args.dtype, [&](auto t) {
    Launch<decltype(t)>(args, stream);
    return cudaGetLastError();
  });
}

}  // namespace gantry::cuda
