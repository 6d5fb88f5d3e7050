#include "runtime/internal/weights.h"

#include <map>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace gantry::runtime {
namespace {

// Names of the expected tensors and their shapes, from the config.
using ShapeMap = std::map<std::string, std::vector<int64_t>>;

ShapeMap ExpectedTensors(const ModelConfig& c) {
  ShapeMap shapes;
  const int64_t q_rows = c.num_heads * c.head_dim;
  const int64_t kv_rows = c.num_kv_heads * c.head_dim;
  shapes["model.embed_tokens.weight"] = {c.vocab_size, c.hidden_size};
  shapes["model.norm.weight"] = {c.hidden_size};
  if (!c.tie_word_embeddings) shapes["lm_head.weight"] = {c.vocab_size, c.hidden_size};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    shapes[p + "input_layernorm.weight"] = {c.hidden_size};
    shapes[p + "post_attention_layernorm.weight"] = {c.hidden_size};
    shapes[p + "self_attn.q_proj.weight"] = {q_rows, c.hidden_size};
    shapes[p + "self_attn.k_proj.weight"] = {kv_rows, c.hidden_size};
    shapes[p + "self_attn.v_proj.weight"] = {kv_rows, c.hidden_size};
    shapes[p + "self_attn.o_proj.weight"] = {c.hidden_size, q_rows};
    if (c.qkv_bias) {
      shapes[p + "self_attn.q_proj.bias"] = {q_rows};
      shapes[p + "self_attn.k_proj.bias"] = {kv_rows};
      shapes[p + "self_attn.v_proj.bias"] = {kv_rows};
    }
    if (c.o_bias) shapes[p + "self_attn.o_proj.bias"] = {c.hidden_size};
    if (c.qk_norm) {
      shapes[p + "self_attn.q_norm.weight"] = {c.head_dim};
      shapes[p + "self_attn.k_norm.weight"] = {c.head_dim};
    }
    shapes[p + "mlp.gate_proj.weight"] = {c.intermediate_size, c.hidden_size};
    shapes[p + "mlp.up_proj.weight"] = {c.intermediate_size, c.hidden_size};
    shapes[p + "mlp.down_proj.weight"] = {c.hidden_size, c.intermediate_size};
    if (c.mlp_bias) {
      shapes[p + "mlp.gate_proj.bias"] = {c.intermediate_size};
      shapes[p + "mlp.up_proj.bias"] = {c.intermediate_size};
      shapes[p + "mlp.down_proj.bias"] = {c.hidden_size};
    }
  }
  return shapes;
}

// Tensors a checkpoint may carry that the runtime recomputes or ignores.
bool IsIgnorable(const std::string& name, const ModelConfig& config) {
  if (absl::EndsWith(name, "rotary_emb.inv_freq")) return true;
  // Some tied checkpoints still store lm_head; tying means it is unused.
  return config.tie_word_embeddings && name == "lm_head.weight";
}

std::string ListNames(const std::vector<std::string>& names) {
  constexpr size_t kShown = 12;
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(names.size(), kShown));
  std::string text = absl::StrJoin(shown, ", ");
  if (names.size() > kShown) absl::StrAppend(&text, ", and ", names.size() - kShown, " more");
  return text;
}

absl::StatusOr<at::ScalarType> FileScalarType(const TensorInfo& info) {
  switch (info.dtype) {
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", info.name, "\" has dtype ",
                                                     DTypeName(info.dtype),
                                                     "; weights must be F32, F16 or BF16"));
  }
}

class Loader {
 public:
  Loader(const Checkpoint& checkpoint, const at::Device& device, at::ScalarType dtype)
      : checkpoint_(checkpoint), device_(device), dtype_(dtype) {}

  // Copies the named tensors, concatenated along dim 0, into one new tensor.
  absl::StatusOr<at::Tensor> Load(const std::vector<std::string>& names) {
    std::vector<const Checkpoint::Entry*> entries;
    int64_t rows = 0;
    for (const auto& name : names) {
      const auto* entry = checkpoint_.Find(name);
      entries.push_back(entry);
      rows += entry->info->shape.empty() ? 1 : entry->info->shape[0];
    }
    std::vector<int64_t> shape = entries[0]->info->shape;
    if (!shape.empty()) shape[0] = rows;
    at::Tensor out = at::empty(shape, at::TensorOptions().device(device_).dtype(dtype_));
    int64_t row = 0;
    for (const auto* entry : entries) {
      auto file_type = FileScalarType(*entry->info);
      if (!file_type.ok()) return file_type.status();
      // A view of the mapped bytes: copy_ moves it to the device and converts
      // its dtype without an intermediate host tensor.
      at::Tensor mapped = at::from_blob(const_cast<void*>(entry->file->Data(*entry->info)),
                                        entry->info->shape, at::TensorOptions().dtype(*file_type));
      int64_t n = entry->info->shape.empty() ? 1 : entry->info->shape[0];
      (shape.empty() ? out : out.narrow(0, row, n)).copy_(mapped);
      row += n;
    }
    bytes_ += static_cast<uint64_t>(out.numel()) * out.element_size();
    return out;
  }

