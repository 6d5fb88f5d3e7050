// RMSNorm with the previous layer's residual add fused in, and the encoders'
// residual add + LayerNorm and embedding sum + LayerNorm (kernels.h). RMSNorm
// runs twice per layer in every step, from a single decode row up to prefill
// chunks of thousands of rows, so it is built to be memory-bound: one thread
// block per row, 16-byte loads, and the row held in registers between the
// sum of squares and the normalise pass, so global memory is read once.
//
// Numerics as transformers' LlamaRMSNorm (see kernels.h): the residual sum is
// rounded to the storage type, the sum of squares is float32,
// normalised = dtype(x * rsqrt(mean(x^2) + eps)), out = dtype(weight * normalised).
// AddLayerNorm as torch.nn.LayerNorm on dtype(input + residual), or on input
// alone when residual is null (already added in a product's epilogue): mean, then
// the variance about it (two passes over the row in registers, as exact as
// LibTorch's Welford), both float32. EmbedLayerNorm normalises the sum of a
// token's three embedding rows with the same code (LayerNormRow).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/dtype.cuh"
#include "runtime/cuda/launch.h"
#include "runtime/cuda/pdl.cuh"

namespace gantry::cuda {
namespace {

// Threads per block at most. 512 threads x 8 items x 16 bytes covers rows of
// 16384 float32 (32768 16-bit) values in registers; bigger rows stream.
constexpr int kMaxThreads = 512;

// kN values of T moved as one aligned vector (16 bytes in the fast path).
template <typename T, int kN>
struct alignas(sizeof(T) * kN) Pack {
  T v[kN];
};

__device__ __forceinline__ float WarpSum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// The sum of x over the block, returned to every thread. blockDim.x is a
// multiple of 32. Each warp reduces the per-warp partials itself, which saves
// the second barrier of a broadcast; called once per kernel, so the shared
// array is never reused.
__device__ __forceinline__ float BlockSum(float x) {
  __shared__ float warp_sums[32];
  x = WarpSum(x);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  return WarpSum(lane < static_cast<int>(blockDim.x / 32) ? warp_sums[lane] : 0.0f);
}

// s = dtype(x + r): the residual stream as transformers stores it.
template <typename T, int kN>
__device__ __forceinline__ Pack<T, kN> AddRounded(const Pack<T, kN>& x, const Pack<T, kN>& r) {
  Pack<T, kN> s;
#pragma unroll
  for (int k = 0; k < kN; ++k) s.v[k] = FromFloat<T>(ToFloat(x.v[k]) + ToFloat(r.v[k]));
  return s;
}

template <typename T, int kN>
__device__ __forceinline__ float SumOfSquares(const Pack<T, kN>& x) {
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kN; ++k) sum += ToFloat(x.v[k]) * ToFloat(x.v[k]);
  return sum;
}

// out = dtype(w * dtype(s * inv_rms)).
template <typename T, int kN>
__device__ __forceinline__ Pack<T, kN> Normalise(const Pack<T, kN>& s, const Pack<T, kN>& w, float inv_rms) {
  Pack<T, kN> out;
#pragma unroll
  for (int k = 0; k < kN; ++k) {
    out.v[k] = FromFloat<T>(ToFloat(w.v[k]) * Round<T>(ToFloat(s.v[k]) * inv_rms));
  }
  return out;
}

// The row lives in registers: thread t holds 16-byte vectors t, t + blockDim,
// ... (kItems of them, coalesced). Needs dim % (16 / sizeof(T)) == 0,
// 16-byte aligned pointers and dim / (16 / sizeof(T)) <= kItems * blockDim.x.
// input must not alias residual or output (kernels.h forbids output aliasing;
// the runtime never passes input == residual).
template <typename T, int kItems>
__global__ void __launch_bounds__(kMaxThreads)
    RmsNormRegistersKernel(const T* __restrict__ input,   // [rows, dim]
                           T* __restrict__ residual,      // [rows, dim] or nullptr; updated in place
                           const T* __restrict__ weight,  // [dim]
                           T* __restrict__ output,        // [rows, dim]
                           int dim, float eps) {
  constexpr int kVec = 16 / sizeof(T);
  using P = Pack<T, kVec>;
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * dim;
  const int num_vecs = dim / kVec;
  const P* in = reinterpret_cast<const P*>(input + offset);
  P* res = residual == nullptr ? nullptr : reinterpret_cast<P*>(residual + offset);
  const P* w = reinterpret_cast<const P*>(weight);
  P* out = reinterpret_cast<P*>(output + offset);

  // Small rows (decode) hold the weight in registers too, loaded beside the
  // row so its latency hides behind the row's and the reduction; big rows
  // would run out of registers for it, and have enough rows in flight to
  // hide it anyway.
  constexpr bool kPrefetchWeight = kItems <= 2;
  P x[kItems], wv[kItems];
  // Weight after the wait, in the row's round trip: before it, a call took 0.4 us longer when nothing overlapped.
  WaitForPriorGrid();  // input and residual come from the kernels before
  AllowDependentLaunch();  // the next kernel may start loading its weights
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const int i = j * blockDim.x + threadIdx.x;
    if (i < num_vecs) {
      if constexpr (kPrefetchWeight) wv[j] = w[i];
      x[j] = in[i];
      if (res != nullptr) {
        x[j] = AddRounded(x[j], res[i]);
        res[i] = x[j];
      }
      sum += SumOfSquares(x[j]);
    }
  }
  const float inv_rms = rsqrtf(BlockSum(sum) / static_cast<float>(dim) + eps);
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const int i = j * blockDim.x + threadIdx.x;
    if (i < num_vecs) out[i] = Normalise(x[j], kPrefetchWeight ? wv[j] : w[i], inv_rms);
  }
}

