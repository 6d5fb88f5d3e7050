// GPU figures from NVML, sampled on a timer (not on each scrape: NVML calls
// take milliseconds). NVML is opened at run time with dlopen, so the binary
// starts where there is no NVIDIA driver; there the monitor reports nothing.
#ifndef GANTRY_SERVER_GPU_MONITOR_H_
#define GANTRY_SERVER_GPU_MONITOR_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace gantry::server {

struct GpuSample {
  int index = 0;  // NVML's index
  std::string uuid;
  std::string name;
  uint64_t memory_used_bytes = 0;
  uint64_t memory_total_bytes = 0;
  double utilization = 0;         // 0-1, GPU busy time over NVML's last sample period
  double memory_utilization = 0;  // 0-1, memory controller busy time
  double temperature_celsius = 0;
  double power_watts = 0;
};

class Nvml;

class GpuMonitor {
 public:
  // Opens NVML; an error (no driver, no library) names why.
  static absl::StatusOr<std::unique_ptr<GpuMonitor>> Open();
  ~GpuMonitor();

  // Takes one sample of every GPU now.
  absl::StatusOr<std::vector<GpuSample>> Sample();
  // Samples every `period` on a thread until destruction.
  void Start(absl::Duration period);
  // The last sample taken by Start's thread (empty before the first).
  std::vector<GpuSample> Latest() const;

 private:
  explicit GpuMonitor(std::unique_ptr<Nvml> nvml);

  std::unique_ptr<Nvml> nvml_;
  mutable std::mutex mutex_;
  std::condition_variable stop_;
  bool stopping_ = false;
  std::vector<GpuSample> latest_;
  std::string last_error_;  // logged once per distinct error (the sampling thread's)
  int last_count_ = -1;     // GPUs in the last sample, logged when it changes
  std::thread thread_;
};

}  // namespace gantry::server

#endif  // GANTRY_SERVER_GPU_MONITOR_H_
