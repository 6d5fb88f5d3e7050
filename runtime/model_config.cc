#include "runtime/model_config.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/internal/config_reader.h"

namespace gantry::runtime {
namespace {

using nlohmann::json;

struct ArchitectureEntry {
  absl::string_view name;
  Architecture architecture;
  bool lm_head = true;  // false: the bare transformer (XModel), as embedding models ship it
};

constexpr ArchitectureEntry kArchitectures[] = {
    {"LlamaForCausalLM", Architecture::kLlama},
    {"MistralForCausalLM", Architecture::kMistral},
    {"Qwen2ForCausalLM", Architecture::kQwen2},
    {"Qwen3ForCausalLM", Architecture::kQwen3},
    {"LlamaModel", Architecture::kLlama, false},
    {"MistralModel", Architecture::kMistral, false},
    {"Qwen2Model", Architecture::kQwen2, false},
    {"Qwen3Model", Architecture::kQwen3, false},
};


// eos_token_id is an integer or a list of integers.
absl::Status ReadTokenIds(const json& value, std::vector<int64_t>* out, absl::string_view source) {
  out->clear();
  if (value.is_number_integer()) {
    out->push_back(value.get<int64_t>());
    return absl::OkStatus();
  }
  if (value.is_array()) {
    for (const auto& id : value) {
      if (!id.is_number_integer()) break;
      out->push_back(id.get<int64_t>());
    }
    if (out->size() == value.size()) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": \"eos_token_id\" must be an integer or a list of integers, got ",
                   value.dump()));
}

absl::Status ParseRope(const json& root, ConfigReader& reader, RopeConfig* rope, absl::string_view source) {
  // transformers 5 writes `rope_parameters` (holding rope_theta); older
  // configs write `rope_theta` beside an optional `rope_scaling`.
  const json* scaling = nullptr;
  if (auto it = root.find("rope_parameters"); it != root.end() && it->is_object()) {
    scaling = &*it;
    rope->theta = reader.Number(*it, "rope_theta", reader.Number(root, "rope_theta", 10000.0));
  } else {
    rope->theta = reader.Number(root, "rope_theta", 10000.0);
    if (auto it = root.find("rope_scaling"); it != root.end() && !it->is_null()) {
      if (!it->is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": \"rope_scaling\" must be an object"));
      }
      scaling = &*it;
    }
  }
  if (scaling == nullptr) return reader.status();
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (auto it = scaling->find(key); it != scaling->end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  if (type != "default" && type != "linear" && type != "llama3") {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": rope scaling type \"", type,
        "\" is not supported; supported: default, linear, llama3"));
  }
  rope->type = type;
  rope->factor = reader.Number(*scaling, "factor", 1.0);
  rope->low_freq_factor = reader.Number(*scaling, "low_freq_factor", 1.0);
  rope->high_freq_factor = reader.Number(*scaling, "high_freq_factor", 4.0);
  rope->original_max_position_embeddings = static_cast<int64_t>(
      reader.Number(*scaling, "original_max_position_embeddings", 8192));
  if (reader.status().ok() && type != "default" && rope->factor <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": rope scaling \"factor\" must be positive, got ", rope->factor));
  }
  if (reader.status().ok() && type == "llama3" &&
      rope->high_freq_factor <= rope->low_freq_factor) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": llama3 rope scaling needs high_freq_factor > low_freq_factor, got ",
        rope->high_freq_factor, " and ", rope->low_freq_factor));
  }
  return reader.status();
}

}  // namespace