// Any dim: kVec values per access (16 bytes, or 1 for dims or pointers that
// do not allow vectors), and the row read twice: once for the sum of squares,
// once (from L1/L2, or from the residual this thread just wrote) to normalise.
template <typename T, int kVec>
__global__ void __launch_bounds__(kMaxThreads)
    RmsNormLoopKernel(const T* __restrict__ input,   // [rows, dim]
                      T* __restrict__ residual,      // [rows, dim] or nullptr; updated in place
                      const T* __restrict__ weight,  // [dim]
                      T* __restrict__ output,        // [rows, dim]
                      int64_t dim, float eps) {
  using P = Pack<T, kVec>;
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * dim;
  const int64_t num_vecs = dim / kVec;
  const P* in = reinterpret_cast<const P*>(input + offset);
  P* res = residual == nullptr ? nullptr : reinterpret_cast<P*>(residual + offset);
  const P* w = reinterpret_cast<const P*>(weight);
  P* out = reinterpret_cast<P*>(output + offset);

  WaitForPriorGrid();  // input and residual come from the kernels before
  AllowDependentLaunch();  // the next kernel may start loading its weights

  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < num_vecs; i += blockDim.x) {
    P x = in[i];
    if (res != nullptr) {
      x = AddRounded(x, res[i]);
      res[i] = x;
    }
    sum += SumOfSquares(x);
  }
  const float inv_rms = rsqrtf(BlockSum(sum) / static_cast<float>(dim) + eps);
  // Each thread revisits its own elements, so it reads back its own writes.
  const P* src = res != nullptr ? res : in;
  for (int64_t i = threadIdx.x; i < num_vecs; i += blockDim.x) out[i] = Normalise(src[i], w[i], inv_rms);
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int RoundUpToWarp(int64_t n) { return static_cast<int>((n + 31) / 32 * 32); }

template <typename T, int kItems>
cudaError_t LaunchRegisters(const RmsNormArgs& a, int64_t num_vecs, cudaStream_t stream) {
  const int threads = RoundUpToWarp((num_vecs + kItems - 1) / kItems);
  return LaunchKernel(&RmsNormRegistersKernel<T, kItems>, dim3(static_cast<unsigned>(a.rows)), dim3(threads), 0,
                      stream, static_cast<const T*>(a.input), static_cast<T*>(a.residual),
                      static_cast<const T*>(a.weight), static_cast<T*>(a.output), static_cast<int>(a.dim), a.eps);
}

