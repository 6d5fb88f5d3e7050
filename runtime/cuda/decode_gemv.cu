// One decode row times a weight matrix, with the element-wise work around the
// product fused in (kernels.h, DecodeGemv). At batch 1 a decode step is a
// stream of ~15 GB of weights through four products per layer; cuBLAS reads
// the small ones (o: 4096 x 4096, qkv: 6144 x 4096) at 2.8-3.0 TB/s, adds a
// split-K reduce kernel to o and down, and leaves RMSNorm and SiLU as kernels
// of their own between the products (docs/PERFORMANCE.md). Here:
//
// - A warp owns two weight rows (consecutive rows, or gate row j and up row
//   j for kSiluMul) and walks all of k with 16-byte streaming loads, kUnroll
//   per row per lane in flight; no split of k, so no reduce kernel.
// - The first chunk of weights is loaded before the programmatic-dependent-
//   launch wait: no kernel writes weights, so under PDL those loads overlap
//   the tail of the kernel before (attention, rotary), which lets the next
//   kernel launch as soon as this one has passed its own wait.
// - The block stages the input vector in shared memory once, normalised when
//   asked (RMSNorm of the residual stream, as RmsNorm computes it), and every
//   warp reads it from there.
// - The epilogue adds the bias, rounds to the storage type once, and stores,
//   adds into the residual stream, applies SiLU(gate) * up, or widens to
//   float32 (logits), with transformers' rounding points (kernels.h).
//
// Numerics: each output is one float32 dot product (fmaf per lane over its
// vectors in increasing order, then a fixed xor butterfly), independent of
// the grid, so a row's result does not depend on where it runs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/dtype.cuh"
#include "runtime/cuda/launch.h"
#include "runtime/cuda/stream_load.cuh"
#include "runtime/cuda/pdl.cuh"

