// Loads of weights that a kernel reads once per step (SkinnyGemm, DecodeGemv):
// straight from HBM, not kept in L1, and first out of L2, so they do not push
// out the activations and the KV cache around them, which are reused.
#ifndef GANTRY_RUNTIME_CUDA_STREAM_LOAD_CUH_
#define GANTRY_RUNTIME_CUDA_STREAM_LOAD_CUH_

#include <cuda_runtime.h>

#include <cstdint>

namespace gantry::cuda {

// An L2 policy that evicts what it tags first.
__device__ __forceinline__ uint64_t EvictFirstPolicy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

// 16 bytes of weights (16-byte aligned `p`) under `policy`, not kept in L1.
__device__ __forceinline__ uint4 LoadStream(const void* p, uint64_t policy) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p), "l"(policy));
  return v;
}

}  // namespace gantry::cuda

#endif  // GANTRY_RUNTIME_CUDA_STREAM_LOAD_CUH_
