#include "scheduler/model_registry.h"

#include "scheduler/error_reason.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace gantry::scheduler {

const char* UnloadReasonName(UnloadReason reason) {
  switch (reason) {
    case UnloadReason::kRequested: return "requested";
    case UnloadReason::kIdle: return "idle";
    case UnloadReason::kMemory: return "memory";
  }
  return "?";
}

const char* ModelStateName(ModelState state) {
  switch (state) {
    case ModelState::kUnloaded: return "unloaded";
    case ModelState::kLoading: return "loading";
    case ModelState::kReady: return "ready";
    case ModelState::kUnloading: return "unloading";
    case ModelState::kFailed: return "failed";
  }
  return "?";
}

ModelLease& ModelLease::operator=(ModelLease&& other) noexcept {
  if (this != &other) {
    if (registry_) registry_->Release(name_, generation_);
    registry_ = std::exchange(other.registry_, nullptr);
    name_ = std::move(other.name_);
    generation_ = other.generation_;
    engine_ = std::move(other.engine_);
  }
  return *this;
}

ModelLease::~ModelLease() {
  if (registry_) registry_->Release(name_, generation_);
}

ModelRegistry::ModelRegistry(std::vector<ModelSpec> specs, ModelLoader loader, ModelCost cost,
                             RegistryOptions options, const Clock* clock)
    : loader_(std::move(loader)), cost_(std::move(cost)), options_(std::move(options)), clock_(clock) {
  if (options_.host_cache_bytes > 0) host_tier_ = std::make_unique<HostTier>(options_.host_cache_bytes, clock_);
  for (auto& spec : specs) {
    order_.push_back(spec.name);
    Entry entry;
    // What it serves, from its folder (a few small JSON reads): clients
    // see it before the first load. A folder that cannot be read says so
    // when it loads.
    if (auto task = runtime::DetectModelTask(spec.path, spec.task); task.ok()) {
      entry.task = std::string(runtime::ModelTaskName(task->task));
    }
    entry.spec = std::move(spec);
    entries_.emplace(order_.back(), std::move(entry));
  }
}

ModelRegistry::~ModelRegistry() { Shutdown(absl::ZeroDuration()); }

void ModelRegistry::SetObserver(SchedulerObserver* observer) {
  std::lock_guard<std::mutex> lock(mutex_);
  observer_ = observer;
}

void ModelRegistry::Notify(const std::string& name, ModelState state) {
  SchedulerObserver* observer;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    observer = observer_;
  }
  if (observer) observer->OnStateChange(name, state);
}

ModelRegistry::Entry* ModelRegistry::Find(const std::string& name) {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}
const ModelRegistry::Entry* ModelRegistry::Find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

bool ModelRegistry::Charged(const Entry& e) {
  return e.cost && (e.state == ModelState::kReady || e.state == ModelState::kUnloading ||
                    (e.state == ModelState::kLoading && e.charged));
}

uint64_t ModelRegistry::UsedLocked(const std::string& device, const Entry* except) const {
  uint64_t used = 0;
  for (const auto& [name, e] : entries_) {
    if (&e == except || !Charged(e)) continue;
    // Once per rank there: CPU ranks of one model share the one "cpu".
    for (const std::string& d : e.devices) {
      if (d == device) used += *e.cost;
    }
  }
  return used;
}

uint64_t ModelRegistry::FreeLocked(const std::string& device, const Entry* except) const {
  auto budget = options_.budgets.find(device);
  if (budget == options_.budgets.end()) return UINT64_MAX;
  return budget->second - std::min(budget->second, UsedLocked(device, except));
}

