// NVML is reached through dlopen/dlsym rather than linking libnvidia-ml: the
// server must start on machines without the driver. The handful of NVML types
// used are declared here (NVML's C ABI is stable) so the build needs no CUDA
// toolkit headers.
#include "server/gpu_monitor.h"

#include <dlfcn.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"

namespace gantry::server {

namespace {

using NvmlReturn = int;  // nvmlReturn_t; 0 is NVML_SUCCESS
using NvmlDevice = struct NvmlDeviceOpaque*;
struct NvmlMemory {  // nvmlMemory_t
  unsigned long long total, free, used;
};
struct NvmlMemoryV2 {  // nvmlMemory_v2_t
  unsigned int version;
  unsigned long long total, reserved, free, used;
};
// NVML_STRUCT_VERSION(Memory, 2): the struct's size with the version in the top byte.
constexpr unsigned int kNvmlMemoryV2 = sizeof(NvmlMemoryV2) | (2u << 24);
static_assert(sizeof(NvmlMemoryV2) == 40, "nvmlMemory_v2_t is 40 bytes");
struct NvmlUtilization {  // nvmlUtilization_t
  unsigned int gpu, memory;
};
constexpr unsigned int kTemperatureGpu = 0;  // NVML_TEMPERATURE_GPU

}  // namespace

class Nvml {
 public:
  ~Nvml() {
    if (shutdown_) shutdown_();
    if (library_) dlclose(library_);
  }

  static absl::StatusOr<std::unique_ptr<Nvml>> Open() {
    auto nvml = std::unique_ptr<Nvml>(new Nvml);
    nvml->library_ = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (nvml->library_ == nullptr) {
      return absl::UnavailableError(absl::StrCat("cannot load libnvidia-ml.so.1: ", dlerror()));
    }
    if (auto s = nvml->Bind(); !s.ok()) return s;
    NvmlReturn r = nvml->init_();
    if (r != 0) return absl::UnavailableError(absl::StrCat("nvmlInit failed: ", nvml->error_string_(r)));
    nvml->shutdown_ = reinterpret_cast<NvmlReturn (*)()>(dlsym(nvml->library_, "nvmlShutdown"));
    return nvml;
  }

  absl::StatusOr<std::vector<GpuSample>> Sample() {
    unsigned int count = 0;
    if (NvmlReturn r = device_count_(&count); r != 0) return Error("nvmlDeviceGetCount", r);
    std::vector<GpuSample> samples;
    for (unsigned int i = 0; i < count; ++i) {
      NvmlDevice device = nullptr;
      if (NvmlReturn r = handle_by_index_(i, &device); r != 0) return Error("nvmlDeviceGetHandleByIndex", r);
      GpuSample s;
      s.index = static_cast<int>(i);
      char text[96] = {};
      if (get_name_(device, text, sizeof(text)) == 0) s.name = text;
      if (get_uuid_(device, text, sizeof(text)) == 0) s.uuid = text;
      if (absl::Status read = ReadMemory(device, &s); !read.ok()) return read;
      NvmlUtilization utilization{};
      if (utilization_(device, &utilization) == 0) {
        s.utilization = utilization.gpu / 100.0;
        s.memory_utilization = utilization.memory / 100.0;
      }
      unsigned int celsius = 0;
      if (temperature_(device, kTemperatureGpu, &celsius) == 0) s.temperature_celsius = celsius;
      unsigned int milliwatts = 0;
      if (power_(device, &milliwatts) == 0) s.power_watts = milliwatts / 1000.0;
      samples.push_back(std::move(s));
    }
    return samples;
  }

 private:
  Nvml() = default;

  // Memory used as nvidia-smi reports it. The v1 call counts the memory the
  // driver and firmware reserve (about 0.5 GiB on an H100) as used; v2
  // (drivers from R510) reports it apart, so prefer v2 where it exists.
  absl::Status ReadMemory(NvmlDevice device, GpuSample* sample) {
    if (memory_info_v2_ != nullptr) {
      NvmlMemoryV2 memory{};
      memory.version = kNvmlMemoryV2;
      if (memory_info_v2_(device, &memory) == 0) {
        sample->memory_used_bytes = memory.used;
        sample->memory_total_bytes = memory.total;
        return absl::OkStatus();
      }
    }
    NvmlMemory memory{};
    if (NvmlReturn r = memory_info_(device, &memory); r != 0) return Error("nvmlDeviceGetMemoryInfo", r);
    sample->memory_used_bytes = memory.used;
    sample->memory_total_bytes = memory.total;
    return absl::OkStatus();
  }

