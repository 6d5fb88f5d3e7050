// The storage type Gantry's CUDA kernels (runtime/cuda/kernels.h) take for a
// tensor's dtype. Internal: includes torch; only for runtime .cc files built
// with the kernels (GANTRY_WITH_CUDA_KERNELS).
#ifndef GANTRY_RUNTIME_INTERNAL_CUDA_KERNEL_DTYPE_H_
#define GANTRY_RUNTIME_INTERNAL_CUDA_KERNEL_DTYPE_H_

#include <ATen/ATen.h>

#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "runtime/cuda/kernels.h"

namespace gantry::runtime {

// std::invalid_argument for a dtype the kernels do not take, thrown as
// LibTorch throws (inside a step or load, whose catch makes it a Status).
inline cuda::DType KernelDType(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default: throw std::invalid_argument(absl::StrCat("no CUDA kernels for dtype ", c10::toString(type)));
  }
}

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_CUDA_KERNEL_DTYPE_H_