namespace gantry::cuda {
namespace {

constexpr int kWarps = 8;  // per block
constexpr int kThreads = kWarps * 32;
constexpr int kUnroll = 8;  // 16-byte vectors per row per lane in one chunk
constexpr int kChunkVecs = 32 * kUnroll;

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

// Stages x [vecs 16-byte vectors] in shared memory; with norm_weight, as
// RmsNorm: normalised = dtype(x * rsqrt(mean(x^2) + eps)), input =
// dtype(norm_weight * normalised). Ends with a block barrier.
template <typename T, bool kNorm>
__device__ __forceinline__ void StageInput(uint4* xs, const uint4* x, const uint4* norm_weight, int vecs, int k,
                                           float eps) {
  float sum = 0.0f;
  for (int i = threadIdx.x; i < vecs; i += kThreads) {
    const uint4 v = x[i];
    xs[i] = v;
    if constexpr (kNorm) {
      float f[8];
      Unpack<T>(v, f);
#pragma unroll
      for (int e = 0; e < 8; ++e) sum += f[e] * f[e];
    }
  }
  if constexpr (kNorm) {
    __shared__ float warp_sums[kWarps];
    sum = WarpSum(sum);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += warp_sums[w];
    const float inv_rms = rsqrtf(total / static_cast<float>(k) + eps);
    // Each thread rewrites the vectors it staged: no barrier in between.
    for (int i = threadIdx.x; i < vecs; i += kThreads) {
      float f[8], g[8];
      Unpack<T>(xs[i], f);
      Unpack<T>(norm_weight[i], g);
#pragma unroll
      for (int e = 0; e < 8; ++e) f[e] = g[e] * Round<T>(f[e] * inv_rms);
      xs[i] = Pack8<T>(f);
    }
  }
  __syncthreads();
}

// Rows of a unit of work (one warp): rows r0 and r1 of w.
struct UnitRows {
  int64_t r0, r1;
  bool r1_valid;
};

template <int kOut>
__device__ __forceinline__ UnitRows RowsOf(int64_t unit, int64_t n) {
  if constexpr (kOut == static_cast<int>(GemvOutput::kSiluMul)) {
    return {unit, unit + n / 2, true};
  } else {
    const int64_t r0 = 2 * unit;
    return {r0, std::min<int64_t>(r0 + 1, n - 1), r0 + 1 < n};
  }
}

// Loads chunk `base` (in vectors) of both rows: lane l takes vectors
// base + l + 32 j; vectors past the row are zeros.
__device__ __forceinline__ void LoadChunk(uint4 (&a)[kUnroll], uint4 (&b)[kUnroll], const uint4* w0,
                                          const uint4* w1, int base, int vecs, int lane, uint64_t policy) {
#pragma unroll
  for (int j = 0; j < kUnroll; ++j) {
    const int i = base + lane + 32 * j;
    const bool in = i < vecs;
    a[j] = in ? LoadStream(w0 + i, policy) : make_uint4(0, 0, 0, 0);
    b[j] = in ? LoadStream(w1 + i, policy) : make_uint4(0, 0, 0, 0);
  }
}

template <typename T>
__device__ __forceinline__ void Accumulate(const uint4 (&a)[kUnroll], const uint4 (&b)[kUnroll], const uint4* xs,
                                           int base, int vecs, int lane, float& acc0, float& acc1) {
#pragma unroll
  for (int j = 0; j < kUnroll; ++j) {
    const int i = base + lane + 32 * j;
    if (i >= vecs) break;  // increasing j: the rest is out too
    float xf[8], wf[8];
    Unpack<T>(xs[i], xf);
    Unpack<T>(a[j], wf);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc0 = fmaf(wf[e], xf[e], acc0);
    Unpack<T>(b[j], wf);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc1 = fmaf(wf[e], xf[e], acc1);
  }
}

// grid: blocks of kWarps warps; warp w of block b takes units b * kWarps + w,
// then + gridDim.x * kWarps, ... Dynamic shared memory: k * sizeof(T) bytes.
template <typename T, int kOut, bool kNorm>
__global__ void __launch_bounds__(kThreads, 2)
    DecodeGemvKernel(const T* __restrict__ w,            // [n, k]
                     const T* __restrict__ bias,         // [n] or nullptr
                     const T* __restrict__ x,            // [k]
                     const T* __restrict__ norm_weight,  // [k] (kNorm)
                     void* __restrict__ y,               // see GemvOutput
                     int64_t n, int k, float eps) {
  extern __shared__ uint4 xs[];  // [k / 8] the input, normalised when kNorm
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int vecs = k / 8;
  const int64_t units = kOut == static_cast<int>(GemvOutput::kSiluMul) ? n / 2 : (n + 1) / 2;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kWarps;
  int64_t unit = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const uint64_t policy = EvictFirstPolicy();

  // Warps without a unit still stage the input (the barriers need them);
  // they load a valid row and store nothing.
  UnitRows rows = RowsOf<kOut>(std::min(unit, units - 1), n);
  uint4 a[kUnroll], b[kUnroll];
  const uint4* w0 = reinterpret_cast<const uint4*>(w + rows.r0 * k);
  const uint4* w1 = reinterpret_cast<const uint4*>(w + rows.r1 * k);
  LoadChunk(a, b, w0, w1, 0, vecs, lane, policy);  // weights: before the wait

  WaitForPriorGrid();  // x (and y, for kAddToResidual) come from the kernels before
  AllowDependentLaunch();
  StageInput<T, kNorm>(xs, reinterpret_cast<const uint4*>(x), reinterpret_cast<const uint4*>(norm_weight), vecs, k,
                       eps);

  for (; unit < units; unit += stride) {
    if (unit != static_cast<int64_t>(blockIdx.x) * kWarps + warp) {
      rows = RowsOf<kOut>(unit, n);
      w0 = reinterpret_cast<const uint4*>(w + rows.r0 * k);
      w1 = reinterpret_cast<const uint4*>(w + rows.r1 * k);
      LoadChunk(a, b, w0, w1, 0, vecs, lane, policy);
    }
    float acc0 = 0.0f, acc1 = 0.0f;
    for (int base = 0;;) {
      Accumulate<T>(a, b, xs, base, vecs, lane, acc0, acc1);
      base += kChunkVecs;
      if (base >= vecs) break;
      LoadChunk(a, b, w0, w1, base, vecs, lane, policy);
    }
    acc0 = WarpSum(acc0);
    acc1 = WarpSum(acc1);
    if (lane > 1) continue;
    if constexpr (kOut == static_cast<int>(GemvOutput::kSiluMul)) {
      if (lane != 0) continue;
      const float gate = Round<T>(acc0 + (bias != nullptr ? ToFloat(bias[rows.r0]) : 0.0f));
      const float up = Round<T>(acc1 + (bias != nullptr ? ToFloat(bias[rows.r1]) : 0.0f));
      // Accurate expf and division, as SiluMul: exp(-x) may overflow to inf, giving silu = -0.
      static_cast<T*>(y)[unit] = FromFloat<T>(Round<T>(gate / (1.0f + expf(-gate))) * up);
    } else {
      if (lane == 1 && !rows.r1_valid) continue;
      const int64_t row = lane == 0 ? rows.r0 : rows.r1;
      const float dot = (lane == 0 ? acc0 : acc1) + (bias != nullptr ? ToFloat(bias[row]) : 0.0f);
      if constexpr (kOut == static_cast<int>(GemvOutput::kStore)) {
        static_cast<T*>(y)[row] = FromFloat<T>(dot);
      } else if constexpr (kOut == static_cast<int>(GemvOutput::kAddToResidual)) {
        T* residual = static_cast<T*>(y);
        residual[row] = FromFloat<T>(ToFloat(residual[row]) + Round<T>(dot));
      } else {
        static_cast<float*>(y)[row] = Round<T>(dot);
      }
    }
  }
}

// Multiprocessors of the current device, asked once per device.
int SmCount() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> counts[kMaxDevices];
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    (void)cudaGetLastError();
    return 132;
  }
  int count = counts[device].load(std::memory_order_relaxed);
  if (count == 0) {
    if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count < 1) {
      (void)cudaGetLastError();
      count = 132;
    }
    counts[device].store(count, std::memory_order_relaxed);
  }
  return count;
}