template <typename T, int kVec>
cudaError_t LaunchLoop(const RmsNormArgs& a, cudaStream_t stream) {
  const int threads = std::min<int64_t>(kMaxThreads, RoundUpToWarp(a.dim / kVec));
  return LaunchKernel(&RmsNormLoopKernel<T, kVec>, dim3(static_cast<unsigned>(a.rows)), dim3(threads), 0, stream,
                      static_cast<const T*>(a.input), static_cast<T*>(a.residual), static_cast<const T*>(a.weight),
                      static_cast<T*>(a.output), a.dim, a.eps);
}

template <typename T>
cudaError_t Launch(const RmsNormArgs& a, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vectors = a.dim % kVec == 0 && Aligned16(a.input) && Aligned16(a.weight) && Aligned16(a.output) &&
                       (a.residual == nullptr || Aligned16(a.residual));
  if (!vectors) return LaunchLoop<T, 1>(a, stream);
  // The fewest items per thread that fit the row in kMaxThreads threads:
  // more threads give more loads in flight for a single decode row.
  const int64_t num_vecs = a.dim / kVec;
  if (num_vecs <= 1 * kMaxThreads) return LaunchRegisters<T, 1>(a, num_vecs, stream);
  if (num_vecs <= 2 * kMaxThreads) return LaunchRegisters<T, 2>(a, num_vecs, stream);
  if (num_vecs <= 4 * kMaxThreads) return LaunchRegisters<T, 4>(a, num_vecs, stream);
  if (num_vecs <= 8 * kMaxThreads) return LaunchRegisters<T, 8>(a, num_vecs, stream);
  return LaunchLoop<T, kVec>(a, stream);
}

// One row's LayerNorm, shared by AddLayerNorm and EmbedLayerNorm: the mean,
// then the variance about it (two passes, as exact as LibTorch's Welford;
// E[s^2] - mean^2 would cancel for rows far from zero), both float32, and
// out = dtype((s - mean) * rsqrt(var + eps) * weight + bias). Element s[i]
// is read only by the thread that writes out[i], and before it writes it, so
// `out` may alias the sources. One thread block per row.
//   kItems > 0: the row in registers, laid out as RmsNormRegistersKernel holds
//   it (same limits): thread t holds 16-byte vectors t, t + blockDim, ...
//   (vec(i) gives vector i of s), so the sources are read once.
//   kItems == 0: any dim or alignment, one value per access: value(i) gives
//   s[i], computed again in each of the three passes (the later two read
//   from L1/L2).
template <typename T, int kItems, typename Vec, typename Value>
__device__ __forceinline__ void LayerNormRow(const Vec& vec, const Value& value, int64_t dim,
                                             const T* weight,  // [dim]
                                             const T* bias,    // [dim]
                                             T* out,           // [dim]
                                             float eps) {
  if constexpr (kItems == 0) {
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += value(i);
    const float mean = BlockSum(sum) / static_cast<float>(dim);
    __syncthreads();  // BlockSum's shared partials are read by every warp before they are written again
    float squares = 0.0f;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float d = value(i) - mean;
      squares += d * d;
    }
    const float inv_std = rsqrtf(BlockSum(squares) / static_cast<float>(dim) + eps);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      out[i] = FromFloat<T>((value(i) - mean) * inv_std * ToFloat(weight[i]) + ToFloat(bias[i]));
    }
  } else {
    constexpr int kVec = 16 / sizeof(T);
    using P = Pack<T, kVec>;
    const int num_vecs = static_cast<int>(dim / kVec);
    P x[kItems];
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int i = j * blockDim.x + threadIdx.x;
      if (i < num_vecs) {
        x[j] = vec(i);
#pragma unroll
        for (int k = 0; k < kVec; ++k) sum += ToFloat(x[j].v[k]);
      }
    }
    const float mean = BlockSum(sum) / static_cast<float>(dim);
    __syncthreads();  // as above
    float squares = 0.0f;
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int i = j * blockDim.x + threadIdx.x;
      if (i < num_vecs) {
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const float d = ToFloat(x[j].v[k]) - mean;
          squares += d * d;
        }
      }
    }
    const float inv_std = rsqrtf(BlockSum(squares) / static_cast<float>(dim) + eps);
    const P* w = reinterpret_cast<const P*>(weight);
    const P* b = reinterpret_cast<const P*>(bias);
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      const int i = j * blockDim.x + threadIdx.x;
      if (i < num_vecs) {
        const P wv = w[i], bv = b[i];
        P o;
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          o.v[k] = FromFloat<T>((ToFloat(x[j].v[k]) - mean) * inv_std * ToFloat(wv.v[k]) + ToFloat(bv.v[k]));
        }
        reinterpret_cast<P*>(out)[i] = o;
      }
    }
  }
}

