// Device helpers shared by the kernels: storage types and their float32
// conversions, and the dispatch from DType to a storage type.
#ifndef GANTRY_RUNTIME_CUDA_DTYPE_CUH_
#define GANTRY_RUNTIME_CUDA_DTYPE_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "runtime/cuda/kernels.h"

namespace gantry::cuda {

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// x rounded to T and back: mimics a transformers operation whose result is
// stored in the model's dtype.
template <typename T>
__device__ __forceinline__ float Round(float x) { return ToFloat(FromFloat<T>(x)); }

// Calls fn(T{}) with T the storage type of `dtype`; returns what fn returns.
template <typename Fn>
cudaError_t DispatchDType(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: return fn(float{});
    case DType::kFloat16: return fn(__half{});
    case DType::kBFloat16: return fn(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace gantry::cuda

#endif  // GANTRY_RUNTIME_CUDA_DTYPE_CUH_
