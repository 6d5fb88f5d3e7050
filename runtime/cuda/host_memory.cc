#include "runtime/cuda/host_memory.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"

namespace gantry::cuda {

absl::Status PinHostMemory(void* data, size_t bytes) {
  const cudaError_t error = cudaHostRegister(data, bytes, cudaHostRegisterPortable);
  if (error == cudaSuccess) return absl::OkStatus();
  (void)cudaGetLastError();  // not this thread's next launch's error
  return absl::FailedPreconditionError(absl::StrCat("cudaHostRegister of ", bytes, " bytes failed: ",
                                                    cudaGetErrorName(error), " (", cudaGetErrorString(error), ")"));
}

void UnpinHostMemory(void* data) {
  if (cudaHostUnregister(data) != cudaSuccess) (void)cudaGetLastError();
}

}  // namespace gantry::cuda
