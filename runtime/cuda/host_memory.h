// Page-locking host memory the process already owns (cudaHostRegister), so
// copies between it and any GPU are DMA at PCIe speed. Torch-free and free of
// CUDA headers, like kernels.h.
#ifndef GANTRY_RUNTIME_CUDA_HOST_MEMORY_H_
#define GANTRY_RUNTIME_CUDA_HOST_MEMORY_H_

#include <cstddef>

#include "absl/status/status.h"

namespace gantry::cuda {

// Pins [data, data + bytes) for every CUDA context (portable). Errors: no
// GPU, or the driver refuses (the memory-lock limit, for one).
absl::Status PinHostMemory(void* data, size_t bytes);
// Undoes PinHostMemory; the memory must no longer be in use by a copy.
void UnpinHostMemory(void* data);

}  // namespace gantry::cuda

#endif  // GANTRY_RUNTIME_CUDA_HOST_MEMORY_H_
