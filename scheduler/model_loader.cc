#include "scheduler/model_loader.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"

namespace gantry::scheduler {

absl::StatusOr<LoadedModel> LoadModelFolder(const ModelSpec& spec) {
  runtime::LoadOptions options;
  options.model_dir = spec.path;
  options.device = spec.device;
  options.devices = spec.devices;  // the registry's placement of a tensor-parallel model
  if (spec.devices.empty()) options.tensor_parallel = spec.tensor_parallel;
  options.host_weights = spec.host_weights;
  options.dtype = spec.dtype;
  options.kv_cache_bytes = spec.kv_cache_bytes;
  options.block_size = spec.block_size;
  options.max_context = spec.max_context;
  options.cuda_graph_max_batch = spec.engine.max_batch;  // decode graphs for every batch the engine forms
  options.warm_step_tokens = spec.engine.max_step_tokens;
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

}  // namespace gantry::scheduler
