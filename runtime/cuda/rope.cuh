// The rotary embedding's arithmetic, shared by RopeAndCacheWrite
// (rope_cache.cu) and DecodeGemv's kRopeCache epilogue (decode_gemv.cu), so
// the two paths can never round differently (their bit-for-bit test,
// DecodeGemvTest.RopeCacheIsStoreThenRope, relies on it).
//
// Numerics as transformers in the model's dtype: angle = float(pos) *
// inv_freq[i] in float32, cos/sin from the accurate sincosf (angles reach
// ~1e5 rad, far outside where __sinf/__cosf are usable) rounded to dtype, and
// out = dtype(dtype(x * cos) + dtype(rotate_half(x) * sin)).
#ifndef GANTRY_RUNTIME_CUDA_ROPE_CUH_
#define GANTRY_RUNTIME_CUDA_ROPE_CUH_

#include "runtime/cuda/dtype.cuh"

namespace gantry::cuda {

// Largest head_dim / 2 the rotary kernels take (kernels.cc checks head_dim
// <= 256): the size of their shared-memory cos/sin tables.
inline constexpr int kMaxRopeHalf = 128;

// cos and sin of position * inv_freq, each rounded to T.
template <typename T>
__device__ __forceinline__ void RopeCosSin(float position, float inv_freq, float* cos_out, float* sin_out) {
  float s, c;
  sincosf(position * inv_freq, &s, &c);  // float32 product, as transformers
  *cos_out = Round<T>(c);
  *sin_out = Round<T>(s);
}

// Rotates the pair (x1, x2) = (x[i], x[i + head_dim / 2]) by the angle whose
// rounded cos and sin are c and s, into first (at i) and second (at i +
// head_dim / 2). __fmul_rn keeps float32 from fusing a product into an FMA,
// so every dtype rounds each product, as transformers' separate tensor ops do.
template <typename T>
__device__ __forceinline__ void RotatePair(float x1, float x2, float c, float s, T* first, T* second) {
  *first = FromFloat<T>(Round<T>(__fmul_rn(x1, c)) - Round<T>(__fmul_rn(x2, s)));
  *second = FromFloat<T>(Round<T>(__fmul_rn(x2, c)) + Round<T>(__fmul_rn(x1, s)));
}

}  // namespace gantry::cuda

#endif  // GANTRY_RUNTIME_CUDA_ROPE_CUH_
