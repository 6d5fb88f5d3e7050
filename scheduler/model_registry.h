// The model catalogue and each model's lifecycle, an explicit state machine
// as Triton's ModelLifeCycle:
//
//   kUnloaded --load--> kLoading --ok--> kReady --unload/evict--> kUnloading --> kUnloaded
//                           \--error--> kFailed --next request--> kLoading
//
// A model loads on its first request; concurrent requests wait for that one
// load. A request for a model being unloaded waits, then reloads it.
//
// Memory: each device may have a byte budget. A model's cost (weights in its
// dtype plus its KV pool, known before loading) must fit; a load that does not
// fit first unloads the least recently used idle, non-resident models on that
// device. A model with a lease (a request in flight) is never evicted. Idle
// models unload after their idle_timeout.
#ifndef GANTRY_SCHEDULER_MODEL_REGISTRY_H_
#define GANTRY_SCHEDULER_MODEL_REGISTRY_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"
#include "scheduler/host_tier.h"
#include "scheduler/model_engine.h"
#include "scheduler/observer.h"

namespace gantry::scheduler {

struct ModelSpec {
  std::string name;
  std::string path;            // Hugging Face model folder
  // What it serves; nullopt: what the folder's architecture serves
  // (runtime/model_task.h). Set, it must agree with the folder.
  std::optional<runtime::ModelTask> task;
  std::string device = "cpu";  // "cpu", "cuda:N", or "cuda" for the GPU with the most free budget
  // Tensor parallelism over this many GPUs: from cuda:N on (device "cuda:N"),
  // or the ones with the most free budget (device "cuda"); or the listed
  // `devices`. Its cost (per GPU: weights / N plus what every rank repeats,
  // and its KV pool) is charged on each. When loading, `devices` holds the
  // placement the registry chose.
  int32_t tensor_parallel = 1;
  std::vector<std::string> devices;
  // Keep the weights in the host tier (RegistryOptions::host_cache_bytes)
  // when the model leaves its device; false opts the model out.
  bool host_cache = true;
  // Set by the registry for the loader: the host tier's copy, if any.
  std::shared_ptr<const runtime::HostWeights> host_weights;
  std::string dtype;           // "" = the config's
  int64_t max_context = 0;     // 0 = the model's
  uint64_t kv_cache_bytes = 64ull << 20;  // generation models; encoders charge an activation estimate instead
  int32_t block_size = 16;
  EngineOptions engine;
  bool resident = false;                               // load at start-up, never evicted
  absl::Duration idle_timeout = absl::ZeroDuration();  // 0 = never
};


struct ModelSnapshot {
  ModelSpec spec;
  ModelState state = ModelState::kUnloaded;
  std::string error;                       // kFailed: the load error
  std::string device;                      // where it is (or was last) placed (rank 0 when tensor-parallel)
  std::vector<std::string> devices;        // every device of that placement
  uint64_t cost_bytes = 0;                 // its budget charge on each of its devices, once estimated
  std::string weights_at;                  // "gpu" or "cpu" (loaded), "host" (the host tier) or "disk"
  std::string task;                        // "generate", "embed" or "rerank"; "" when the folder is unreadable
  int64_t leases = 0;                      // requests holding it
  std::optional<runtime::ModelInfo> info;  // when loaded
  EngineStats stats;
  std::optional<absl::Time> last_used;
};

struct RegistryCounters {
  int64_t loads = 0;
  int64_t load_failures = 0;
  int64_t unloads = 0;            // explicit Models.Unload
  int64_t evictions_idle = 0;
  int64_t evictions_memory = 0;
  int64_t loads_from_host = 0;    // loads whose weights came from the host tier
  int64_t host_tier_copies = 0;   // models whose weights were copied to the host tier on leaving their device
};

struct RegistryOptions {
  // Device ("cpu", "cuda:0", ...) -> bytes models may take there; a device
  // without an entry has no limit.
  std::map<std::string, uint64_t> budgets;
  // GPUs a model with device "cuda" may be placed on.
  std::vector<std::string> gpus;
  // A forced unload cancels running requests after this long.
  absl::Duration unload_grace = absl::Seconds(10);
  // The host tier's budget for the whole server (0: no tier).
  uint64_t host_cache_bytes = 0;
};

using ModelLoader = std::function<absl::StatusOr<LoadedModel>(const ModelSpec&)>;
using ModelCost = std::function<absl::StatusOr<uint64_t>(const ModelSpec&)>;

class ModelRegistry;

// A request's hold on a ready model: while any lease lives the model is not
// evicted. Movable, not copyable.
class ModelLease {
 public:
  ModelLease(ModelRegistry* registry, std::string name, uint64_t generation, std::shared_ptr<ModelEngine> engine)
      : registry_(registry), name_(std::move(name)), generation_(generation), engine_(std::move(engine)) {}
  ModelLease(ModelLease&& other) noexcept
      : registry_(std::exchange(other.registry_, nullptr)), name_(std::move(other.name_)),
        generation_(other.generation_), engine_(std::move(other.engine_)) {}
  ModelLease& operator=(ModelLease&& other) noexcept;
  ModelLease(const ModelLease&) = delete;
  ModelLease& operator=(const ModelLease&) = delete;
  ~ModelLease();

  ModelEngine* operator->() const { return engine_.get(); }
  ModelEngine& operator*() const { return *engine_; }

