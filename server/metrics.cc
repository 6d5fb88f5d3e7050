#include "server/metrics.h"

#include <map>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "runtime/model_runner.h"

namespace gantry::server {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

const std::string kUnknownModel = "_unknown";

// Latency buckets for LLM serving: milliseconds (a decode step) to minutes
// (a long generation, a cold load behind a queue).
const prometheus::Histogram::BucketBoundaries kRequestSeconds = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600};
const prometheus::Histogram::BucketBoundaries kInterTokenSeconds = {
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5};
const prometheus::Histogram::BucketBoundaries kLoadSeconds = {0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300};
const prometheus::Histogram::BucketBoundaries kBatchSizes = {1, 2, 4, 8, 16, 32, 64, 128, 256};

// Level figures, read at scrape time.
class LevelCollector : public prometheus::Collectable {
 public:
  LevelCollector(const scheduler::ModelRegistry* registry, const GpuMonitor* gpus) : registry_(registry), gpus_(gpus) {}

  std::vector<MetricFamily> Collect() const override {
    std::vector<MetricFamily> out;
    MetricFamily state = Gauge("gantry_model_state", "1 for the model's current lifecycle state, 0 for the others");
    MetricFamily cost = Gauge("gantry_model_cost_bytes",
                              "Bytes the model counts against its device's memory budget (weights plus KV pool)");
    MetricFamily weights = Gauge("gantry_model_weight_bytes", "Device bytes held by the loaded model's weights");
    MetricFamily kv = Gauge("gantry_model_kv_cache_bytes", "Device bytes held by the loaded model's KV-cache pool");
    MetricFamily kv_usage = Gauge("gantry_model_kv_cache_usage_ratio", "Share of the KV-cache blocks in use (0-1)");
    MetricFamily running = Gauge("gantry_requests_running", "Requests generating now");
    MetricFamily waiting = Gauge("gantry_requests_waiting", "Requests queued for a place in the batch");
    for (const auto& s : registry_->List()) {
      const std::string& model = s.spec.name;
      for (auto candidate : {scheduler::ModelState::kUnloaded, scheduler::ModelState::kLoading,
                             scheduler::ModelState::kReady, scheduler::ModelState::kUnloading,
                             scheduler::ModelState::kFailed}) {
        Add(&state, {{"model", model}, {"state", scheduler::ModelStateName(candidate)}}, s.state == candidate);
      }
      Add(&cost, {{"model", model}}, static_cast<double>(s.cost_bytes));
      Add(&running, {{"model", model}}, static_cast<double>(s.stats.running));
      Add(&waiting, {{"model", model}}, static_cast<double>(s.stats.waiting));
      if (s.info) {
        // A tensor-parallel model's bytes, spread evenly over its devices
        // (each rank holds 1/N of the split weights and of the KV pool).
        std::map<std::string, double> share;  // device -> its fraction (CPU ranks share "cpu")
        for (const std::string& device : s.info->devices) share[device] += 1.0 / s.info->devices.size();
        for (const auto& [device, fraction] : share) {
          Add(&weights, {{"model", model}, {"device", device}}, fraction * static_cast<double>(s.info->weight_bytes));
          Add(&kv, {{"model", model}, {"device", device}}, fraction * static_cast<double>(s.info->kv_cache_bytes));
        }
        const double total = static_cast<double>(s.stats.blocks_total);
        Add(&kv_usage, {{"model", model}}, total > 0 ? (total - s.stats.blocks_free) / total : 0.0);
      }
    }
    for (auto* family : {&state, &cost, &weights, &kv, &kv_usage, &running, &waiting}) out.push_back(std::move(*family));

    const auto [host_used, host_budget] = registry_->HostTierUse();
    MetricFamily host_cache = Gauge("gantry_host_cache_bytes",
                                    "The host-memory tier of evicted models' weights: bytes used and its budget");
    Add(&host_cache, {{"kind", "used"}}, static_cast<double>(host_used));
    Add(&host_cache, {{"kind", "budget"}}, static_cast<double>(host_budget));
    out.push_back(std::move(host_cache));

    MetricFamily budget = Gauge("gantry_memory_budget_bytes", "Bytes models may take on the device");
    MetricFamily budget_used = Gauge("gantry_memory_budget_used_bytes", "Budget bytes taken by loaded models");
    for (const auto& [device, use] : registry_->BudgetUse()) {
      Add(&budget, {{"device", device}}, static_cast<double>(use.second));
      Add(&budget_used, {{"device", device}}, static_cast<double>(use.first));
    }
    out.push_back(std::move(budget));
    out.push_back(std::move(budget_used));

    const auto allocators = runtime::DescribeCudaAllocators();
    if (!allocators.empty()) {
      MetricFamily allocated = Gauge("gantry_cuda_allocator_allocated_bytes",
                                     "Bytes held by live tensors in LibTorch's CUDA caching allocator");
      MetricFamily reserved = Gauge("gantry_cuda_allocator_reserved_bytes",
                                    "Bytes LibTorch's CUDA caching allocator holds from the driver");
      for (const auto& a : allocators) {
        const std::string device = absl::StrCat("cuda:", a.device);
        Add(&allocated, {{"device", device}}, static_cast<double>(a.allocated_bytes));
        Add(&reserved, {{"device", device}}, static_cast<double>(a.reserved_bytes));
      }
      out.push_back(std::move(allocated));
      out.push_back(std::move(reserved));
    }

    const std::vector<GpuSample> gpus = gpus_ ? gpus_->Latest() : std::vector<GpuSample>();
    if (!gpus.empty()) {
      MetricFamily used = Gauge("gantry_gpu_memory_used_bytes",
                                "GPU memory in use by all processes, as nvidia-smi shows it (NVML, driver reserve excluded)");
      MetricFamily total = Gauge("gantry_gpu_memory_total_bytes", "GPU memory (NVML)");
      MetricFamily util = Gauge("gantry_gpu_utilization_ratio", "Share of time a kernel ran on the GPU (NVML, 0-1)");
      MetricFamily mem_util =
          Gauge("gantry_gpu_memory_utilization_ratio", "Share of time GPU memory was read or written (NVML, 0-1)");
      MetricFamily temperature = Gauge("gantry_gpu_temperature_celsius", "GPU die temperature (NVML)");
      MetricFamily power = Gauge("gantry_gpu_power_watts", "GPU power draw (NVML)");
      for (const auto& g : gpus) {
        const std::map<std::string, std::string> labels = {
            {"gpu", std::to_string(g.index)}, {"uuid", g.uuid}, {"name", g.name}};
        Add(&used, labels, static_cast<double>(g.memory_used_bytes));
        Add(&total, labels, static_cast<double>(g.memory_total_bytes));
        Add(&util, labels, g.utilization);
        Add(&mem_util, labels, g.memory_utilization);
        Add(&temperature, labels, g.temperature_celsius);
        Add(&power, labels, g.power_watts);
      }
      for (auto* family : {&used, &total, &util, &mem_util, &temperature, &power}) out.push_back(std::move(*family));
    }
    return out;
  }

