// Hugging Face `config.json` + `generation_config.json` for the Llama family.
#ifndef GANTRY_RUNTIME_MODEL_CONFIG_H_
#define GANTRY_RUNTIME_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace gantry::runtime {

enum class Architecture { kLlama, kMistral, kQwen2, kQwen3 };

struct RopeConfig {
  std::string type = "default";  // "default", "linear" or "llama3"
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3 only
  double high_freq_factor = 4.0;  // llama3 only
  int64_t original_max_position_embeddings = 8192;  // llama3 only
};

struct ModelConfig {
  std::string architecture_name;  // as written in config.json
  Architecture architecture = Architecture::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  // false for a bare transformer (e.g. Qwen3Model, as Qwen3-Embedding ships):
  // its weights carry no "model." prefix and no lm_head, and a step's
  // "logits" are the final-normed hidden states ([rows, hidden_size]); it
  // never samples.
  bool has_lm_head = true;
  bool qkv_bias = false;     // q/k/v projections carry a bias
  bool o_bias = false;       // the output projection carries a bias
  bool mlp_bias = false;
  bool qk_norm = false;      // per-head RMSNorm on q and k (Qwen3)
  int64_t sliding_window = 0;  // 0 = full attention
  std::string dtype = "float32";  // torch_dtype / dtype: float32, bfloat16, float16
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // generation_config.json first, else config.json
};

// Names of the supported `architectures` values, for error messages and docs.
std::vector<absl::string_view> SupportedArchitectures();

// `generation_config_json` may be empty (the file is optional).
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view config_json,
                                             absl::string_view generation_config_json,
                                             absl::string_view source);

// Reads `config.json` and, when present, `generation_config.json` from a model folder.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

absl::StatusOr<std::string> ReadTextFile(const std::string& path);

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_MODEL_CONFIG_H_