absl::StatusOr<std::vector<std::string>> ModelRegistry::PlaceLocked(const Entry& entry) const {
  const ModelSpec& spec = entry.spec;
  if (!spec.devices.empty()) return spec.devices;
  const int ranks = std::max<int32_t>(1, spec.tensor_parallel);
  if (spec.device == "cpu") return std::vector<std::string>(ranks, "cpu");
  if (spec.device != "cuda" || options_.gpus.empty()) {
    const int first = spec.device == "cuda" ? 0 : std::stoi(spec.device.substr(5));
    std::vector<std::string> devices;
    for (int r = 0; r < ranks; ++r) devices.push_back(absl::StrCat("cuda:", first + r));
    return devices;
  }
  // "cuda": the GPUs with the most free budget (unlimited ones first); ties
  // go to the first listed.
  if (static_cast<size_t>(ranks) > options_.gpus.size()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor_parallel ", ranks, " needs ", ranks, " GPUs; ",
                                                   options_.gpus.size(), " are present"));
  }
  std::vector<std::string> gpus = options_.gpus;
  std::stable_sort(gpus.begin(), gpus.end(), [&](const std::string& a, const std::string& b) {
    return FreeLocked(a, &entry) > FreeLocked(b, &entry);
  });
  gpus.resize(ranks);
  // Rank order follows the GPUs' own order.
  std::stable_sort(gpus.begin(), gpus.end(), [&](const std::string& a, const std::string& b) {
    return std::find(options_.gpus.begin(), options_.gpus.end(), a) <
           std::find(options_.gpus.begin(), options_.gpus.end(), b);
  });
  return gpus;
}

bool ModelRegistry::EvictableLocked(const Entry& e) const {
  if (e.state != ModelState::kReady || e.spec.resident || e.leases > 0 || !e.engine) return false;
  EngineStats stats = e.engine->Stats();
  return stats.running == 0 && stats.waiting == 0;
}

void ModelRegistry::UnloadLocked(std::unique_lock<std::mutex>& lock, Entry& entry,
                                 std::optional<absl::Duration> cancel_after, UnloadReason reason) {
  entry.state = ModelState::kUnloading;
  const std::string name = entry.spec.name;
  lock.unlock();
  Notify(name, ModelState::kUnloading);
  lock.lock();
  // New requests wait (state kUnloading); those holding leases finish first.
  auto drained = [&] { return entry.leases == 0 || shut_down_; };
  if (cancel_after) {
    changed_.wait_for(lock, absl::ToChronoNanoseconds(*cancel_after), drained);
  } else {
    changed_.wait(lock, drained);
  }
  std::shared_ptr<ModelEngine> engine = std::move(entry.engine);
  const bool keep_on_host = host_tier_ && entry.spec.host_cache && !host_tier_->Contains(name);
  lock.unlock();
  engine->Stop(cancel_after ? std::optional<absl::Duration>(absl::ZeroDuration()) : std::nullopt);
  bool copied = false;
  if (keep_on_host) {
    // Before the engine (and its device memory) goes: one copy now saves a
    // file read when the model comes back. A copy that fails (host memory)
    // only means the next load reads the files.
    auto host = engine->CopyWeightsToHost();
    if (host.ok()) (void)host_tier_->Put(name, *std::move(host), &copied);
  }
  engine.reset();  // leases cut short by a forced unload keep it until they end
  lock.lock();
  if (copied) counters_.host_tier_copies += 1;
  entry.leases = 0;
  entry.generation += 1;
  entry.state = ModelState::kUnloaded;
  changed_.notify_all();
  SchedulerObserver* observer = observer_;
  lock.unlock();
  if (observer) observer->OnUnload(name, reason);
  Notify(name, ModelState::kUnloaded);
  lock.lock();
}

namespace {

absl::Status NotInCatalogue(const std::string& name) {
  return WithReason(absl::NotFoundError(absl::StrCat("model \"", name, "\" is not in the catalogue")),
                    ErrorReason::kModelNotFound);
}

}  // namespace

std::optional<absl::StatusOr<ModelLease>> ModelRegistry::TryAcquire(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  Entry* entry = Find(name);
  if (entry == nullptr) return absl::StatusOr<ModelLease>(NotInCatalogue(name));
  if (shut_down_ || entry->state != ModelState::kReady) return std::nullopt;
  return absl::StatusOr<ModelLease>(LeaseLocked(name, *entry));
}

ModelLease ModelRegistry::LeaseLocked(const std::string& name, Entry& entry) {
  entry.leases += 1;
  entry.last_used = clock_->Now();
  return ModelLease(this, name, entry.generation, entry.engine);
}