template <typename T, int kOut, bool kNorm>
cudaError_t LaunchTyped(const DecodeGemvArgs& a, cudaStream_t stream) {
  auto* kernel = &DecodeGemvKernel<T, kOut, kNorm>;
  const size_t smem = static_cast<size_t>(a.k) * sizeof(T);
  if (smem > 48 * 1024) {
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem));
        e != cudaSuccess) {
      return e;
    }
  }
  const int64_t units = kOut == static_cast<int>(GemvOutput::kSiluMul) ? a.n / 2 : (a.n + 1) / 2;
  // Up to 8 units per warp before warps loop: each block stages (and
  // normalises) the input once, which would cost more L2 traffic than the
  // weights themselves for lm_head's 64k units with one unit per warp.
  const int64_t max_blocks = static_cast<int64_t>(SmCount()) * 2 * 8;
  const int64_t blocks = std::min<int64_t>((units + kWarps - 1) / kWarps, max_blocks);
  return LaunchKernel(kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), smem, stream,
                      static_cast<const T*>(a.w), static_cast<const T*>(a.bias), static_cast<const T*>(a.x),
                      static_cast<const T*>(a.norm_weight), a.y, a.n, static_cast<int>(a.k), a.eps);
}

template <typename T, bool kNorm>
cudaError_t LaunchOutput(const DecodeGemvArgs& a, cudaStream_t stream) {
  switch (a.output) {
    case GemvOutput::kStore: return LaunchTyped<T, static_cast<int>(GemvOutput::kStore), kNorm>(a, stream);
    case GemvOutput::kAddToResidual:
      return LaunchTyped<T, static_cast<int>(GemvOutput::kAddToResidual), kNorm>(a, stream);
    case GemvOutput::kSiluMul: return LaunchTyped<T, static_cast<int>(GemvOutput::kSiluMul), kNorm>(a, stream);
    case GemvOutput::kFloat32: return LaunchTyped<T, static_cast<int>(GemvOutput::kFloat32), kNorm>(a, stream);
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
