#include "runtime/encoder_config.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/internal/config_reader.h"
#include "runtime/model_config.h"

namespace gantry::runtime {
namespace {

using nlohmann::json;

struct EncoderEntry {
  absl::string_view name;
  EncoderArchitecture architecture;
  EncoderHead head;
};

constexpr EncoderEntry kEncoders[] = {
    {"BertModel", EncoderArchitecture::kBert, EncoderHead::kNone},
    {"BertForSequenceClassification", EncoderArchitecture::kBert, EncoderHead::kBertClassifier},
    {"XLMRobertaModel", EncoderArchitecture::kRoberta, EncoderHead::kNone},
    {"XLMRobertaForSequenceClassification", EncoderArchitecture::kRoberta, EncoderHead::kRobertaClassifier},
    {"RobertaModel", EncoderArchitecture::kRoberta, EncoderHead::kNone},
    {"RobertaForSequenceClassification", EncoderArchitecture::kRoberta, EncoderHead::kRobertaClassifier},
};

}  // namespace

std::vector<absl::string_view> SupportedEncoderArchitectures() {
  std::vector<absl::string_view> names;
  for (const auto& entry : kEncoders) names.push_back(entry.name);
  return names;
}

bool IsEncoderArchitecture(absl::string_view name) {
  for (const auto& entry : kEncoders) {
    if (entry.name == name) return true;
  }
  return false;
}

absl::StatusOr<EncoderConfig> ParseEncoderConfig(absl::string_view config_json, absl::string_view source) {
  json root = json::parse(config_json.begin(), config_json.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": config.json is not a JSON object"));
  }
  EncoderConfig config;
  auto arch_it = root.find("architectures");
  if (arch_it == root.end() || !arch_it->is_array() || arch_it->empty() || !(*arch_it)[0].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": config.json has no \"architectures\" list"));
  }
  config.architecture_name = (*arch_it)[0].get<std::string>();
  const EncoderEntry* entry = nullptr;
  for (const auto& candidate : kEncoders) {
    if (candidate.name == config.architecture_name) entry = &candidate;
  }
  if (entry == nullptr) {
    return absl::UnimplementedError(absl::StrCat(source, ": architecture \"", config.architecture_name,
                                                 "\" is not a supported encoder; supported: ",
                                                 absl::StrJoin(SupportedEncoderArchitectures(), ", ")));
  }
  config.architecture = entry->architecture;
  config.head = entry->head;

  ConfigReader reader(root, source);
  config.vocab_size = reader.PositiveInt("vocab_size");
  config.hidden_size = reader.PositiveInt("hidden_size");
  config.intermediate_size = reader.PositiveInt("intermediate_size");
  config.num_layers = reader.PositiveInt("num_hidden_layers");
  config.num_heads = reader.PositiveInt("num_attention_heads");
  config.max_position_embeddings = reader.PositiveInt("max_position_embeddings", 512);
  config.type_vocab_size = reader.PositiveInt("type_vocab_size", 2);
  config.pad_token_id = reader.Int("pad_token_id", config.architecture == EncoderArchitecture::kRoberta ? 1 : 0);
  config.layer_norm_eps = reader.Number(root, "layer_norm_eps", 1e-12);
  if (!reader.status().ok()) return reader.status();
  if (config.hidden_size % config.num_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": hidden_size ", config.hidden_size,
                                                   " is not a multiple of num_attention_heads ", config.num_heads));
  }
  if (config.pad_token_id < 0 || config.pad_token_id >= config.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": pad_token_id ", config.pad_token_id, " is outside the vocabulary"));
  }
  if (config.max_tokens() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": max_position_embeddings ",
                                                   config.max_position_embeddings,
                                                   " leaves no positions after pad_token_id + 1"));
  }
  if (auto it = root.find("hidden_act"); it != root.end() && !it->is_null()) {
    const std::string act = it->is_string() ? it->get<std::string>() : it->dump();
    if (act != "gelu" && act != "gelu_new" && act != "gelu_pytorch_tanh" && act != "relu") {
      return absl::UnimplementedError(absl::StrCat(source, ": hidden_act \"", act,
                                                   "\" is not supported; supported: gelu, gelu_new, "
                                                   "gelu_pytorch_tanh, relu"));
    }
    config.hidden_act = act;
  }
  if (auto it = root.find("position_embedding_type"); it != root.end() && it->is_string() &&
                                                      it->get<std::string>() != "absolute") {
    return absl::UnimplementedError(absl::StrCat(source, ": position_embedding_type \"", it->get<std::string>(),
                                                 "\" is not supported; supported: absolute"));
  }
  if (config.head != EncoderHead::kNone) {
    // transformers writes id2label (num_labels is derived from it); a config
    // may also carry num_labels itself.
    config.num_labels = 2;
    if (auto it = root.find("id2label"); it != root.end() && it->is_object() && !it->empty()) {
      config.num_labels = static_cast<int64_t>(it->size());
    }
    config.num_labels = reader.PositiveInt("num_labels", config.num_labels);
    if (!reader.status().ok()) return reader.status();
  }
  auto dtype = ReadWeightDtype(root, source);
  if (!dtype.ok()) return dtype.status();
  config.dtype = *std::move(dtype);
  return config;
}

absl::StatusOr<EncoderConfig> LoadEncoderConfig(const std::string& model_dir) {
  auto text = ReadTextFile(model_dir + "/config.json");
  if (!text.ok()) return absl::NotFoundError(absl::StrCat(model_dir, ": no readable config.json"));
  return ParseEncoderConfig(*text, model_dir);
}

}  // namespace gantry::runtime
