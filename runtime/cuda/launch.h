// The launchers behind kernels.h, one per .cu file. kernels.cc validates the
// arguments and turns the returned cudaError_t into a Status; the launchers
// assume valid arguments and only launch.
#ifndef GANTRY_RUNTIME_CUDA_LAUNCH_H_
#define GANTRY_RUNTIME_CUDA_LAUNCH_H_

#include <cuda_runtime.h>

#include <utility>

#include "runtime/cuda/kernels.h"

namespace gantry::cuda {

cudaError_t LaunchRmsNorm(const RmsNormArgs& args, cudaStream_t stream);            // norm.cu
cudaError_t LaunchAddLayerNorm(const AddLayerNormArgs& args, cudaStream_t stream);  // norm.cu
cudaError_t LaunchEmbedLayerNorm(const EmbedLayerNormArgs& args, cudaStream_t stream);  // norm.cu
cudaError_t LaunchRopeAndCacheWrite(const RopeCacheArgs& args, cudaStream_t stream);  // rope_cache.cu
cudaError_t LaunchSiluMul(const SiluMulArgs& args, cudaStream_t stream);            // activation.cu
cudaError_t LaunchDecodeAttention(const PagedAttentionArgs& args, cudaStream_t stream);   // decode_attention.cu
cudaError_t LaunchPrefillAttention(const PagedAttentionArgs& args, cudaStream_t stream);  // prefill_attention.cu

cudaError_t LaunchSkinnyGemm(const SkinnyGemmArgs& args, cudaStream_t stream);                // skinny_gemm.cu
cudaError_t LaunchDecodeGemv(const DecodeGemvArgs& args, cudaStream_t stream);               // decode_gemv.cu
cudaError_t LaunchSampleTokens(const SampleArgs& args, cudaStream_t stream);              // sampling.cu

// Launches `kernel` on `stream`, as a programmatic dependent launch when
// ProgrammaticDependentLaunch() says so: it may then be scheduled before the
// previous kernel of the stream has finished, so the kernel must call
// WaitForPriorGrid() (pdl.cuh) in every thread block before it reads or
// writes anything that an earlier kernel writes or reads. Outside a .cu file
// only declare, never instantiate, it (the launch needs nvcc's kernel stubs).
template <typename... KernelParams, typename... Args>
cudaError_t LaunchKernel(void (*kernel)(KernelParams...), dim3 grid, dim3 block, size_t smem_bytes,
                         cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute;
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = ProgrammaticDependentLaunch() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace gantry::cuda

#endif  // GANTRY_RUNTIME_CUDA_LAUNCH_H_