 private:
  static MetricFamily Gauge(const std::string& name, const std::string& help) {
    MetricFamily family;
    family.name = name;
    family.help = help;
    family.type = MetricType::Gauge;
    return family;
  }
  static void Add(MetricFamily* family, const std::map<std::string, std::string>& labels, double value) {
    ClientMetric metric;
    for (const auto& [name, v] : labels) metric.label.push_back({name, v});
    metric.gauge.value = value;
    family->metric.push_back(std::move(metric));
  }

  const scheduler::ModelRegistry* registry_;
  const GpuMonitor* gpus_;
};

}  // namespace

Metrics::Metrics(const scheduler::ModelRegistry* registry, const GpuMonitor* gpus)
    : events_(std::make_shared<prometheus::Registry>()),
      levels_(std::make_shared<LevelCollector>(registry, gpus)) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  auto& load_duration = BuildHistogram()
                            .Name("gantry_model_load_duration_seconds")
                            .Help("Time to load a model onto its device")
                            .Register(*events_);
  auto& loads = BuildCounter().Name("gantry_model_loads_total").Help("Model loads by outcome").Register(*events_);
  auto& loads_by_source = BuildCounter()
                              .Name("gantry_model_loads_by_source_total")
                              .Help("Successful model loads by where the weights came from: disk (the model "
                                    "folder) or host (the host-memory tier, host_cache_mib)")
                              .Register(*events_);
  auto& load_rate = BuildGauge()
                        .Name("gantry_model_load_bytes_per_second")
                        .Help("Weight bytes put on the device per second by the model's last successful load "
                              "(from disk or the host tier, see gantry_model_loads_by_source_total)")
                        .Register(*events_);
  auto& unloads = BuildCounter()
                       .Name("gantry_model_unloads_total")
                       .Help("Model unloads by reason: requested (Models.Unload), idle (idle_timeout), memory "
                             "(evicted to make room)")
                       .Register(*events_);
  requests_ = &BuildCounter()
                   .Name("gantry_requests_total")
                   .Help("Generate and Chat requests by model and final gRPC status code")
                   .Register(*events_);
  auto& ttft = BuildHistogram()
                   .Name("gantry_time_to_first_token_seconds")
                   .Help("From the request's arrival to its first token written (includes queueing and loading)")
                   .Register(*events_);
  auto& itl = BuildHistogram()
                  .Name("gantry_inter_token_latency_seconds")
                  .Help("Time between consecutive tokens of a request, as written")
                  .Register(*events_);
  auto& duration = BuildHistogram()
                       .Name("gantry_request_duration_seconds")
                       .Help("End-to-end time of a generation request")
                       .Register(*events_);
  auto& queue = BuildHistogram()
                    .Name("gantry_request_queue_seconds")
                    .Help("Time a request waited in its model's queue before it was first scheduled")
                    .Register(*events_);
  auto& prompt_tokens =
      BuildCounter().Name("gantry_prompt_tokens_total").Help("Prompt tokens of requests that ran to their end").Register(*events_);
  auto& generated_tokens =
      BuildCounter().Name("gantry_generated_tokens_total").Help("Tokens generated and written").Register(*events_);
  auto& batch_size =
      BuildHistogram().Name("gantry_batch_size").Help("Sequences in each engine step").Register(*events_);
  auto& step_tokens = BuildCounter()
                          .Name("gantry_step_tokens_total")
                          .Help("Tokens processed by engine steps: prompt (prefill and recomputation) or decode")
                          .Register(*events_);
  auto& prefix_queries = BuildCounter()
                             .Name("gantry_prefix_cache_queries_total")
                             .Help("Tokens of sequences looked up in the prefix cache as they started")
                             .Register(*events_);
  auto& prefix_hits = BuildCounter()
                          .Name("gantry_prefix_cache_hits_total")
                          .Help("Tokens found in the prefix cache (their keys and values not computed again)")
                          .Register(*events_);
  auto& preemptions = BuildCounter()
                          .Name("gantry_preemptions_total")
                          .Help("Running requests preempted for lack of KV blocks (recomputed later)")
                          .Register(*events_);
  std::vector<std::string> names = registry->Names();
  names.push_back(kUnknownModel);
  for (const std::string& name : names) {
    const prometheus::Labels m = {{"model", name}};
    PerModel p;
    p.load_duration = &load_duration.Add(m, kLoadSeconds);
    p.loads_ok = &loads.Add({{"model", name}, {"outcome", "ok"}});
    p.loads_failed = &loads.Add({{"model", name}, {"outcome", "failed"}});
    p.loads_from_disk = &loads_by_source.Add({{"model", name}, {"source", "disk"}});
    p.loads_from_host = &loads_by_source.Add({{"model", name}, {"source", "host"}});
    p.load_rate = &load_rate.Add({{"model", name}});
    for (auto reason : {scheduler::UnloadReason::kRequested, scheduler::UnloadReason::kIdle,
                        scheduler::UnloadReason::kMemory}) {
      p.unloads[reason] = &unloads.Add({{"model", name}, {"reason", scheduler::UnloadReasonName(reason)}});
    }
    p.time_to_first_token = &ttft.Add(m, kRequestSeconds);
    p.inter_token_latency = &itl.Add(m, kInterTokenSeconds);
    p.request_duration = &duration.Add(m, kRequestSeconds);
    p.queue_time = &queue.Add(m, kRequestSeconds);
    p.prompt_tokens = &prompt_tokens.Add(m);
    p.generated_tokens = &generated_tokens.Add(m);
    p.batch_size = &batch_size.Add(m, kBatchSizes);
    p.step_tokens_prompt = &step_tokens.Add({{"model", name}, {"kind", "prompt"}});
    p.step_tokens_decode = &step_tokens.Add({{"model", name}, {"kind", "decode"}});
    p.preemptions = &preemptions.Add(m);
    p.prefix_queries = &prefix_queries.Add(m);
    p.prefix_hits = &prefix_hits.Add(m);
    models_.emplace(name, p);
    requests_->Add({{"model", name}, {"code", "OK"}});  // present from the start, so rates start at 0
  }
}

