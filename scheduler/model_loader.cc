#include "scheduler/model_loader.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "runtime/encoder_runner.h"
#include "runtime/model_task.h"

namespace gantry::scheduler {

namespace {

absl::StatusOr<std::unique_ptr<text::Tokenizer>> LoadTokenizerIfPresent(const std::string& dir) {
  struct stat st;
  if (stat((dir + "/tokenizer.json").c_str(), &st) != 0) return std::unique_ptr<text::Tokenizer>();
  return text::Tokenizer::Load(dir);
}

absl::Status CheckTokenizerFits(const std::string& dir, const text::Tokenizer* tokenizer, int64_t vocab_size) {
  if (tokenizer == nullptr || tokenizer->vocab_size() <= vocab_size) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(dir, ": tokenizer has ", tokenizer->vocab_size(),
                                                 " tokens but the model's vocabulary is ", vocab_size));
}

absl::StatusOr<LoadedModel> LoadEncoderFolder(const ModelSpec& spec, runtime::ModelTaskInfo task) {
  if (spec.tensor_parallel > 1 || spec.devices.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(spec.path, ": tensor_parallel is for generation models; ",
                                                   runtime::ModelTaskName(task.task), " models run on one device"));
  }
  LoadedModel model;
  auto tokenizer = LoadTokenizerIfPresent(spec.path);
  if (!tokenizer.ok()) return tokenizer.status();
  model.tokenizer = *std::move(tokenizer);
  runtime::EncoderLoadOptions options;
  options.model_dir = spec.path;
  options.device = spec.device;
  options.dtype = spec.dtype;
  options.pooling = task.embedding.pooling;
  // The server normalizes, after cutting to the asked dimensions (and a
  // request may ask for raw vectors).
  options.normalize = false;
  auto encoder = runtime::LoadEncoder(options);
  if (!encoder.ok()) return encoder.status();
  model.encoder = *std::move(encoder);
  model.task = std::move(task);
  if (auto s = CheckTokenizerFits(spec.path, model.tokenizer.get(), model.encoder->info().config.vocab_size);
      !s.ok()) {
    return s;
  }
  return model;
}

}  // namespace

absl::StatusOr<LoadedModel> LoadModelFolder(const ModelSpec& spec) {
  auto task = runtime::DetectModelTask(spec.path, spec.task);
  if (!task.ok()) return task.status();
  if (task->encoder()) {
    return LoadEncoderFolder(spec, *std::move(task));
  }
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
  model.task = *std::move(task);
  auto tokenizer = LoadTokenizerIfPresent(spec.path);
  if (!tokenizer.ok()) return tokenizer.status();
  if (*tokenizer) {
    auto chat = text::ChatTemplate::Create((*tokenizer)->chat_template(), (*tokenizer)->bos_token(),
                                           (*tokenizer)->eos_token());
    if (!chat.ok()) return absl::Status(chat.status().code(), absl::StrCat(spec.path, ": ", chat.status().message()));
    model.tokenizer = *std::move(tokenizer);
    model.chat_template = *std::move(chat);
  }
  auto runner = runtime::LoadModel(options);
  if (!runner.ok()) return runner.status();
  model.runner = *std::move(runner);
  if (auto s = CheckTokenizerFits(spec.path, model.tokenizer.get(), model.runner->info().config.vocab_size);
      !s.ok()) {
    return s;
  }
  if (model.task.decoder_rerank) {
    if (!model.tokenizer) {
      return absl::InvalidArgumentError(absl::StrCat(spec.path, ": a rerank model needs tokenizer.json"));
    }
    for (auto [word, id] : {std::pair{"yes", &model.task.yes_token}, std::pair{"no", &model.task.no_token}}) {
      auto ids = model.tokenizer->Encode(word, /*add_special_tokens=*/false);
      if (!ids.ok() || ids->size() != 1) {
        return absl::InvalidArgumentError(absl::StrCat(spec.path, ": task rerank needs \"", word,
                                                       "\" to be one token of the tokenizer"));
      }
      *id = (*ids)[0];
    }
  }
  return model;
}

}  // namespace gantry::scheduler
