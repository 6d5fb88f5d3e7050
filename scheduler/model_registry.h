// The model catalogue and each model's lifecycle, an explicit state machine
// as Triton's ModelLifeCycle:
//
//   kUnloaded --load--> kLoading --ok--> kReady --unload--> kUnloading --> kUnloaded
//                           \--error--> kFailed --next request--> kLoading
//
// A model loads on its first request; concurrent requests wait for that one
// load. A request for a model being unloaded waits, then reloads it.
#ifndef GANTRY_SCHEDULER_MODEL_REGISTRY_H_
#define GANTRY_SCHEDULER_MODEL_REGISTRY_H_

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scheduler/clock.h"
#include "scheduler/model_engine.h"

namespace gantry::scheduler {

struct ModelSpec {
  std::string name;
  std::string path;            // Hugging Face model folder
  std::string device = "cpu";  // "cpu", "cuda", "cuda:N"
  std::string dtype;           // "" = the config's
  int64_t max_context = 0;     // 0 = the model's
  uint64_t kv_cache_bytes = 64ull << 20;
  int32_t block_size = 16;
  EngineOptions engine;
  bool resident = false;                               // load at start-up, never unload for idleness
  absl::Duration idle_timeout = absl::ZeroDuration();  // 0 = never
};

enum class ModelState { kUnloaded, kLoading, kReady, kUnloading, kFailed };
const char* ModelStateName(ModelState state);

struct ModelSnapshot {
  ModelSpec spec;
  ModelState state = ModelState::kUnloaded;
  std::string error;                      // kFailed: the load error
  std::optional<runtime::ModelInfo> info;  // when loaded
  EngineStats stats;
  std::optional<absl::Time> last_used;
};

using ModelLoader = std::function<absl::StatusOr<LoadedModel>(const ModelSpec&)>;

// Loads the runner from the folder and, when it has tokenizer.json, the
// tokenizer and chat template (a template that does not parse fails the load).
absl::StatusOr<LoadedModel> LoadModelFolder(const ModelSpec& spec);

class ModelRegistry {
 public:
  ModelRegistry(std::vector<ModelSpec> specs, ModelLoader loader, const Clock* clock);
  ~ModelRegistry();

  // The ready engine, loading it first if needed. NOT_FOUND for a name not
  // in the catalogue; UNAVAILABLE with the load error.
  absl::StatusOr<std::shared_ptr<ModelEngine>> Acquire(const std::string& name);
  absl::Status Load(const std::string& name) { return Acquire(name).status(); }
  // Waits for running requests (force: cancels them) and unloads.
  absl::Status Unload(const std::string& name, bool force);

  absl::StatusOr<ModelSnapshot> Get(const std::string& name) const;
  std::vector<ModelSnapshot> List() const;
  std::vector<std::string> Names() const;

  // Stops every engine; `cancel` ends running requests instead of draining.
  void Shutdown(bool cancel);

  // Called (outside the registry's lock) after each state change.
  void SetStateListener(std::function<void(const std::string&, ModelState)> listener);

 private:
  struct Entry {
    ModelSpec spec;
    ModelState state = ModelState::kUnloaded;
    std::string error;
    std::shared_ptr<ModelEngine> engine;
    std::optional<absl::Time> last_used;
  };
  void Notify(const std::string& name, ModelState state);
  Entry* Find(const std::string& name);
  const Entry* Find(const std::string& name) const;

  const ModelLoader loader_;
  const Clock* clock_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, Entry> entries_;
  std::vector<std::string> order_;  // catalogue order
  std::function<void(const std::string&, ModelState)> listener_;
  bool shut_down_ = false;
};

}  // namespace gantry::scheduler

#endif  // GANTRY_SCHEDULER_MODEL_REGISTRY_H_
