#include "scheduler/model_registry.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"

namespace gantry::scheduler {

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

absl::StatusOr<LoadedModel> LoadModelFolder(const ModelSpec& spec) {
  runtime::LoadOptions options;
  options.model_dir = spec.path;
  options.device = spec.device;
  options.dtype = spec.dtype;
  options.kv_cache_bytes = spec.kv_cache_bytes;
  options.block_size = spec.block_size;
  options.max_context = spec.max_context;
  LoadedModel model;
  struct stat st;
  if (stat((spec.path + "/tokenizer.json").c_str(), &st) == 0) {
    auto tokenizer = text::Tokenizer::Load(spec.path);
    if (!tokenizer.ok()) return tokenizer.status();
    auto chat = text::ChatTemplate::Create((*tokenizer)->chat_template(), (*tokenizer)->bos_token(),
                                           (*tokenizer)->eos_token());
    if (!chat.ok()) return absl::Status(chat.status().code(), absl::StrCat(spec.path, ": ", chat.status().message()));
    model.tokenizer = *std::move(tokenizer);
    model.chat_template = *std::move(chat);
  }
  auto runner = runtime::LoadModel(options);
  if (!runner.ok()) return runner.status();
  model.runner = *std::move(runner);
  if (model.tokenizer && model.tokenizer->vocab_size() > model.runner->info().config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(spec.path, ": tokenizer has ", model.tokenizer->vocab_size(),
                                                   " tokens but the model's vocabulary is ",
                                                   model.runner->info().config.vocab_size));
  }
  return model;
}

ModelRegistry::ModelRegistry(std::vector<ModelSpec> specs, ModelLoader loader, const Clock* clock)
    : loader_(std::move(loader)), clock_(clock) {
  for (auto& spec : specs) {
    order_.push_back(spec.name);
    Entry entry;
    entry.spec = std::move(spec);
    entries_.emplace(order_.back(), std::move(entry));
  }
}

ModelRegistry::~ModelRegistry() { Shutdown(/*cancel=*/true); }

void ModelRegistry::SetStateListener(std::function<void(const std::string&, ModelState)> listener) {
  std::lock_guard<std::mutex> lock(mutex_);
  listener_ = std::move(listener);
}

void ModelRegistry::Notify(const std::string& name, ModelState state) {
  std::function<void(const std::string&, ModelState)> listener;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    listener = listener_;
  }
  if (listener) listener(name, state);
}

ModelRegistry::Entry* ModelRegistry::Find(const std::string& name) {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}
const ModelRegistry::Entry* ModelRegistry::Find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

absl::StatusOr<std::shared_ptr<ModelEngine>> ModelRegistry::Acquire(const std::string& name) {
  std::unique_lock<std::mutex> lock(mutex_);
  Entry* entry = Find(name);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("model \"", name, "\" is not in the catalogue"));
  }
  // Wait out a load or unload in progress: one load however many callers.
  changed_.wait(lock, [&] {
    return shut_down_ || (entry->state != ModelState::kLoading && entry->state != ModelState::kUnloading);
  });
  if (shut_down_) return absl::UnavailableError("the server is shutting down");
  if (entry->state == ModelState::kReady) {
    entry->last_used = clock_->Now();
    return entry->engine;
  }
  // kUnloaded or kFailed: this caller loads; a failed load is retried.
  entry->state = ModelState::kLoading;
  entry->error.clear();
  const ModelSpec spec = entry->spec;
  lock.unlock();
  Notify(name, ModelState::kLoading);
  absl::StatusOr<LoadedModel> loaded = loader_(spec);
  lock.lock();
  if (!loaded.ok()) {
    entry->state = ModelState::kFailed;
    entry->error = std::string(loaded.status().message());
    changed_.notify_all();
    lock.unlock();
    Notify(name, ModelState::kFailed);
    return absl::UnavailableError(absl::StrCat("model \"", name, "\" failed to load: ", loaded.status().message()));
  }
  entry->engine = std::make_shared<ModelEngine>(name, *std::move(loaded), spec.engine, clock_);
  entry->engine->Start();
  entry->state = ModelState::kReady;
  entry->last_used = clock_->Now();
  std::shared_ptr<ModelEngine> engine = entry->engine;
  changed_.notify_all();
  lock.unlock();
  Notify(name, ModelState::kReady);
  return engine;
}

absl::Status ModelRegistry::Unload(const std::string& name, bool force) {
  std::unique_lock<std::mutex> lock(mutex_);
  Entry* entry = Find(name);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("model \"", name, "\" is not in the catalogue"));
  changed_.wait(lock, [&] { return entry->state != ModelState::kLoading && entry->state != ModelState::kUnloading; });
  if (entry->state != ModelState::kReady) return absl::OkStatus();
  entry->state = ModelState::kUnloading;
  std::shared_ptr<ModelEngine> engine = std::move(entry->engine);
  lock.unlock();
  Notify(name, ModelState::kUnloading);
  engine->Stop(/*cancel=*/force);  // waits for running requests unless forced
  engine.reset();
  lock.lock();
  entry->state = ModelState::kUnloaded;
  changed_.notify_all();
  lock.unlock();
  Notify(name, ModelState::kUnloaded);
  return absl::OkStatus();
}

absl::StatusOr<ModelSnapshot> ModelRegistry::Get(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const Entry* entry = Find(name);
  if (entry == nullptr) return absl::NotFoundError(absl::StrCat("model \"", name, "\" is not in the catalogue"));
  ModelSnapshot snapshot;
  snapshot.spec = entry->spec;
  snapshot.state = entry->state;
  snapshot.error = entry->error;
  snapshot.last_used = entry->last_used;
  if (entry->engine) {
    snapshot.info = entry->engine->info();
    snapshot.stats = entry->engine->Stats();
    if (snapshot.stats.last_used && (!snapshot.last_used || *snapshot.stats.last_used > *snapshot.last_used)) {
      snapshot.last_used = snapshot.stats.last_used;
    }
  }
  return snapshot;
}

std::vector<ModelSnapshot> ModelRegistry::List() const {
  std::vector<ModelSnapshot> out;
  for (const auto& name : order_) out.push_back(*Get(name));
  return out;
}

std::vector<std::string> ModelRegistry::Names() const { return order_; }

void ModelRegistry::Shutdown(bool cancel) {
  std::vector<std::shared_ptr<ModelEngine>> engines;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shut_down_ = true;
    for (auto& [name, entry] : entries_) {
      if (entry.engine) engines.push_back(entry.engine);
    }
    changed_.notify_all();
  }
  for (auto& engine : engines) engine->Stop(cancel);
}

}  // namespace gantry::scheduler