std::vector<std::shared_ptr<prometheus::Collectable>> Metrics::Collectables() const { return {events_, levels_}; }

const std::string& Metrics::ModelLabel(const std::string& model) const {
  auto it = models_.find(model);
  return it == models_.end() ? kUnknownModel : it->first;
}

Metrics::PerModel* Metrics::Find(const std::string& model) { return &models_.at(ModelLabel(model)); }

void Metrics::OnLoad(const std::string& model, absl::Duration took, bool ok) {
  PerModel* p = Find(model);
  if (ok) {
    p->loads_ok->Increment();
    p->load_duration->Observe(absl::ToDoubleSeconds(took));
  } else {
    p->loads_failed->Increment();
  }
}

void Metrics::OnLoadSource(const std::string& model, const std::string& source, uint64_t weight_bytes,
                           absl::Duration took) {
  PerModel* p = Find(model);
  (source == "host" ? p->loads_from_host : p->loads_from_disk)->Increment();
  if (took > absl::ZeroDuration()) p->load_rate->Set(LoadRate(weight_bytes, took));
}

double Metrics::LoadRate(uint64_t weight_bytes, absl::Duration took) {
  const double seconds = absl::ToDoubleSeconds(took);
  return seconds > 0 ? static_cast<double>(weight_bytes) / seconds : 0.0;
}