// AddLayerNorm; kItems as LayerNormRow's. No __restrict__: output may alias
// input or residual (LayerNormRow allows it).
template <typename T, int kItems>
__global__ void __launch_bounds__(kMaxThreads)
    AddLayerNormKernel(const T* input,     // [rows, dim]
                       const T* residual,  // [rows, dim] or nullptr
                       const T* weight,    // [dim]
                       const T* bias,      // [dim]
                       T* output,          // [rows, dim]
                       int64_t dim, float eps) {
  using P = Pack<T, 16 / sizeof(T)>;
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * dim;
  const T* in = input + offset;
  const T* res = residual == nullptr ? nullptr : residual + offset;
  const P* in_vecs = reinterpret_cast<const P*>(in);
  const P* res_vecs = reinterpret_cast<const P*>(res);
  WaitForPriorGrid();
  AllowDependentLaunch();
  // The residual branches are uniform over the block.
  LayerNormRow<T, kItems>(
      [&](int i) { return res != nullptr ? AddRounded(in_vecs[i], res_vecs[i]) : in_vecs[i]; },
      [&](int64_t i) { return res != nullptr ? Round<T>(ToFloat(in[i]) + ToFloat(res[i])) : ToFloat(in[i]); }, dim,
      weight, bias, output + offset, eps);
}

// EmbedLayerNorm; kItems as LayerNormRow's. Each row gathers its word, token
// type and position rows and sums them in transformers' order, each add
// rounded to dtype. The ids index the tables unchecked: the host validates
// them (kernels.h), which keeps the kernel free of a per-row error path.
// The launch bounds ask for at least one resident block per multiprocessor:
// given only the thread count, ptxas held the fp16 four-vector kernel to 40
// registers and spilled (nvcc 13.0).
template <typename T, int kItems>
__global__ void __launch_bounds__(kMaxThreads, 1)
    EmbedLayerNormKernel(const int64_t* __restrict__ token_ids,    // [rows]
                         const int64_t* __restrict__ token_types,  // [rows] or nullptr: type 0
                         const T* __restrict__ word,               // [vocab, dim]
                         const T* __restrict__ position,           // [positions, dim]
                         const T* __restrict__ token_type,         // [types, dim]
                         const T* __restrict__ weight,             // [dim]
                         const T* __restrict__ bias,               // [dim]
                         T* __restrict__ output,                   // [rows, dim]
                         int64_t length, int64_t position_offset, int64_t dim, float eps) {
  using P = Pack<T, 16 / sizeof(T)>;
  const int64_t row = blockIdx.x;
  WaitForPriorGrid();  // the ids come from a copy or kernel before
  AllowDependentLaunch();
  const int64_t type = token_types == nullptr ? 0 : token_types[row];
  const T* w = word + token_ids[row] * dim;
  const T* t = token_type + type * dim;
  const T* p = position + (row % length + position_offset) * dim;
  const P* w_vecs = reinterpret_cast<const P*>(w);
  const P* t_vecs = reinterpret_cast<const P*>(t);
  const P* p_vecs = reinterpret_cast<const P*>(p);
  LayerNormRow<T, kItems>(
      [&](int i) { return AddRounded(AddRounded(w_vecs[i], t_vecs[i]), p_vecs[i]); },
      [&](int64_t i) { return Round<T>(Round<T>(ToFloat(w[i]) + ToFloat(t[i])) + ToFloat(p[i])); }, dim, weight,
      bias, output + row * dim, eps);
}