  absl::StatusOr<at::Tensor> LoadOptional(bool present, const std::vector<std::string>& names) {
    if (!present) return at::Tensor();
    return Load(names);
  }

  uint64_t bytes() const { return bytes_; }

 private:
  const Checkpoint& checkpoint_;
  at::Device device_;
  at::ScalarType dtype_;
  uint64_t bytes_ = 0;
};

}  // namespace

absl::StatusOr<ModelWeights> LoadWeights(const Checkpoint& checkpoint, const ModelConfig& config,
                                         const at::Device& device, at::ScalarType dtype) {
  const ShapeMap expected = ExpectedTensors(config);
  std::vector<std::string> missing, unexpected, wrong_shape;
  for (const auto& [name, shape] : expected) {
    const auto* entry = checkpoint.Find(name);
    if (entry == nullptr) {
      missing.push_back(name);
    } else if (entry->info->shape != shape) {
      wrong_shape.push_back(absl::StrCat(name, " is [", absl::StrJoin(entry->info->shape, ", "),
                                         "], config needs [", absl::StrJoin(shape, ", "), "]"));
    }
  }
  for (const auto& name : checkpoint.Names()) {
    if (!expected.count(name) && !IsIgnorable(name, config)) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty() || !wrong_shape.empty()) {
    std::vector<std::string> problems;
    if (!missing.empty()) problems.push_back(absl::StrCat("missing tensors: ", ListNames(missing)));
    if (!unexpected.empty()) {
      problems.push_back(absl::StrCat("unexpected tensors: ", ListNames(unexpected)));
    }
    if (!wrong_shape.empty()) problems.push_back(absl::StrCat("wrong shapes: ", ListNames(wrong_shape)));
    return absl::InvalidArgumentError(absl::StrCat(checkpoint.model_dir(), " (",
                                                   config.architecture_name, "): ",
                                                   absl::StrJoin(problems, "; ")));
  }

  Loader loader(checkpoint, device, dtype);
  ModelWeights weights;
#define GANTRY_ASSIGN(target, expr)        \
  do {                                     \
    auto loaded = (expr);                  \
    if (!loaded.ok()) return loaded.status(); \
    target = *std::move(loaded);           \
  } while (false)

  GANTRY_ASSIGN(weights.embed_tokens, loader.Load({"model.embed_tokens.weight"}));
  GANTRY_ASSIGN(weights.final_norm, loader.Load({"model.norm.weight"}));
  if (config.tie_word_embeddings) {
    weights.lm_head = weights.embed_tokens;
  } else {
    GANTRY_ASSIGN(weights.lm_head, loader.Load({"lm_head.weight"}));
  }
  for (int64_t i = 0; i < config.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    const std::string a = p + "self_attn.";
    LayerWeights layer;
    GANTRY_ASSIGN(layer.input_norm, loader.Load({p + "input_layernorm.weight"}));
    GANTRY_ASSIGN(layer.post_norm, loader.Load({p + "post_attention_layernorm.weight"}));
    GANTRY_ASSIGN(layer.qkv_proj,
                  loader.Load({a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"}));
    GANTRY_ASSIGN(layer.qkv_bias, loader.LoadOptional(config.qkv_bias, {a + "q_proj.bias",
                                                                         a + "k_proj.bias",
                                                                         a + "v_proj.bias"}));
    GANTRY_ASSIGN(layer.o_proj, loader.Load({a + "o_proj.weight"}));
    GANTRY_ASSIGN(layer.o_bias, loader.LoadOptional(config.o_bias, {a + "o_proj.bias"}));
    GANTRY_ASSIGN(layer.q_norm, loader.LoadOptional(config.qk_norm, {a + "q_norm.weight"}));
    GANTRY_ASSIGN(layer.k_norm, loader.LoadOptional(config.qk_norm, {a + "k_norm.weight"}));
    GANTRY_ASSIGN(layer.gate_up_proj,
                  loader.Load({p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"}));
    GANTRY_ASSIGN(layer.gate_up_bias,
                  loader.LoadOptional(config.mlp_bias, {p + "mlp.gate_proj.bias", p + "mlp.up_proj.bias"}));
    GANTRY_ASSIGN(layer.down_proj, loader.Load({p + "mlp.down_proj.weight"}));
    GANTRY_ASSIGN(layer.down_bias, loader.LoadOptional(config.mlp_bias, {p + "mlp.down_proj.bias"}));
    weights.layers.push_back(std::move(layer));
  }
#undef GANTRY_ASSIGN
  weights.device_bytes = loader.bytes();
  return weights;
}

}  // namespace gantry::runtime
