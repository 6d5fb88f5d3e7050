// Prometheus metrics (prometheus-cpp), served on /metrics by the listener in
// metrics_http.h that main() starts.
//
// Event figures (loads, unloads, steps, requests) are counters and histograms
// updated as things happen; level figures (model states, memory, queue
// depths, KV usage, GPU sensors) are read when scraped from the registry's
// snapshots and the GPU monitor's last timed sample. Every `model` label value
// comes from the catalogue (requests for other names count under "_unknown"),
// so the number of series is bounded.
#ifndef GANTRY_SERVER_METRICS_H_
#define GANTRY_SERVER_METRICS_H_

#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "scheduler/model_registry.h"
#include "scheduler/observer.h"
#include "server/gpu_monitor.h"

namespace gantry::server {

class Metrics : public scheduler::SchedulerObserver {
 public:
  // `gpus` may be null (no NVML): the GPU series are then absent.
  Metrics(const scheduler::ModelRegistry* registry, const GpuMonitor* gpus);

  // What /metrics serves.
  std::vector<std::shared_ptr<prometheus::Collectable>> Collectables() const;

  // scheduler::SchedulerObserver
  void OnLoad(const std::string& model, absl::Duration took, bool ok) override;
  void OnLoadSource(const std::string& model, const std::string& source, uint64_t weight_bytes,
                    absl::Duration took) override;
  // A load's rate as gantry_model_load_bytes_per_second exports it: weight
  // bytes over the load's time (0 for a load that took no time).
  static double LoadRate(uint64_t weight_bytes, absl::Duration took);
  void OnUnload(const std::string& model, scheduler::UnloadReason reason) override;
  void OnStep(const std::string& model, const scheduler::StepReport& report) override;

  // One generation RPC, recorded by the RPC thread as it streams.
  class Request {
   public:
    Request(Metrics* metrics, const std::string& model);  // metrics may be null
    // A response carrying `tokens` new tokens was written.
    void OnTokens(int64_t tokens);
    // The last response: the request's prompt length and queue time.
    void OnUsage(int64_t prompt_tokens, double queue_seconds);
    // The RPC ends with `code` (a grpc::StatusCode value).
    void Finish(int code);

   private:
    Metrics* metrics_;
    std::string model_;
    absl::Time start_;
    std::optional<absl::Time> last_token_;
  };

 private:
  struct PerModel {
    prometheus::Histogram* load_duration;
    prometheus::Counter* loads_ok;
    prometheus::Counter* loads_failed;
    prometheus::Counter* loads_from_disk;
    prometheus::Gauge* load_rate;  // bytes per second of the last successful load
    prometheus::Counter* loads_from_host;
    std::map<scheduler::UnloadReason, prometheus::Counter*> unloads;
    prometheus::Histogram* time_to_first_token;
    prometheus::Histogram* inter_token_latency;
    prometheus::Histogram* request_duration;
    prometheus::Histogram* queue_time;
    prometheus::Counter* prompt_tokens;
    prometheus::Counter* generated_tokens;
    prometheus::Histogram* batch_size;
    prometheus::Counter* step_tokens_prompt;
    prometheus::Counter* step_tokens_decode;
    prometheus::Counter* preemptions;
    prometheus::Counter* prefix_queries;
    prometheus::Counter* prefix_hits;
  };
  // The label value for `model`: itself when in the catalogue.
  const std::string& ModelLabel(const std::string& model) const;
  PerModel* Find(const std::string& model);

  std::shared_ptr<prometheus::Registry> events_;
  std::shared_ptr<prometheus::Collectable> levels_;
  prometheus::Family<prometheus::Counter>* requests_;
  std::map<std::string, PerModel> models_;
};

}  // namespace gantry::server

#endif  // GANTRY_SERVER_METRICS_H_
