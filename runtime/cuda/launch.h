// The launchers behind kernels.h, one per .cu file. kernels.cc validates the
// arguments and turns the returned cudaError_t into a Status; the launchers
// assume valid arguments and only launch.
#ifndef GANTRY_RUNTIME_CUDA_LAUNCH_H_
#define GANTRY_RUNTIME_CUDA_LAUNCH_H_

#include <cuda_runtime.h>

#include "runtime/cuda/kernels.h"

namespace gantry::cuda {

cudaError_t LaunchRmsNorm(const RmsNormArgs& args, cudaStream_t stream);            // norm.cu
cudaError_t LaunchRopeAndCacheWrite(const RopeCacheArgs& args, cudaStream_t stream);  // rope_cache.cu
cudaError_t LaunchSiluMul(const SiluMulArgs& args, cudaStream_t stream);            // activation.cu
cudaError_t LaunchDecodeAttention(const PagedAttentionArgs& args, cudaStream_t stream);   // decode_attention.cu
cudaError_t LaunchPrefillAttention(const PagedAttentionArgs& args, cudaStream_t stream);  // prefill_attention.cu

cudaError_t LaunchSkinnyGemm(const SkinnyGemmArgs& args, cudaStream_t stream);                // skinny_gemm.cu
cudaError_t LaunchSampleTokens(const SampleArgs& args, cudaStream_t stream);              // sampling.cu

}  // namespace gantry::cuda

#endif  // GANTRY_RUNTIME_CUDA_LAUNCH_H_
