#include "runtime/internal/weights.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/internal/tensor_loader.h"

namespace gantry::runtime {
namespace {

// The transformer's tensors are "model.X" beside lm_head, or just "X" in a
// bare transformer's checkpoint (has_lm_head false).
std::string Prefix(const ModelConfig& c) { return c.has_lm_head ? "model." : ""; }

// Names of the expected tensors and their shapes, from the config.
ShapeMap ExpectedTensors(const ModelConfig& c) {
  ShapeMap shapes;
  const std::string m = Prefix(c);
  const int64_t q_rows = c.num_heads * c.head_dim;
  const int64_t kv_rows = c.num_kv_heads * c.head_dim;
  shapes[m + "embed_tokens.weight"] = {c.vocab_size, c.hidden_size};
  shapes[m + "norm.weight"] = {c.hidden_size};
  if (c.has_lm_head && !c.tie_word_embeddings) shapes["lm_head.weight"] = {c.vocab_size, c.hidden_size};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat(m, "layers.", i, ".");
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


// Rows [first, first + count) of a [units * unit_rows, ...] tensor's units.
TensorPart Rows(const std::string& name, int64_t first_unit, int64_t units, int64_t unit_rows) {
  return {name, 0, first_unit * unit_rows, units * unit_rows};
}

}  // namespace

absl::StatusOr<ModelConfig> ShardConfig(const ModelConfig& config, int size) {
  if (size < 1) return absl::InvalidArgumentError(absl::StrCat("tensor_parallel must be >= 1, got ", size));
  if (config.num_heads % size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor_parallel ", size, " does not divide the model's ",
                                                   config.num_heads, " attention heads"));
  }
  if (config.num_kv_heads % size != 0 && size % config.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor_parallel ", size, " and the model's ", config.num_kv_heads,
                                                   " KV heads: one must divide the other"));
  }
  if (config.intermediate_size % size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor_parallel ", size, " does not divide the model's ",
                                                   "intermediate_size ", config.intermediate_size));
  }
  ModelConfig local = config;
  local.num_heads = config.num_heads / size;
  local.num_kv_heads = std::max<int64_t>(1, config.num_kv_heads / size);
  local.intermediate_size = config.intermediate_size / size;
  return local;
}

