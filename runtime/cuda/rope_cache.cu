// Rotary embedding of q and k, the optional per-head q/k RMSNorm before it
// (Qwen3), and the write of k and v into the paged KV cache (kernels.h), in
// one pass over the fused qkv projection: each element is read once and
// written once, instead of the norm, rope, and two cache copies of the
// LibTorch path (runtime/llama_model.cc).
//
// Work split: one warp per head ("task": q heads, then k heads, then v
// heads), lane l owning the rotation pairs (i, i + head_dim / 2) for
// i = l, l + 32, ...; a token's tasks are spread over grid.y blocks of up to
// 8 warps so a single decode token still occupies several multiprocessors.
// Each block computes its token's cos/sin table once, in shared memory.
//
// Numerics as transformers in the model's dtype (rope.cuh's arithmetic,
// which DecodeGemv's kRopeCache epilogue shares).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "runtime/cuda/dtype.cuh"
#include "runtime/cuda/launch.h"
#include "runtime/cuda/pdl.cuh"
#include "runtime/cuda/rope.cuh"

namespace gantry::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ float WarpSum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// kPairs = ceil(head_dim / 2 / 32): rotation pairs per lane, a template
// argument so a head's values stay in registers.
template <typename T, int kPairs>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    RopeCacheKernel(const T* __restrict__ qkv,  // [num_tokens, (num_heads + 2 * num_kv_heads) * head_dim]
                    const int32_t* __restrict__ positions,     // [num_tokens]
                    const int64_t* __restrict__ slot_mapping,  // [num_tokens]; < 0: k and v not written
                    const float* __restrict__ inv_freq,        // [head_dim / 2]
                    const T* __restrict__ q_norm,              // [head_dim] or nullptr
                    const T* __restrict__ k_norm,              // [head_dim] or nullptr (iff q_norm is)
                    float norm_eps,
                    T* __restrict__ q_out,    // [num_tokens, num_heads, head_dim]
                    T* __restrict__ k_cache,  // [slots, num_kv_heads, head_dim]
                    T* __restrict__ v_cache,  // [slots, num_kv_heads, head_dim]
                    int num_heads, int num_kv_heads, int head_dim) {
  __shared__ float cos_table[kMaxRopeHalf], sin_table[kMaxRopeHalf];  // rounded to T

  const int64_t token = blockIdx.x;
  const int half = head_dim / 2;
  const int lane = threadIdx.x % 32;
  const int warps = blockDim.x / 32;
  const int first_task = blockIdx.y * warps;
  const int task = first_task + threadIdx.x / 32;
  const int rotated = num_heads + num_kv_heads;  // q and k heads
  const int tasks = rotated + num_kv_heads;
  WaitForPriorGrid();  // qkv comes from the projection just before
  AllowDependentLaunch();  // the next kernel may start loading its weights
  const int64_t slot = slot_mapping[token];

  const bool is_q = task < num_heads;
  const bool is_v = task >= rotated;
  // A warp with nothing to do still reaches the barrier below.
  const bool active = task < tasks && (is_q || slot >= 0);

  T* dst = nullptr;
  float y1[kPairs] = {}, y2[kPairs] = {};  // q or k: element i and i + half of lane's pairs
  if (active) {
    const T* src = qkv + (token * tasks + task) * head_dim;
    if (is_q) {
      dst = q_out + (token * num_heads + task) * head_dim;
    } else {
      const int kv_head = task - (is_v ? rotated : num_heads);
      dst = (is_v ? v_cache : k_cache) + (slot * num_kv_heads + kv_head) * head_dim;
    }
#pragma unroll
    for (int p = 0; p < kPairs; ++p) {
      const int i = lane + 32 * p;
      if (i < half) {
        const T a = src[i], b = src[i + half];
        if (is_v) {  // copied as is
          dst[i] = a;
          dst[i + half] = b;
        } else {
          y1[p] = ToFloat(a);
          y2[p] = ToFloat(b);
        }
      }
    }
  }

  // Per-head RMSNorm (Qwen3), with RmsNorm's rounding points; before the
  // barrier so it overlaps the cos/sin computation of other warps.
  const T* norm = is_q ? q_norm : k_norm;
  if (active && !is_v && norm != nullptr) {  // uniform over the warp
    float sum = 0.0f;
#pragma unroll
    for (int p = 0; p < kPairs; ++p) sum += y1[p] * y1[p] + y2[p] * y2[p];
    const float inv_rms = rsqrtf(WarpSum(sum) / static_cast<float>(head_dim) + norm_eps);
#pragma unroll
    for (int p = 0; p < kPairs; ++p) {
      const int i = lane + 32 * p;
      if (i < half) {
        y1[p] = Round<T>(ToFloat(norm[i]) * Round<T>(y1[p] * inv_rms));
        y2[p] = Round<T>(ToFloat(norm[i + half]) * Round<T>(y2[p] * inv_rms));
      }
    }
  }

  if (first_task < rotated) {  // uniform over the block: it rotates something
    const float pos = static_cast<float>(positions[token]);
    for (int i = threadIdx.x; i < half; i += blockDim.x) RopeCosSin<T>(pos, inv_freq[i], &cos_table[i], &sin_table[i]);
    __syncthreads();
  }
  if (!active || is_v) return;

#pragma unroll
  for (int p = 0; p < kPairs; ++p) {
    const int i = lane + 32 * p;
    if (i < half) RotatePair<T>(y1[p], y2[p], cos_table[i], sin_table[i], &dst[i], &dst[i + half]);
  }
}

template <typename T, int kPairs>
cudaError_t LaunchWith(const RopeCacheArgs& a, cudaStream_t stream) {
  const int tasks = a.num_heads + 2 * a.num_kv_heads;
  const int warps = std::min(tasks, kWarpsPerBlock);
  const dim3 grid(static_cast<unsigned>(a.num_tokens), static_cast<unsigned>((tasks + warps - 1) / warps));
  return LaunchKernel(&RopeCacheKernel<T, kPairs>, grid, dim3(warps * 32), 0, stream, static_cast<const T*>(a.qkv),
                      a.positions, a.slot_mapping, a.inv_freq, static_cast<const T*>(a.q_norm),
                      static_cast<const T*>(a.k_norm), a.norm_eps, static_cast<T*>(a.q_out),
                      static_cast<T*>(a.k_cache), static_cast<T*>(a.v_cache), a.num_heads, a.num_kv_heads,
                      a.head_dim);
}

template <typename T>
cudaError_t Launch(const RopeCacheArgs& a, cudaStream_t stream) {
  const int half = a.head_dim / 2;
  if (half <= 32) return LaunchWith<T, 1>(a, stream);
  if (half <= 64) return LaunchWith<T, 2>(a, stream);
  return LaunchWith<T, 4>(a, stream);  // half <= 128 (kernels.cc checks head_dim <= 256)
}

}  // namespace

cudaError_t LaunchRopeAndCacheWrite(const RopeCacheArgs& args, cudaStream_t stream) {
  return DispatchDType(args.dtype, [&](auto t) { return Launch<decltype(t)>(args, stream); });
}

}  // namespace gantry::cuda