std::vector<absl::string_view> SupportedArchitectures() {
  std::vector<absl::string_view> names;
  for (const auto& entry : kArchitectures) names.push_back(entry.name);
  return names;
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return buffer.str();
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view config_json,
                                             absl::string_view generation_config_json,
                                             absl::string_view source) {
  json root = json::parse(config_json.begin(), config_json.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": config.json is not a JSON object"));
  }
  ModelConfig config;
  auto arch_it = root.find("architectures");
  if (arch_it == root.end() || !arch_it->is_array() || arch_it->empty() ||
      !(*arch_it)[0].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": config.json has no \"architectures\" list; supported: ",
        absl::StrJoin(SupportedArchitectures(), ", ")));
  }
  config.architecture_name = (*arch_it)[0].get<std::string>();
  bool known = false;
  for (const auto& entry : kArchitectures) {
    if (entry.name == config.architecture_name) {
      config.architecture = entry.architecture;
      config.has_lm_head = entry.lm_head;
      known = true;
    }
  }
  if (!known) {
    return absl::UnimplementedError(absl::StrCat(
        source, ": architecture \"", config.architecture_name, "\" is not supported; supported: ",
        absl::StrJoin(SupportedArchitectures(), ", ")));
  }

  ConfigReader reader(root, source);
  config.vocab_size = reader.PositiveInt("vocab_size");
  config.hidden_size = reader.PositiveInt("hidden_size");
  config.intermediate_size = reader.PositiveInt("intermediate_size");
  config.num_layers = reader.PositiveInt("num_hidden_layers");
  config.num_heads = reader.PositiveInt("num_attention_heads");
  config.num_kv_heads = reader.PositiveInt("num_key_value_heads", config.num_heads);
  int64_t default_head_dim = config.num_heads > 0 ? config.hidden_size / config.num_heads : 0;
  config.head_dim = reader.PositiveInt("head_dim", default_head_dim);
  config.max_position_embeddings = reader.PositiveInt("max_position_embeddings", 2048);
  config.rms_norm_eps = reader.Number(root, "rms_norm_eps", 1e-6);
  config.tie_word_embeddings = reader.Bool("tie_word_embeddings", false);
  if (!reader.status().ok()) return reader.status();

  if (config.num_heads % config.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": num_attention_heads (", config.num_heads,
        ") must be a multiple of num_key_value_heads (", config.num_kv_heads, ")"));
  }
  if (config.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": head_dim must be even for rotary embeddings, got ", config.head_dim));
  }
  if (auto it = root.find("hidden_act"); it != root.end() && it->is_string() &&
                                         it->get<std::string>() != "silu") {
    return absl::UnimplementedError(absl::StrCat(source, ": hidden_act \"", it->get<std::string>(),
                                                 "\" is not supported; supported: silu"));
  }

  switch (config.architecture) {
    case Architecture::kLlama:
      config.qkv_bias = config.o_bias = reader.Bool("attention_bias", false);
      config.mlp_bias = reader.Bool("mlp_bias", false);
      break;
    case Architecture::kMistral:
      break;
    case Architecture::kQwen2:
      config.qkv_bias = true;
      break;
    case Architecture::kQwen3:
      config.qkv_bias = config.o_bias = reader.Bool("attention_bias", false);
      config.qk_norm = true;
      break;
  }
  // Mistral applies `sliding_window` whenever it is set; Qwen only with
  // use_sliding_window, which its released checkpoints leave off.
  if (config.architecture == Architecture::kMistral ||
      ((config.architecture == Architecture::kQwen2 || config.architecture == Architecture::kQwen3) &&
       reader.Bool("use_sliding_window", false))) {
    if (auto it = root.find("sliding_window"); it != root.end() && !it->is_null()) {
      config.sliding_window = reader.PositiveInt("sliding_window");
    }
    if (config.architecture != Architecture::kMistral && config.sliding_window > 0 &&
        reader.Int("max_window_layers", config.num_layers) < config.num_layers) {
      return absl::UnimplementedError(absl::StrCat(
          source, ": sliding window on only some layers (max_window_layers < num_hidden_layers) "
                  "is not supported"));
    }
  }
  if (auto s = ParseRope(root, reader, &config.rope, source); !s.ok()) return s;

  auto dtype = ReadWeightDtype(root, source);
  if (!dtype.ok()) return dtype.status();
  config.dtype = *std::move(dtype);

  if (auto it = root.find("bos_token_id"); it != root.end() && it->is_number_integer()) {
    config.bos_token_id = it->get<int64_t>();
  }
  if (auto it = root.find("eos_token_id"); it != root.end() && !it->is_null()) {
    if (auto s = ReadTokenIds(*it, &config.eos_token_ids, source); !s.ok()) return s;
  }
  if (!generation_config_json.empty()) {
    json generation = json::parse(generation_config_json.begin(), generation_config_json.end(), nullptr, /*allow_exceptions=*/false);
    if (generation.is_discarded() || !generation.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": generation_config.json is not a JSON object"));
    }
    if (auto it = generation.find("eos_token_id"); it != generation.end() && !it->is_null()) {
      if (auto s = ReadTokenIds(*it, &config.eos_token_ids, source); !s.ok()) return s;
    }
    if (auto it = generation.find("bos_token_id"); it != generation.end() && it->is_number_integer()) {
      config.bos_token_id = it->get<int64_t>();
    }
  }
  return config;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  auto config_text = ReadTextFile(model_dir + "/config.json");
  if (!config_text.ok()) {
    return absl::NotFoundError(absl::StrCat(model_dir, ": no readable config.json"));
  }
  std::string generation_text;
  if (auto text = ReadTextFile(model_dir + "/generation_config.json"); text.ok()) {
    generation_text = *std::move(text);
  }
  return ParseModelConfig(*config_text, generation_text, model_dir);
}

}  // namespace gantry::runtime