absl::StatusOr<ModelLease> ModelRegistry::Acquire(const std::string& name) {
  std::unique_lock<std::mutex> lock(mutex_);
  Entry* entry = Find(name);
  if (entry == nullptr) return NotInCatalogue(name);
  while (true) {
    // Wait out a load or unload in progress: one load however many callers.
    changed_.wait(lock, [&] {
      return shut_down_ || (entry->state != ModelState::kLoading && entry->state != ModelState::kUnloading);
    });
    if (shut_down_) {
      return WithReason(absl::UnavailableError("the server is shutting down"), ErrorReason::kShuttingDown);
    }
    if (entry->state == ModelState::kReady) return LeaseLocked(name, *entry);
    // kUnloaded or kFailed: this caller loads (a failed load is retried).
    if (!entry->cost) {
      lock.unlock();
      absl::StatusOr<uint64_t> cost = cost_(entry->spec);
      lock.lock();
      if (!cost.ok()) {
        entry->state = ModelState::kFailed;
        entry->error = std::string(cost.status().message());
        counters_.load_failures += 1;
        SchedulerObserver* observer = observer_;
        lock.unlock();
        if (observer) observer->OnLoad(name, absl::ZeroDuration(), false);
        Notify(name, ModelState::kFailed);
        return WithReason(absl::UnavailableError(
                              absl::StrCat("model \"", name, "\" failed to load: ", cost.status().message())),
                          ErrorReason::kModelLoadFailed);
      }
      entry->cost = *cost;
      continue;  // the state may have moved while unlocked
    }
    break;
  }
  // The entry is kLoading from here, so other callers for it wait for this
  // one load; its bytes count against the budget once room is made.
  auto placement = PlaceLocked(*entry);
  if (!placement.ok()) {
    return WithReason(absl::Status(placement.status().code(), absl::StrCat("model \"", name, "\": ",
                                                                         placement.status().message())),
                      ErrorReason::kModelLoadFailed);
  }
  const std::vector<std::string> devices = *std::move(placement);
  const ModelState previous = entry->state;
  entry->state = ModelState::kLoading;
  entry->charged = false;  // until room is made below
  entry->devices = devices;
  // The host tier's copy, taken (and marked used) before evictions below
  // put other models' weights into the tier and could push it out.
  std::shared_ptr<const runtime::HostWeights> host_weights =
      host_tier_ && entry->spec.host_cache ? host_tier_->Get(name) : nullptr;
  // Per device: a tensor-parallel model needs room on each of its GPUs.
  std::vector<std::string> distinct = devices;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  for (const std::string& device : distinct) {
    auto budget = options_.budgets.find(device);
    const uint64_t charge =
        *entry->cost * static_cast<uint64_t>(std::count(devices.begin(), devices.end(), device));
    while (budget != options_.budgets.end() && UsedLocked(device, entry) + charge > budget->second) {
      // Evict the least recently used idle, non-resident model on this device.
      Entry* victim = nullptr;
      for (auto& [other_name, e] : entries_) {
        if (&e == entry || !EvictableLocked(e)) continue;
        if (std::find(e.devices.begin(), e.devices.end(), device) == e.devices.end()) continue;
        if (victim == nullptr ||
            e.last_used.value_or(absl::InfinitePast()) < victim->last_used.value_or(absl::InfinitePast())) {
          victim = &e;
        }
      }
      if (victim == nullptr) {
        std::vector<std::string> holders;
        for (const auto& [other_name, e] : entries_) {
          if (&e != entry && Charged(e) && std::find(e.devices.begin(), e.devices.end(), device) != e.devices.end()) {
            holders.push_back(absl::StrCat(other_name, " (", *e.cost, " bytes", e.spec.resident ? ", resident" : "",
                                           e.leases > 0 ? ", in use" : "", ")"));
          }
        }
        const uint64_t used = UsedLocked(device, entry);
        entry->state = previous;
        changed_.notify_all();
        return WithReason(absl::ResourceExhaustedError(absl::StrCat(
                              "model \"", name, "\" needs ", charge, " bytes on ", device, " but ",
                              budget->second - std::min(budget->second, used), " of ", budget->second,
                              " bytes are free; no idle model can be unloaded to make room (loaded: ",
                              holders.empty() ? "none" : absl::StrJoin(holders, ", "), ")")),
                          ErrorReason::kMemoryBudget);
      }
      counters_.evictions_memory += 1;
      UnloadLocked(lock, *victim, absl::ZeroDuration(), UnloadReason::kMemory);
    }
  }
  entry->charged = true;
  entry->error.clear();
  ModelSpec spec = entry->spec;
  spec.host_weights = std::move(host_weights);
  spec.device = devices[0];
  if (devices.size() > 1 || !entry->spec.devices.empty()) spec.devices = devices;
  SchedulerObserver* observer = observer_;
  lock.unlock();
  Notify(name, ModelState::kLoading);
  const absl::Time load_start = absl::Now();  // wall time, not clock_: a real duration
  absl::StatusOr<LoadedModel> loaded = loader_(spec);
  const absl::Duration load_took = absl::Now() - load_start;
  if (observer) observer->OnLoad(name, load_took, loaded.ok());
  lock.lock();
  if (!loaded.ok()) {
    entry->state = ModelState::kFailed;
    entry->error = std::string(loaded.status().message());
    counters_.load_failures += 1;
    changed_.notify_all();
    lock.unlock();
    Notify(name, ModelState::kFailed);
    return WithReason(
        absl::UnavailableError(absl::StrCat("model \"", name, "\" failed to load: ", loaded.status().message())),
        ErrorReason::kModelLoadFailed);
  }
  counters_.loads += 1;
  const std::string source = loaded->runner ? loaded->runner->info().weights_source : "disk";
  const uint64_t weight_bytes = loaded->runner    ? loaded->runner->info().weight_bytes
                                : loaded->encoder ? loaded->encoder->info().weight_bytes
                                                  : 0;
  if (source == "host") counters_.loads_from_host += 1;
  entry->engine = std::make_shared<ModelEngine>(name, *std::move(loaded), spec.engine, clock_, observer);
  entry->engine->Start();
  entry->state = ModelState::kReady;
  entry->last_used = clock_->Now();
  entry->leases += 1;
  ModelLease lease(this, name, entry->generation, entry->engine);
  changed_.notify_all();
  lock.unlock();
  if (observer && !source.empty()) observer->OnLoadSource(name, source, weight_bytes, load_took);
  Notify(name, ModelState::kReady);
  return lease;
}