absl::StatusOr<ModelWeights> LoadWeights(const Checkpoint& checkpoint, const ModelConfig& config,
                                         const at::Device& device, at::ScalarType dtype, const Shard& shard,
                                         ByteSink* sink) {
  const ShapeMap expected = ExpectedTensors(config);
  if (auto s = CheckTensorShapes(checkpoint, expected, [&](const std::string& name) { return IsIgnorable(name, config); },
                                config.architecture_name);
      !s.ok()) {
    return s;
  }

  auto local = ShardConfig(config, shard.size);
  if (!local.ok()) return local.status();
  if (shard.rank < 0 || shard.rank >= shard.size) {
    return absl::InvalidArgumentError(absl::StrCat("shard rank ", shard.rank, " outside [0, ", shard.size, ")"));
  }
  // This rank's query heads, KV heads and intermediate features.
  const int64_t hd = config.head_dim;
  const int64_t heads = local->num_heads, kv_heads = local->num_kv_heads, inter = local->intermediate_size;
  const int64_t first_head = shard.rank * heads;
  const int64_t first_kv_head =
      config.num_kv_heads >= shard.size ? shard.rank * kv_heads : shard.rank / (shard.size / config.num_kv_heads);
  const int64_t first_inter = shard.rank * inter;
  const bool sharded = shard.size > 1;
  auto whole = [](const std::string& name) { return TensorPart{name}; };

  TensorLoader loader(checkpoint, device, dtype, sink);
  ModelWeights weights;
  // On an error, the sink's copies end before the tensors they write go.
#define GANTRY_ASSIGN(target, expr)   \
  do {                                \
    auto loaded = (expr);             \
    if (!loaded.ok()) {               \
      (void)loader.Finish();          \
      return loaded.status();         \
    }                                 \
    target = *std::move(loaded);      \
  } while (false)

  const std::string m = Prefix(config);
  GANTRY_ASSIGN(weights.embed_tokens, loader.Load({whole(m + "embed_tokens.weight")}));
  GANTRY_ASSIGN(weights.final_norm, loader.Load({whole(m + "norm.weight")}));
  // lm_head: this rank's vocabulary rows, padded with zero rows to an equal
  // share so the ranks' logits gather into one [rows, ranks * share] tensor.
  const int64_t vocab_share = (config.vocab_size + shard.size - 1) / shard.size;
  const int64_t vocab_first = std::min<int64_t>(config.vocab_size, shard.rank * vocab_share);
  const int64_t vocab_rows = std::min<int64_t>(vocab_share, config.vocab_size - vocab_first);
  const std::string head_name = config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  if (!config.has_lm_head) {
    // A bare transformer: its outputs are the normed hidden states.
  } else if (!sharded) {
    if (config.tie_word_embeddings) {
      weights.lm_head = weights.embed_tokens;
    } else {
      GANTRY_ASSIGN(weights.lm_head, loader.Load({whole("lm_head.weight")}));
    }
  } else if (vocab_rows == vocab_share && config.tie_word_embeddings) {
    weights.lm_head = weights.embed_tokens.narrow(0, vocab_first, vocab_rows);
  } else {
    GANTRY_ASSIGN(weights.lm_head, loader.Load({TensorPart{head_name, 0, vocab_first, vocab_rows}}));
    if (vocab_rows < vocab_share) {
      if (absl::Status s = loader.Finish(); !s.ok()) return s;  // at::cat reads lm_head now
      at::Tensor padding = at::zeros({vocab_share - vocab_rows, config.hidden_size}, weights.lm_head.options());
      loader.Count(padding);
      weights.lm_head = at::cat({weights.lm_head, padding}, 0);
    }
  }
  for (int64_t i = 0; i < config.num_layers; ++i) {
    const std::string p = absl::StrCat(m, "layers.", i, ".");
    const std::string a = p + "self_attn.";
    auto q = [&](const std::string& n) { return Rows(a + "q_" + n, first_head, heads, hd); };
    auto kv = [&](const std::string& n) { return Rows(a + n, first_kv_head, kv_heads, hd); };
    auto mlp_rows = [&](const std::string& n) { return Rows(p + "mlp." + n, first_inter, inter, 1); };
    LayerWeights layer;
    GANTRY_ASSIGN(layer.input_norm, loader.Load({whole(p + "input_layernorm.weight")}));
    GANTRY_ASSIGN(layer.post_norm, loader.Load({whole(p + "post_attention_layernorm.weight")}));
    GANTRY_ASSIGN(layer.qkv_proj, loader.Load({q("proj.weight"), kv("k_proj.weight"), kv("v_proj.weight")}));
    GANTRY_ASSIGN(layer.qkv_bias,
                  loader.LoadOptional(config.qkv_bias, {q("proj.bias"), kv("k_proj.bias"), kv("v_proj.bias")}));
    GANTRY_ASSIGN(layer.o_proj, loader.Load({TensorPart{a + "o_proj.weight", 1, first_head * hd, heads * hd}}));
    GANTRY_ASSIGN(layer.o_bias, loader.LoadOptional(config.o_bias && shard.rank == 0, {whole(a + "o_proj.bias")}));
    GANTRY_ASSIGN(layer.q_norm, loader.LoadOptional(config.qk_norm, {whole(a + "q_norm.weight")}));
    GANTRY_ASSIGN(layer.k_norm, loader.LoadOptional(config.qk_norm, {whole(a + "k_norm.weight")}));
    GANTRY_ASSIGN(layer.gate_up_proj, loader.Load({mlp_rows("gate_proj.weight"), mlp_rows("up_proj.weight")}));
    GANTRY_ASSIGN(layer.gate_up_bias,
                  loader.LoadOptional(config.mlp_bias, {mlp_rows("gate_proj.bias"), mlp_rows("up_proj.bias")}));
    GANTRY_ASSIGN(layer.down_proj, loader.Load({TensorPart{p + "mlp.down_proj.weight", 1, first_inter, inter}}));
    GANTRY_ASSIGN(layer.down_bias,
                  loader.LoadOptional(config.mlp_bias && shard.rank == 0, {whole(p + "mlp.down_proj.bias")}));
    weights.layers.push_back(std::move(layer));
  }
#undef GANTRY_ASSIGN
  if (absl::Status s = loader.Finish(); !s.ok()) return s;
  weights.device_bytes = loader.bytes();
  return weights;
}

}  // namespace gantry::runtime