void Metrics::OnUnload(const std::string& model, scheduler::UnloadReason reason) {
  Find(model)->unloads.at(reason)->Increment();
}

void Metrics::OnStep(const std::string& model, const scheduler::StepReport& report) {
  PerModel* p = Find(model);
  if (report.sequences > 0) p->batch_size->Observe(static_cast<double>(report.sequences));
  p->step_tokens_prompt->Increment(static_cast<double>(report.prompt_tokens));
  p->step_tokens_decode->Increment(static_cast<double>(report.decode_tokens));
  p->preemptions->Increment(static_cast<double>(report.preempted));
  p->prefix_queries->Increment(static_cast<double>(report.prefix_query_tokens));
  p->prefix_hits->Increment(static_cast<double>(report.prefix_hit_tokens));
}

Metrics::Request::Request(Metrics* metrics, const std::string& model)
    : metrics_(metrics), model_(metrics ? metrics->ModelLabel(model) : model), start_(absl::Now()) {}

void Metrics::Request::OnTokens(int64_t tokens) {
  if (metrics_ == nullptr || tokens <= 0) return;
  PerModel* p = metrics_->Find(model_);
  p->generated_tokens->Increment(static_cast<double>(tokens));
  const absl::Time now = absl::Now();
  if (last_token_) {
    // Tokens written together share the interval since the previous write.
    const double gap = absl::ToDoubleSeconds(now - *last_token_) / static_cast<double>(tokens);
    for (int64_t i = 0; i < tokens; ++i) p->inter_token_latency->Observe(gap);
  } else {
    p->time_to_first_token->Observe(absl::ToDoubleSeconds(now - start_));
  }
  last_token_ = now;
}

void Metrics::Request::OnUsage(int64_t prompt_tokens, double queue_seconds) {
  if (metrics_ == nullptr) return;
  PerModel* p = metrics_->Find(model_);
  p->prompt_tokens->Increment(static_cast<double>(prompt_tokens));
  p->queue_time->Observe(queue_seconds);
}

void Metrics::Request::Finish(int code) {
  if (metrics_ == nullptr) return;
  metrics_->Find(model_)->request_duration->Observe(absl::ToDoubleSeconds(absl::Now() - start_));
  metrics_->requests_
      ->Add({{"model", model_}, {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(code))}})
      .Increment();
}

}  // namespace gantry::server
