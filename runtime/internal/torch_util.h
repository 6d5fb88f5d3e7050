// Torch helpers shared inside the runtime. Internal: includes torch, so only
// runtime .cc files may include it.
#ifndef GANTRY_RUNTIME_INTERNAL_TORCH_UTIL_H_
#define GANTRY_RUNTIME_INTERNAL_TORCH_UTIL_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace gantry::runtime {

// "cpu", "cuda", "cuda:N". CUDA devices must exist.
absl::StatusOr<at::Device> ParseDevice(absl::string_view name);

// "float32", "bfloat16", "float16".
absl::StatusOr<at::ScalarType> ParseScalarType(absl::string_view name);
std::string ScalarTypeName(at::ScalarType type);

// The dtype a model runs in: `requested`, else its config's, except that a
// float16 config runs as float32 on the CPU (CPUs lack fast half GEMMs).
// INVALID_ARGUMENT for float16 asked for on the CPU.
absl::StatusOr<at::ScalarType> ResolveModelDtype(absl::string_view requested, absl::string_view config_dtype,
                                                 const at::Device& device);

// A CPU copy of `values` moved to `device`. On CUDA the host side is pinned
// and the copy is asynchronous, so uploads never stall the stream.
at::Tensor Upload(const std::vector<int64_t>& values, const at::Device& device);
at::Tensor Upload(const std::vector<float>& values, const at::Device& device);
at::Tensor Upload(const std::vector<int32_t>& values, const at::Device& device);

// A device-to-host copy started without waiting for it: on CUDA into
// pinned memory, asynchronously on the current stream, with an event behind
// it, so Wait returns once this copy is done, not once everything enqueued
// after it is (a step launched behind it keeps the device busy). On the CPU
// the tensor itself.
class HostCopy {
 public:
  HostCopy() = default;
  explicit HostCopy(const at::Tensor& source);
  bool defined() const { return host_.defined(); }
  // The host tensor (contiguous), once the copy has landed.
  const at::Tensor& Wait() const;

 private:
  at::Tensor host_;
  std::shared_ptr<void> done_;  // the CUDA event recorded after the copy; null on the CPU
};

// Errors of Gantry's own kernels and collectives inside torch code: thrown
// as LibTorch throws its own, so the step's or load's catch turns both into
// a Status.
inline void ThrowIfError(const absl::Status& status) {
  if (!status.ok()) throw std::runtime_error(std::string(status.message()));
}

// True when `error` is an allocator out-of-memory error.
bool IsOutOfMemory(const std::exception& error);
// The error's message without LibTorch's C++ backtrace (library addresses
// and source paths have no place in what a client reads).
std::string ErrorText(const std::exception& error);

// Returns cached, unused device memory to the driver (CUDA only).
void ReleaseCachedDeviceMemory();

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_TORCH_UTIL_H_