 private:
  ModelRegistry* registry_;
  std::string name_;
  uint64_t generation_;  // the load it holds; a forced unload outlives it
  std::shared_ptr<ModelEngine> engine_;
};

class ModelRegistry {
 public:
  ModelRegistry(std::vector<ModelSpec> specs, ModelLoader loader, ModelCost cost, RegistryOptions options,
                const Clock* clock);
  ~ModelRegistry();

  // The ready model, loading it first if needed (evicting idle models to make
  // room). NOT_FOUND for a name outside the catalogue; UNAVAILABLE with the
  // load error; RESOURCE_EXHAUSTED when it does not fit (model, bytes needed,
  // bytes free).
  absl::StatusOr<ModelLease> Acquire(const std::string& name);
  absl::Status Load(const std::string& name) { return Acquire(name).status(); }
  // Starts loading `name` on a thread of its own and returns at once
  // (prefetch): NOT_FOUND for a name outside the catalogue, OK otherwise
  // (also when it is ready or loading already). Requests that arrive
  // meanwhile wait for that one load; its outcome shows in Get/List.
  absl::Status StartLoad(const std::string& name);
  // Acquire without waiting: the lease when the model is ready, NOT_FOUND
  // for a name outside the catalogue, nullopt when Acquire would wait for or
  // start a load (the event-driven server then calls Acquire off its threads).
  std::optional<absl::StatusOr<ModelLease>> TryAcquire(const std::string& name);
  // Unloads once every lease is released (running requests finish); new
  // requests wait meanwhile and reload it afterwards. `force` cancels running
  // requests after the grace period.
  absl::Status Unload(const std::string& name, bool force);
  // Unloads ready, unleased, non-resident models idle for their idle_timeout
  // (now - last use >= timeout). Returns their names.
  std::vector<std::string> EvictIdle();
  // Calls EvictIdle every `period` on a background thread (the server's).
  void StartIdleMonitor(absl::Duration period);

  absl::StatusOr<ModelSnapshot> Get(const std::string& name) const;
  std::vector<ModelSnapshot> List() const;
  std::vector<std::string> Names() const;
  RegistryCounters Counters() const;
  // Budget bytes in use and in all per device with a budget.
  std::map<std::string, std::pair<uint64_t, uint64_t>> BudgetUse() const;
  // The host tier's bytes in use and its budget ({0, 0} without a tier).
  std::pair<uint64_t, uint64_t> HostTierUse() const;

  // Stops every engine, all at once: no new requests; running ones finish,
  // or, with `cancel_after`, end with FinishReason::kCancelled (their final
  // message) once that long has passed (zero: at once).
  void Shutdown(std::optional<absl::Duration> cancel_after);

  // Receives state changes, loads, unloads and (through each engine) steps.
  // Set before the first load; it must outlive the registry.
  void SetObserver(SchedulerObserver* observer);

 private:
  friend class ModelLease;
  struct Entry;
  ModelLease LeaseLocked(const std::string& name, Entry& entry);
  struct Entry {
    ModelSpec spec;
    ModelState state = ModelState::kUnloaded;
    std::string error;
    std::vector<std::string> devices;  // placement of the current (or last) load, rank order
    std::optional<uint64_t> cost;      // charged on each of `devices`
    bool charged = false;  // kLoading: its cost fits and counts against the budget
    int64_t leases = 0;
    uint64_t generation = 0;  // counts loads; leases of an earlier one are void
    std::shared_ptr<ModelEngine> engine;
    std::optional<absl::Time> last_used;
    std::string task;  // detected from the folder at start-up ("" when unreadable)
  };
  void Release(const std::string& name, uint64_t generation);
  // Whether the entry's cost counts against its device's budget now.
  static bool Charged(const Entry& entry);
  // Reports a state change (call without the lock held).
  void Notify(const std::string& name, ModelState state);
  // Bytes charged on `device` by entries other than `except`.
  uint64_t UsedLocked(const std::string& device, const Entry* except) const;
  // The devices a load of `entry` goes to, rank order; an error when too few GPUs exist.
  absl::StatusOr<std::vector<std::string>> PlaceLocked(const Entry& entry) const;
  uint64_t FreeLocked(const std::string& device, const Entry* except) const;
  bool EvictableLocked(const Entry& entry) const;
  // Unloads a ready entry (lock released meanwhile): waits for its leases
  // (up to `cancel_after` when set), stops its engine (cancelling what still
  // runs when `cancel_after` is set); the entry ends kUnloaded.
  void UnloadLocked(std::unique_lock<std::mutex>& lock, Entry& entry, std::optional<absl::Duration> cancel_after,
                    UnloadReason reason);
  Entry* Find(const std::string& name);
  const Entry* Find(const std::string& name) const;

  const ModelLoader loader_;
  const ModelCost cost_;
  const RegistryOptions options_;
  const Clock* clock_;
  std::unique_ptr<HostTier> host_tier_;  // null without a host_cache_bytes budget
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, Entry> entries_;
  std::vector<std::string> order_;  // catalogue order
  SchedulerObserver* observer_ = nullptr;
  RegistryCounters counters_;
  bool shut_down_ = false;
  std::thread idle_monitor_;
  struct Prefetch {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Prefetch> prefetches_;  // StartLoad's threads: finished ones joined by the next StartLoad, the rest at Shutdown
};

}  // namespace gantry::scheduler

#endif  // GANTRY_SCHEDULER_MODEL_REGISTRY_H_