// Launches a LayerNormRow kernel for rows of `dim` values: with the row in
// registers, in the fewest 16-byte vectors per thread (1, 2 or 4) that hold
// it in kMaxThreads threads (more threads give more loads in flight), where
// `vectors` says they may be used (dim a multiple of a vector, every row
// pointer 16-byte aligned); else the loop. launch(kItems, threads) launches
// the kernel, kItems a std::integral_constant<int, ...> (0: the loop).
template <typename T, typename Launch>
cudaError_t LaunchLayerNorm(bool vectors, int64_t dim, const Launch& launch) {
  const int64_t num_vecs = dim / (16 / sizeof(T));
  const auto registers = [&](auto items) { return launch(items, RoundUpToWarp((num_vecs + items - 1) / items)); };
  if (vectors && num_vecs <= 1 * kMaxThreads) return registers(std::integral_constant<int, 1>{});
  if (vectors && num_vecs <= 2 * kMaxThreads) return registers(std::integral_constant<int, 2>{});
  if (vectors && num_vecs <= 4 * kMaxThreads) return registers(std::integral_constant<int, 4>{});
  const int loop_threads = static_cast<int>(std::min<int64_t>(kMaxThreads, RoundUpToWarp(dim)));
  return launch(std::integral_constant<int, 0>{}, loop_threads);
}

template <typename T>
cudaError_t LaunchAddLayerNormTyped(const AddLayerNormArgs& a, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const bool vectors = a.dim % kVec == 0 && Aligned16(a.input) &&
                       (a.residual == nullptr || Aligned16(a.residual)) && Aligned16(a.weight) &&
                       Aligned16(a.bias) && Aligned16(a.output);
  return LaunchLayerNorm<T>(vectors, a.dim, [&](auto items, int threads) {
    return LaunchKernel(&AddLayerNormKernel<T, decltype(items)::value>, dim3(static_cast<unsigned>(a.rows)),
                        dim3(threads), 0, stream, static_cast<const T*>(a.input), static_cast<const T*>(a.residual),
                        static_cast<const T*>(a.weight), static_cast<const T*>(a.bias), static_cast<T*>(a.output),
                        a.dim, a.eps);
  });
}

template <typename T>
cudaError_t LaunchEmbedLayerNormTyped(const EmbedLayerNormArgs& a, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  // Row r of a table starts at r * dim elements: aligned when the table is.
  const bool vectors = a.dim % kVec == 0 && Aligned16(a.word) && Aligned16(a.position) &&
                       Aligned16(a.token_type) && Aligned16(a.weight) && Aligned16(a.bias) && Aligned16(a.output);
  return LaunchLayerNorm<T>(vectors, a.dim, [&](auto items, int threads) {
    return LaunchKernel(&EmbedLayerNormKernel<T, decltype(items)::value>, dim3(static_cast<unsigned>(a.rows)),
                        dim3(threads), 0, stream, a.token_ids, a.token_types, static_cast<const T*>(a.word),
                        static_cast<const T*>(a.position), static_cast<const T*>(a.token_type),
                        static_cast<const T*>(a.weight), static_cast<const T*>(a.bias), static_cast<T*>(a.output),
                        a.length, a.position_offset, a.dim, a.eps);
  });
}

}  // namespace

cudaError_t LaunchRmsNorm(const RmsNormArgs& args, cudaStream_t stream) {
  return DispatchDType(args.dtype, [&](auto t) { return Launch<decltype(t)>(args, stream); });
}

cudaError_t LaunchAddLayerNorm(const AddLayerNormArgs& args, cudaStream_t stream) {
  return DispatchDType(args.dtype, [&](auto t) { return LaunchAddLayerNormTyped<decltype(t)>(args, stream); });
}

cudaError_t LaunchEmbedLayerNorm(const EmbedLayerNormArgs& args, cudaStream_t stream) {
  return DispatchDType(args.dtype, [&](auto t) { return LaunchEmbedLayerNormTyped<decltype(t)>(args, stream); });
}

}  // namespace gantry::cuda
