// The 32-bit integer hash behind sampling noise (Chris Wellons' lowbias32),
// one definition for the host (runtime/sampler.cc, tests) and the device
// (sampling.cu): the two must agree bit for bit, or a seed would draw
// different tokens on the CPU and the GPU.
#ifndef GANTRY_RUNTIME_CUDA_HASH32_H_
#define GANTRY_RUNTIME_CUDA_HASH32_H_

#include <cstdint>

#ifdef __CUDACC__
#define GANTRY_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define GANTRY_HOST_DEVICE inline
#endif

namespace gantry {

GANTRY_HOST_DEVICE uint32_t Hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

}  // namespace gantry

#endif  // GANTRY_RUNTIME_CUDA_HASH32_H_
