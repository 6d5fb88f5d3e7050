#include "runtime/internal/torch_util.h"
#include "runtime/model_runner.h"

#include <c10/util/Exception.h>
#include <torch/cuda.h>

#include <chrono>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"

#include <torch/version.h>

#ifdef GANTRY_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace gantry::runtime {

absl::StatusOr<at::Device> ParseDevice(absl::string_view name) {
  if (name == "cpu") return at::Device(at::kCPU);
  if (name == "cuda" || absl::StartsWith(name, "cuda:")) {
    int index = 0;
    if (name.size() > 5 && !absl::SimpleAtoi(name.substr(5), &index)) {
      return absl::InvalidArgumentError(absl::StrCat("device \"", name, "\": bad CUDA index"));
    }
    int64_t count = static_cast<int64_t>(torch::cuda::device_count());
    if (count == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device \"", name, "\": no CUDA device is usable (CPU-only LibTorch or no driver)"));
    }
    if (index < 0 || index >= count) {
      return absl::InvalidArgumentError(absl::StrCat("device \"", name, "\": index out of range, ",
                                                     count, " CUDA device(s) present"));
    }
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device \"", name, "\" is not one of cpu, cuda, cuda:N"));
}

absl::StatusOr<at::ScalarType> ParseScalarType(absl::string_view name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype \"", name, "\" is not one of float32, bfloat16, float16"));
}

absl::StatusOr<at::ScalarType> ResolveModelDtype(absl::string_view requested, absl::string_view config_dtype,
                                                 const at::Device& device) {
  absl::string_view name = requested.empty() ? config_dtype : requested;
  if (requested.empty() && device.is_cpu() && name == "float16") name = "float32";
  auto type = ParseScalarType(name);
  if (!type.ok()) return type.status();
  if (device.is_cpu() && *type == at::kHalf) {
    return absl::InvalidArgumentError("dtype float16 is not supported on the CPU; use float32 or bfloat16");
  }
  return type;
}

std::string ScalarTypeName(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return c10::toString(type);
  }
}

namespace {
template <typename T>
at::Tensor UploadImpl(const std::vector<T>& values, at::ScalarType type, const at::Device& device) {
  auto options = at::TensorOptions().dtype(type);
  const bool cuda = device.is_cuda();
  if (cuda) options = options.pinned_memory(true);
  at::Tensor host = at::empty({static_cast<int64_t>(values.size())}, options);
  if (!values.empty()) std::memcpy(host.data_ptr(), values.data(), values.size() * sizeof(T));
  if (!cuda) return host;
  return host.to(device, /*non_blocking=*/true);
}
}  // namespace

at::Tensor Upload(const std::vector<int64_t>& values, const at::Device& device) {
  return UploadImpl(values, at::kLong, device);
}

at::Tensor Upload(const std::vector<float>& values, const at::Device& device) {
  return UploadImpl(values, at::kFloat, device);
}

at::Tensor Upload(const std::vector<int32_t>& values, const at::Device& device) {
  return UploadImpl(values, at::kInt, device);
}

HostCopy::HostCopy(const at::Tensor& source) {
  if (!source.is_cuda()) {
    host_ = source.contiguous();
    return;
  }
#ifdef GANTRY_WITH_CUDA
  host_ = at::empty(source.sizes(), source.options().device(at::kCPU).pinned_memory(true));
  host_.copy_(source, /*non_blocking=*/true);
  auto event = std::make_shared<at::cuda::CUDAEvent>();
  event->record(at::cuda::getCurrentCUDAStream(source.device().index()));
  done_ = std::move(event);
#else
  host_ = source.to(at::kCPU).contiguous();
#endif
}

const at::Tensor& HostCopy::Wait() const {
#ifdef GANTRY_WITH_CUDA
  if (done_) static_cast<at::cuda::CUDAEvent*>(done_.get())->synchronize();
#endif
  return host_;
}

int CudaDeviceCount() { return static_cast<int>(torch::cuda::device_count()); }

std::vector<CudaDeviceInfo> DescribeCudaDevices() {
  std::vector<CudaDeviceInfo> devices;
#ifdef GANTRY_WITH_CUDA
  for (int i = 0; i < CudaDeviceCount(); ++i) {
    const cudaDeviceProp* prop = at::cuda::getDeviceProperties(i);
    devices.push_back({i, prop->name, static_cast<uint64_t>(prop->totalGlobalMem), prop->major, prop->minor});
  }
#endif
  return devices;
}

absl::StatusOr<double> MeasureCopyBandwidth(const std::string& device_name) {
  auto device = ParseDevice(device_name);
  if (!device.ok()) return device.status();
  if (!device->is_cuda()) return absl::FailedPreconditionError("copy bandwidth is measured on CUDA devices only");
  try {
    constexpr int64_t kBytes = int64_t{1} << 30;
    constexpr int kRounds = 20;
    auto options = at::TensorOptions().dtype(at::kByte).device(*device);
    at::Tensor source = at::randint(0, 255, {kBytes}, options);
    at::Tensor target = at::empty({kBytes}, options);
    target.copy_(source);  // warm-up
    torch::cuda::synchronize(device->index());
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kRounds; ++i) target.copy_(source);
    torch::cuda::synchronize(device->index());
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return 2.0 * kBytes * kRounds / seconds;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("measuring copy bandwidth failed: ", ErrorText(e)));
  }
}

std::string DescribeBuild() {
  std::string text = absl::StrCat("LibTorch ", TORCH_VERSION_MAJOR, ".", TORCH_VERSION_MINOR, ".", TORCH_VERSION_PATCH);
#ifdef GANTRY_WITH_CUDA
  absl::StrAppend(&text, ", CUDA ", CUDART_VERSION / 1000, ".", (CUDART_VERSION % 1000) / 10);
#else
  absl::StrAppend(&text, ", CPU only");
#endif
  return text;
}

std::string ErrorText(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) return c10_error->what_without_backtrace();
  return error.what();
}

bool IsOutOfMemory(const std::exception& error) {
  absl::string_view what = error.what();
  return absl::StrContains(what, "out of memory") || absl::StrContains(what, "OutOfMemory") ||
         absl::StrContains(what, "DefaultCPUAllocator: can't allocate memory") ||
         absl::StrContains(what, "DefaultCPUAllocator: not enough memory");
}

std::vector<CudaAllocatorStats> DescribeCudaAllocators() {
  std::vector<CudaAllocatorStats> out;
#ifdef GANTRY_WITH_CUDA
  // Until the first CUDA tensor, the caching allocator has no per-device state
  // and getDeviceStats throws ("did you call init?"); it holds nothing then.
  const bool initialized = c10::cuda::CUDACachingAllocator::get()->initialized();
  for (int i = 0; i < CudaDeviceCount(); ++i) {
    if (!initialized) {
      out.push_back({i, 0, 0});
      continue;
    }
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(i));
    // Index 0 is StatType::AGGREGATE (all pools) in LibTorch 1.13 and 2.x;
    // the enum's namespace moved between them.
    out.push_back({i, static_cast<uint64_t>(stats.allocated_bytes[0].current),
                   static_cast<uint64_t>(stats.reserved_bytes[0].current)});
  }
#endif
  return out;
}

void ReleaseCachedDeviceMemory() {
#ifdef GANTRY_WITH_CUDA
  c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

}  // namespace gantry::runtime