  template <typename F>
  absl::Status Symbol(const char* name, F* out) {
    *out = reinterpret_cast<F>(dlsym(library_, name));
    if (*out == nullptr) return absl::UnavailableError(absl::StrCat("libnvidia-ml.so.1 lacks ", name));
    return absl::OkStatus();
  }

  absl::Status Bind() {
    for (absl::Status s : {Symbol("nvmlInit_v2", &init_), Symbol("nvmlErrorString", &error_string_),
                           Symbol("nvmlDeviceGetCount_v2", &device_count_),
                           Symbol("nvmlDeviceGetHandleByIndex_v2", &handle_by_index_),
                           Symbol("nvmlDeviceGetName", &get_name_), Symbol("nvmlDeviceGetUUID", &get_uuid_),
                           Symbol("nvmlDeviceGetMemoryInfo", &memory_info_),
                           Symbol("nvmlDeviceGetUtilizationRates", &utilization_),
                           Symbol("nvmlDeviceGetTemperature", &temperature_),
                           Symbol("nvmlDeviceGetPowerUsage", &power_)}) {
      if (!s.ok()) return s;
    }
    memory_info_v2_ =  // optional: older drivers lack it
        reinterpret_cast<decltype(memory_info_v2_)>(dlsym(library_, "nvmlDeviceGetMemoryInfo_v2"));
    return absl::OkStatus();
  }

  absl::Status Error(const char* call, NvmlReturn r) {
    return absl::UnavailableError(absl::StrCat(call, " failed: ", error_string_(r)));
  }

  void* library_ = nullptr;
  NvmlReturn (*init_)() = nullptr;
  NvmlReturn (*shutdown_)() = nullptr;
  const char* (*error_string_)(NvmlReturn) = nullptr;
  NvmlReturn (*device_count_)(unsigned int*) = nullptr;
  NvmlReturn (*handle_by_index_)(unsigned int, NvmlDevice*) = nullptr;
  NvmlReturn (*get_name_)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*get_uuid_)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*memory_info_)(NvmlDevice, NvmlMemory*) = nullptr;
  NvmlReturn (*memory_info_v2_)(NvmlDevice, NvmlMemoryV2*) = nullptr;
  NvmlReturn (*utilization_)(NvmlDevice, NvmlUtilization*) = nullptr;
  NvmlReturn (*temperature_)(NvmlDevice, unsigned int, unsigned int*) = nullptr;
  NvmlReturn (*power_)(NvmlDevice, unsigned int*) = nullptr;
};

absl::StatusOr<std::unique_ptr<GpuMonitor>> GpuMonitor::Open() {
  auto nvml = Nvml::Open();
  if (!nvml.ok()) return nvml.status();
  return std::unique_ptr<GpuMonitor>(new GpuMonitor(*std::move(nvml)));
}

GpuMonitor::GpuMonitor(std::unique_ptr<Nvml> nvml) : nvml_(std::move(nvml)) {}

GpuMonitor::~GpuMonitor() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  stop_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<std::vector<GpuSample>> GpuMonitor::Sample() { return nvml_->Sample(); }

void GpuMonitor::Start(absl::Duration period) {
  thread_ = std::thread([this, period] {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      lock.unlock();
      auto samples = nvml_->Sample();
      if (!samples.ok() && samples.status().message() != last_error_) {
        last_error_ = std::string(samples.status().message());
        spdlog::warn("GPU metrics: sampling failed: {}", last_error_);
      }
      if (samples.ok() && static_cast<int>(samples->size()) != last_count_) {
        last_count_ = static_cast<int>(samples->size());
        spdlog::info("GPU metrics: NVML reports {} GPU(s)", last_count_);
      }
      lock.lock();
      // A failed sample keeps the series absent rather than stale.
      latest_ = samples.ok() ? *std::move(samples) : std::vector<GpuSample>();
      stop_.wait_for(lock, absl::ToChronoNanoseconds(period), [&] { return stopping_; });
    }
  });
}

std::vector<GpuSample> GpuMonitor::Latest() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return latest_;
}

}  // namespace gantry::server
