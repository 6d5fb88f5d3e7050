#include "runtime/model_task.h"

#include <sys/stat.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/encoder_config.h"
#include "runtime/internal/config_reader.h"
#include "runtime/model_config.h"

namespace gantry::runtime {
namespace {

using nlohmann::json;

constexpr absl::string_view kStPrefix = "sentence_transformers.models.";

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// The JSON object in `path`; INVALID_ARGUMENT naming the file otherwise.
absl::StatusOr<json> ReadJsonFile(const std::string& path) {
  auto text = ReadTextFile(path);
  if (!text.ok()) return text.status();
  json value = json::parse(text->begin(), text->end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  return value;
}

absl::Status ReadPooling(const std::string& path, EmbeddingSetup* setup) {
  auto root = ReadJsonFile(path);
  if (!root.ok()) return root.status();
  if (!root->is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  ConfigReader reader(*root, path);
  struct Mode {
    const char* key;
    std::optional<Pooling> pooling;  // nullopt: a mode Gantry does not implement
  };
  const Mode modes[] = {{"pooling_mode_cls_token", Pooling::kCls},
                        {"pooling_mode_mean_tokens", Pooling::kMean},
                        {"pooling_mode_lasttoken", Pooling::kLastToken},
                        {"pooling_mode_max_tokens", std::nullopt},
                        {"pooling_mode_mean_sqrt_len_tokens", std::nullopt},
                        {"pooling_mode_weightedmean_tokens", std::nullopt}};
  int chosen = 0;
  for (const Mode& mode : modes) {
    if (!reader.Bool(mode.key, false)) continue;
    if (!mode.pooling) return absl::UnimplementedError(absl::StrCat(path, ": ", mode.key, " is not supported; "
                                                                    "supported: cls_token, mean_tokens, lasttoken"));
    setup->pooling = *mode.pooling;
    ++chosen;
  }
  if (!reader.Bool("include_prompt", true)) {
    return absl::UnimplementedError(absl::StrCat(path, ": include_prompt false is not supported"));
  }
  if (!reader.status().ok()) return reader.status();
  if (chosen != 1) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": exactly one pooling mode must be true, found ", chosen));
  }
  return absl::OkStatus();
}

// modules.json and the files it points to.
absl::Status ReadSentenceTransformers(const std::string& dir, EmbeddingSetup* setup) {
  const std::string modules_path = dir + "/modules.json";
  auto modules = ReadJsonFile(modules_path);
  if (!modules.ok()) return modules.status();
  if (!modules->is_array()) return absl::InvalidArgumentError(absl::StrCat(modules_path, ": not a JSON list"));
  setup->source = "sentence-transformers";
  setup->normalize = false;
  bool transformer = false, pooling = false;
  for (const json& module : *modules) {
    if (!module.is_object() || !module.contains("type") || !module["type"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(modules_path, ": every module needs a \"type\" string"));
    }
    const std::string type = module["type"].get<std::string>();
    const std::string sub = module.contains("path") && module["path"].is_string() ? module["path"].get<std::string>()
                                                                                  : "";
    if (sub.find("..") != std::string::npos || absl::StartsWith(sub, "/")) {
      return absl::InvalidArgumentError(absl::StrCat(modules_path, ": module path \"", sub, "\" leaves the folder"));
    }
    const absl::string_view kind = absl::StartsWith(type, kStPrefix) ? absl::string_view(type).substr(kStPrefix.size())
                                                                      : absl::string_view(type);
    if (kind == "Transformer" && !transformer && !pooling) {
      if (!sub.empty()) {
        return absl::UnimplementedError(absl::StrCat(modules_path, ": the Transformer module in \"", sub,
                                                     "\" is not supported; it must be the folder itself"));
      }
      transformer = true;
    } else if (kind == "Pooling" && transformer && !pooling) {
      if (auto s = ReadPooling(dir + "/" + sub + "/config.json", setup); !s.ok()) return s;
      pooling = true;
    } else if (kind == "Normalize" && pooling) {
      setup->normalize = true;
    } else {
      return absl::UnimplementedError(absl::StrCat(modules_path, ": module \"", type,
                                                   "\" is not supported here; supported: Transformer, then Pooling, "
                                                   "then optionally Normalize"));
    }
  }
  if (!transformer || !pooling) {
    return absl::InvalidArgumentError(absl::StrCat(modules_path, ": needs a Transformer and a Pooling module"));
  }
  if (Exists(dir + "/sentence_bert_config.json")) {
    auto config = ReadJsonFile(dir + "/sentence_bert_config.json");
    if (!config.ok()) return config.status();
    if (config->is_object()) {
      ConfigReader reader(*config, dir + "/sentence_bert_config.json");
      setup->max_seq_length = reader.Int("max_seq_length", 0);
      if (reader.status().ok() && setup->max_seq_length < 0) reader.Fail("\"max_seq_length\" must not be negative");
      if (!reader.status().ok()) return reader.status();
    }
  }
  if (Exists(dir + "/config_sentence_transformers.json")) {
    const std::string path = dir + "/config_sentence_transformers.json";
    auto config = ReadJsonFile(path);
    if (!config.ok()) return config.status();
    if (config->is_object()) {
      if (auto it = config->find("prompts"); it != config->end() && it->is_object()) {
        for (const auto& [name, prompt] : it->items()) {
          if (!prompt.is_string()) {
            return absl::InvalidArgumentError(absl::StrCat(path, ": prompt \"", name, "\" is not a string"));
          }
          setup->prompts[name] = prompt.get<std::string>();
        }
      }
      if (auto it = config->find("default_prompt_name"); it != config->end() && it->is_string()) {
        setup->default_prompt_name = it->get<std::string>();
        if (!setup->prompts.count(setup->default_prompt_name)) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": default_prompt_name \"", setup->default_prompt_name,
                                                         "\" is not among the prompts"));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view ModelTaskName(ModelTask task) {
  switch (task) {
    case ModelTask::kGenerate: return "generate";
    case ModelTask::kEmbed: return "embed";
    case ModelTask::kRerank: return "rerank";
  }
  return "generate";
}

absl::StatusOr<ModelTask> ParseModelTask(absl::string_view name) {
  for (ModelTask task : {ModelTask::kGenerate, ModelTask::kEmbed, ModelTask::kRerank}) {
    if (ModelTaskName(task) == name) return task;
  }
  return absl::InvalidArgumentError(absl::StrCat("task \"", name, "\" is not one of generate, embed, rerank"));
}

absl::string_view PoolingName(Pooling pooling) {
  switch (pooling) {
    case Pooling::kCls: return "cls";
    case Pooling::kMean: return "mean";
    case Pooling::kLastToken: return "last_token";
  }
  return "cls";
}

absl::StatusOr<ModelTaskInfo> DetectModelTask(const std::string& model_dir, std::optional<ModelTask> requested) {
  auto root = ReadJsonFile(model_dir + "/config.json");
  if (!root.ok()) return absl::NotFoundError(absl::StrCat(model_dir, ": no readable config.json"));
  ModelTaskInfo info;
  if (auto it = root->find("architectures"); root->is_object() && it != root->end() && it->is_array() &&
                                             !it->empty() && (*it)[0].is_string()) {
    info.architecture = (*it)[0].get<std::string>();
  } else {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, ": config.json has no \"architectures\" list"));
  }
  ModelTask natural = ModelTask::kGenerate;
  if (IsEncoderArchitecture(info.architecture)) {
    natural = absl::EndsWith(info.architecture, "ForSequenceClassification") ? ModelTask::kRerank : ModelTask::kEmbed;
  }
  // A bare decoder (Qwen3-Embedding ships Qwen3Model): its hidden states,
  // pooled, are the embedding.
  for (absl::string_view bare : {"LlamaModel", "MistralModel", "Qwen2Model", "Qwen3Model"}) {
    if (info.architecture == bare) {
      natural = ModelTask::kEmbed;
      info.decoder_embed = true;
    }
  }
  if (requested == ModelTask::kRerank && natural == ModelTask::kGenerate &&
      absl::EndsWith(info.architecture, "ForCausalLM")) {
    info.task = ModelTask::kRerank;
    info.decoder_rerank = true;
    return info;
  }
  if (requested && *requested != natural) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, ": task ", ModelTaskName(*requested), " is not what ",
                                                   info.architecture, " serves (", ModelTaskName(natural), ")"));
  }
  info.task = natural;
  if (info.decoder_embed) info.embedding.pooling = Pooling::kLastToken;  // what causal attention allows
  if (info.task == ModelTask::kEmbed && Exists(model_dir + "/modules.json")) {
    if (auto s = ReadSentenceTransformers(model_dir, &info.embedding); !s.ok()) return s;
  }
  if (info.decoder_embed && info.embedding.pooling != Pooling::kLastToken) {
    return absl::UnimplementedError(absl::StrCat(model_dir, ": ", info.architecture, " embeds by last-token pooling; ",
                                                 PoolingName(info.embedding.pooling), " pooling is not supported"));
  }
  return info;
}

}  // namespace gantry::runtime