void ModelRegistry::Release(const std::string& name, uint64_t generation) {
  std::lock_guard<std::mutex> lock(mutex_);
  Entry* entry = Find(name);
  if (entry == nullptr || entry->generation != generation) return;
  entry->leases -= 1;
  entry->last_used = clock_->Now();
  changed_.notify_all();
}

absl::Status ModelRegistry::Unload(const std::string& name, bool force) {
  std::unique_lock<std::mutex> lock(mutex_);
  Entry* entry = Find(name);
  if (entry == nullptr) return NotInCatalogue(name);
  changed_.wait(lock, [&] { return entry->state != ModelState::kLoading && entry->state != ModelState::kUnloading; });
  if (entry->state != ModelState::kReady) return absl::OkStatus();
  counters_.unloads += 1;
  UnloadLocked(lock, *entry, force ? std::optional<absl::Duration>(options_.unload_grace) : std::nullopt,
               UnloadReason::kRequested);
  return absl::OkStatus();
}

std::vector<std::string> ModelRegistry::EvictIdle() {
  std::unique_lock<std::mutex> lock(mutex_);
  std::vector<std::string> evicted;
  const absl::Time now = clock_->Now();
  for (const auto& name : order_) {
    Entry& e = entries_.at(name);
    if (e.spec.idle_timeout <= absl::ZeroDuration() || !EvictableLocked(e) || !e.last_used) continue;
    if (now - *e.last_used < e.spec.idle_timeout) continue;
    counters_.evictions_idle += 1;
    UnloadLocked(lock, e, absl::ZeroDuration(), UnloadReason::kIdle);
    evicted.push_back(name);
  }
  return evicted;
}

void ModelRegistry::StartIdleMonitor(absl::Duration period) {
  idle_monitor_ = std::thread([this, period] {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!shut_down_) {
      changed_.wait_for(lock, absl::ToChronoNanoseconds(period), [&] { return shut_down_; });
      if (shut_down_) break;
      lock.unlock();
      EvictIdle();
      lock.lock();
    }
  });
}

absl::StatusOr<ModelSnapshot> ModelRegistry::Get(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const Entry* entry = Find(name);
  if (entry == nullptr) return NotInCatalogue(name);
  ModelSnapshot snapshot;
  snapshot.spec = entry->spec;
  snapshot.state = entry->state;
  snapshot.error = entry->error;
  snapshot.devices = entry->devices;
  if (entry->state == ModelState::kReady || entry->state == ModelState::kUnloading) {
    snapshot.weights_at = !entry->devices.empty() && entry->devices[0] == "cpu" ? "cpu" : "gpu";
  } else {
    snapshot.weights_at = host_tier_ && host_tier_->Contains(name) ? "host" : "disk";
  }
  snapshot.device = entry->devices.empty() ? entry->spec.device : entry->devices[0];
  snapshot.cost_bytes = entry->cost.value_or(0);
  snapshot.leases = entry->leases;
  snapshot.last_used = entry->last_used;
  snapshot.task = entry->task;
  if (entry->engine) {
    snapshot.task = std::string(runtime::ModelTaskName(entry->engine->task()));
    snapshot.info = entry->engine->info();
    snapshot.stats = entry->engine->Stats();
  }
  return snapshot;
}

std::vector<ModelSnapshot> ModelRegistry::List() const {
  std::vector<ModelSnapshot> out;
  for (const auto& name : order_) out.push_back(*Get(name));
  return out;
}

std::vector<std::string> ModelRegistry::Names() const { return order_; }

RegistryCounters ModelRegistry::Counters() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return counters_;
}

std::pair<uint64_t, uint64_t> ModelRegistry::HostTierUse() const {
  if (!host_tier_) return {0, 0};
  return {host_tier_->used_bytes(), host_tier_->budget_bytes()};
}

std::map<std::string, std::pair<uint64_t, uint64_t>> ModelRegistry::BudgetUse() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::map<std::string, std::pair<uint64_t, uint64_t>> use;
  for (const auto& [device, budget] : options_.budgets) use[device] = {UsedLocked(device, nullptr), budget};
  return use;
}

absl::Status ModelRegistry::StartLoad(const std::string& name) {
  std::unique_lock<std::mutex> lock(mutex_);
  const Entry* entry = Find(name);
  if (entry == nullptr) return NotInCatalogue(name);
  if (shut_down_) return WithReason(absl::UnavailableError("the server is shutting down"), ErrorReason::kShuttingDown);
  if (entry->state == ModelState::kReady || entry->state == ModelState::kLoading) return absl::OkStatus();
  // The lease, if the load succeeds, ends with the thread: the model stays
  // loaded and idle, as after any request.
  for (auto it = prefetches_.begin(); it != prefetches_.end();) {
    if (!it->done->load()) {
      ++it;
      continue;
    }
    it->thread.join();  // finished: returns at once
    it = prefetches_.erase(it);
  }
  auto done = std::make_shared<std::atomic<bool>>(false);
  prefetches_.push_back({std::thread([this, name, done] {
                           (void)Acquire(name);
                           done->store(true);
                         }),
                         done});
  // Answer once the load has begun (or ended), so the caller sees LOADING,
  // not the UNLOADED of the moment before the thread took the model; its
  // cost is estimated first (headers only), so this is short.
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (entry->state != ModelState::kLoading && entry->state != ModelState::kReady && !done->load() &&
         absl::Now() < give_up) {
    changed_.wait_for(lock, std::chrono::milliseconds(5));
  }
  return absl::OkStatus();
}

void ModelRegistry::Shutdown(std::optional<absl::Duration> cancel_after) {
  std::vector<Prefetch> prefetches;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shut_down_ = true;
    prefetches.swap(prefetches_);
    changed_.notify_all();
  }
  // A prefetch in the middle of a load finishes it first (as a request would).
  for (auto& p : prefetches) p.thread.join();
  std::vector<std::shared_ptr<ModelEngine>> engines;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [name, entry] : entries_) {
      if (entry.engine) engines.push_back(entry.engine);
    }
  }
  if (idle_monitor_.joinable()) idle_monitor_.join();
  // In parallel: each engine's grace period runs at the same time.
  std::vector<std::thread> stopping;
  for (auto& engine : engines) stopping.emplace_back([&engine, cancel_after] { engine->Stop(cancel_after); });
  for (auto& t : stopping) t.join();
}

}  // namespace gantry::scheduler
