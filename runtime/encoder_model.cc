#include "runtime/internal/encoder_model.h"

#include <torch/version.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/internal/tensor_loader.h"

#ifdef GANTRY_WITH_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>

#include "runtime/cuda/kernels.h"
#include "runtime/internal/cuda_kernel_dtype.h"
#include "runtime/internal/torch_util.h"
#endif
#ifdef GANTRY_WITH_LT_GEMM
#include "runtime/cuda/lt_gemm.h"
#endif

namespace gantry::runtime {
namespace {

constexpr absl::string_view kWordEmbeddings = "embeddings.word_embeddings.weight";

// The prefix the checkpoint's encoder tensors carry: "" for a bare encoder
// saved on its own, "bert." / "roberta." inside a classification model.
absl::StatusOr<std::string> FindPrefix(const Checkpoint& checkpoint, const EncoderConfig& config) {
  for (const std::string& name : checkpoint.Names()) {
    if (absl::EndsWith(name, kWordEmbeddings)) return name.substr(0, name.size() - kWordEmbeddings.size());
  }
  return absl::InvalidArgumentError(absl::StrCat(checkpoint.model_dir(), " (", config.architecture_name,
                                                 "): no tensor named \"", kWordEmbeddings, "\" under any prefix"));
}

ShapeMap ExpectedTensors(const EncoderConfig& c, const std::string& p) {
  const int64_t h = c.hidden_size;
  ShapeMap shapes;
  shapes[p + "embeddings.word_embeddings.weight"] = {c.vocab_size, h};
  shapes[p + "embeddings.position_embeddings.weight"] = {c.max_position_embeddings, h};
  shapes[p + "embeddings.token_type_embeddings.weight"] = {c.type_vocab_size, h};
  shapes[p + "embeddings.LayerNorm.weight"] = {h};
  shapes[p + "embeddings.LayerNorm.bias"] = {h};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string l = absl::StrCat(p, "encoder.layer.", i, ".");
    for (const char* part : {"query", "key", "value"}) {
      shapes[absl::StrCat(l, "attention.self.", part, ".weight")] = {h, h};
      shapes[absl::StrCat(l, "attention.self.", part, ".bias")] = {h};
    }
    shapes[l + "attention.output.dense.weight"] = {h, h};
    shapes[l + "attention.output.dense.bias"] = {h};
    shapes[l + "attention.output.LayerNorm.weight"] = {h};
    shapes[l + "attention.output.LayerNorm.bias"] = {h};
    shapes[l + "intermediate.dense.weight"] = {c.intermediate_size, h};
    shapes[l + "intermediate.dense.bias"] = {c.intermediate_size};
    shapes[l + "output.dense.weight"] = {h, c.intermediate_size};
    shapes[l + "output.dense.bias"] = {h};
    shapes[l + "output.LayerNorm.weight"] = {h};
    shapes[l + "output.LayerNorm.bias"] = {h};
  }
  if (c.head == EncoderHead::kBertClassifier) {
    shapes[p + "pooler.dense.weight"] = {h, h};
    shapes[p + "pooler.dense.bias"] = {h};
    shapes["classifier.weight"] = {c.num_labels, h};
    shapes["classifier.bias"] = {c.num_labels};
  } else if (c.head == EncoderHead::kRobertaClassifier) {
    shapes["classifier.dense.weight"] = {h, h};
    shapes["classifier.dense.bias"] = {h};
    shapes["classifier.out_proj.weight"] = {c.num_labels, h};
    shapes["classifier.out_proj.bias"] = {c.num_labels};
  }
  return shapes;
}

// Tensors a checkpoint may carry that the configured task does not use: the
// pooler of a bare encoder (embedding models pool the hidden states
// themselves), pre-training heads, and the position_ids buffer.
bool IsIgnorable(const std::string& name, const EncoderConfig& config, const std::string& prefix) {
  if (absl::EndsWith(name, "embeddings.position_ids")) return true;
  if (config.head != EncoderHead::kBertClassifier && absl::StartsWith(name, prefix + "pooler.")) return true;
  return absl::StartsWith(name, "cls.") || absl::StartsWith(name, "lm_head.");
}

}  // namespace

absl::StatusOr<EncoderWeights> LoadEncoderWeights(const Checkpoint& checkpoint, const EncoderConfig& config,
                                                  const at::Device& device, at::ScalarType dtype,
                                                  ByteSink* sink) {
  auto prefix = FindPrefix(checkpoint, config);
  if (!prefix.ok()) return prefix.status();
  const std::string& p = *prefix;
  if (auto s = CheckTensorShapes(
          checkpoint, ExpectedTensors(config, p),
          [&](const std::string& name) { return IsIgnorable(name, config, p); }, config.architecture_name);
      !s.ok()) {
    return s;
  }
  TensorLoader loader(checkpoint, device, dtype, sink);
  EncoderWeights w;
  // On an error, the sink's copies end before the tensors they write go.
#define GANTRY_ASSIGN(target, ...)            \
  do {                                        \
    auto loaded = loader.Load({__VA_ARGS__}); \
    if (!loaded.ok()) {                       \
      (void)loader.Finish();                  \
      return loaded.status();                 \
    }                                         \
    target = *std::move(loaded);              \
  } while (false)
  auto whole = [](const std::string& name) { return TensorPart{name}; };
  GANTRY_ASSIGN(w.word, whole(p + "embeddings.word_embeddings.weight"));
  GANTRY_ASSIGN(w.position, whole(p + "embeddings.position_embeddings.weight"));
  GANTRY_ASSIGN(w.token_type, whole(p + "embeddings.token_type_embeddings.weight"));
  GANTRY_ASSIGN(w.embed_norm, whole(p + "embeddings.LayerNorm.weight"));
  GANTRY_ASSIGN(w.embed_norm_bias, whole(p + "embeddings.LayerNorm.bias"));
  for (int64_t i = 0; i < config.num_layers; ++i) {
    const std::string l = absl::StrCat(p, "encoder.layer.", i, ".");
    const std::string s = l + "attention.self.";
    EncoderLayerWeights layer;
    GANTRY_ASSIGN(layer.qkv, whole(s + "query.weight"), whole(s + "key.weight"), whole(s + "value.weight"));
    GANTRY_ASSIGN(layer.qkv_bias, whole(s + "query.bias"), whole(s + "key.bias"), whole(s + "value.bias"));
    GANTRY_ASSIGN(layer.attn_out, whole(l + "attention.output.dense.weight"));
    GANTRY_ASSIGN(layer.attn_out_bias, whole(l + "attention.output.dense.bias"));
    GANTRY_ASSIGN(layer.attn_norm, whole(l + "attention.output.LayerNorm.weight"));
    GANTRY_ASSIGN(layer.attn_norm_bias, whole(l + "attention.output.LayerNorm.bias"));
    GANTRY_ASSIGN(layer.up, whole(l + "intermediate.dense.weight"));
    GANTRY_ASSIGN(layer.up_bias, whole(l + "intermediate.dense.bias"));
    GANTRY_ASSIGN(layer.down, whole(l + "output.dense.weight"));
    GANTRY_ASSIGN(layer.down_bias, whole(l + "output.dense.bias"));
    GANTRY_ASSIGN(layer.out_norm, whole(l + "output.LayerNorm.weight"));
    GANTRY_ASSIGN(layer.out_norm_bias, whole(l + "output.LayerNorm.bias"));
    w.layers.push_back(std::move(layer));
  }
  if (config.head == EncoderHead::kBertClassifier) {
    GANTRY_ASSIGN(w.head_dense, whole(p + "pooler.dense.weight"));
    GANTRY_ASSIGN(w.head_dense_bias, whole(p + "pooler.dense.bias"));
    GANTRY_ASSIGN(w.classifier, whole("classifier.weight"));
    GANTRY_ASSIGN(w.classifier_bias, whole("classifier.bias"));
  } else if (config.head == EncoderHead::kRobertaClassifier) {
    GANTRY_ASSIGN(w.head_dense, whole("classifier.dense.weight"));
    GANTRY_ASSIGN(w.head_dense_bias, whole("classifier.dense.bias"));
    GANTRY_ASSIGN(w.classifier, whole("classifier.out_proj.weight"));
    GANTRY_ASSIGN(w.classifier_bias, whole("classifier.out_proj.bias"));
  }
#undef GANTRY_ASSIGN
  if (absl::Status s = loader.Finish(); !s.ok()) return s;
  w.device_bytes = loader.bytes();
  return w;
}

EncoderModel::EncoderModel(EncoderConfig config, EncoderWeights weights, Pooling pooling, bool normalize,
                           EncoderCudaPaths cuda, bool last_layer_output_rows_only)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      pooling_(pooling),
      normalize_(normalize),
      cuda_(cuda),
      last_layer_output_rows_only_(last_layer_output_rows_only) {}

bool OutputReadsOneRow(const EncoderConfig& config, Pooling pooling) {
  return config.head != EncoderHead::kNone || pooling == Pooling::kCls || pooling == Pooling::kLastToken;
}

at::Tensor EncoderModel::Activation(const at::Tensor& x) const {
  if (config_.hidden_act == "relu") return at::relu(x);
  if (config_.hidden_act == "gelu") return at::gelu(x);  // erf form, as transformers' "gelu"
  return at::gelu(x, "tanh");                            // gelu_new, gelu_pytorch_tanh
}

std::optional<at::Tensor> EncoderModel::LtLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                                 bool gelu, const at::Tensor& residual) const {
#ifdef GANTRY_WITH_LT_GEMM
  if (cuda_.lt_gemm == nullptr || !x.is_cuda() || weight.scalar_type() != x.scalar_type() || !x.is_contiguous() ||
      !weight.is_contiguous() || (bias.defined() && !bias.is_contiguous()) || x.numel() == 0) {
    return std::nullopt;
  }
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = weight.size(0);
  // The residual is read as y's [m, n] row-major twin.
  if (residual.defined() && (residual.sizes() != at::IntArrayRef(shape) || !residual.is_contiguous() ||
                             residual.scalar_type() != x.scalar_type() || residual.device() != x.device())) {
    return std::nullopt;
  }
  at::Tensor y = at::empty(shape, x.options());
  cuda::LtGemmArgs args;
  args.dtype = KernelDType(x.scalar_type());
  args.k = x.size(-1);
  args.m = x.numel() / args.k;
  args.n = weight.size(0);
  args.x = x.data_ptr();
  args.w = weight.data_ptr();
  args.bias = bias.defined() ? bias.data_ptr() : nullptr;
  args.epilogue = gelu ? cuda::LtEpilogue::kGelu : cuda::LtEpilogue::kNone;
  args.residual = residual.defined() ? residual.data_ptr() : nullptr;
  args.y = y.data_ptr();
  // What LtGemm cannot take (float32, n or k not a multiple of 8, a
  // misaligned operand, GELU with a residual) goes through LibTorch instead.
  if (!cuda::CheckLtGemmArgs(args).ok()) return std::nullopt;
  ThrowIfError(cuda_.lt_gemm->Run(args, at::cuda::getCurrentCUDAStream()));
  return y;
#else
  return std::nullopt;
#endif
}

at::Tensor EncoderModel::Linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) const {
  if (std::optional<at::Tensor> y = LtLinear(x, weight, bias, /*gelu=*/false)) return *std::move(y);
  return at::linear(x, weight, bias);
}

at::Tensor EncoderModel::Intermediate(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) const {
  const bool gelu = config_.hidden_act != "relu";
  if (cuda_.gelu_epilogue && gelu && x.is_cuda() && x.scalar_type() != at::kFloat) {
    if (std::optional<at::Tensor> y = LtLinear(x, weight, bias, /*gelu=*/true)) return *std::move(y);
    const int64_t hidden = x.size(-1);
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = weight.size(0);
    return at::_addmm_activation(bias, x.reshape({-1, hidden}), weight.t(), 1, 1, /*use_gelu=*/true).view(shape);
  }
  return Activation(Linear(x, weight, bias));
}

void EncoderModel::AddLayerNorm(const at::Tensor& sublayer, at::Tensor& x, const at::Tensor& weight,
                                const at::Tensor& bias, bool sublayer_includes_x) const {
#ifdef GANTRY_WITH_CUDA_KERNELS
  if (cuda_.kernels && x.is_cuda() && sublayer.is_contiguous() && x.is_contiguous()) {
    cuda::AddLayerNormArgs args;
    args.dtype = KernelDType(x.scalar_type());
    args.rows = x.numel() / x.size(-1);
    args.dim = x.size(-1);
    args.eps = static_cast<float>(config_.layer_norm_eps);
    args.input = sublayer.data_ptr();
    args.residual = sublayer_includes_x ? nullptr : x.data_ptr();
    args.weight = weight.data_ptr();
    args.bias = bias.data_ptr();
    args.output = x.data_ptr();
    ThrowIfError(cuda::AddLayerNorm(args, at::cuda::getCurrentCUDAStream()));
    return;
  }
#endif
  x = at::layer_norm(sublayer_includes_x ? sublayer : sublayer + x, {x.size(-1)}, weight, bias,
                     config_.layer_norm_eps);
}

void EncoderModel::DenseAddLayerNorm(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                                     at::Tensor& x, const at::Tensor& norm_weight,
                                     const at::Tensor& norm_bias) const {
  // s = dtype(input weight^T + bias + x), one rounding; the LayerNorm then
  // reads s alone instead of the product and x. Not in place over x: LtGemm
  // writes its output several times while it tunes a shape.
  if (cuda_.residual_epilogue) {
    if (std::optional<at::Tensor> s = LtLinear(input, weight, bias, /*gelu=*/false, /*residual=*/x)) {
      AddLayerNorm(*s, x, norm_weight, norm_bias, /*sublayer_includes_x=*/true);
      return;
    }
  }
  AddLayerNorm(Linear(input, weight, bias), x, norm_weight, norm_bias);
}

void EncoderModel::AttentionOutputAndMlp(const EncoderLayerWeights& layer, const at::Tensor& context,
                                         at::Tensor& x) const {
  DenseAddLayerNorm(context, layer.attn_out, layer.attn_out_bias, x, layer.attn_norm, layer.attn_norm_bias);
  DenseAddLayerNorm(Intermediate(x, layer.up, layer.up_bias), layer.down, layer.down_bias, x, layer.out_norm,
                    layer.out_norm_bias);
}

at::Tensor EncoderModel::Embed(const at::Tensor& token_ids, const at::Tensor& token_types,
                               const at::Tensor& columns) const {
  const EncoderWeights& w = weights_;
#ifdef GANTRY_WITH_CUDA_KERNELS
  if (cuda_.kernels && token_ids.is_cuda() && token_ids.scalar_type() == at::kLong &&
      token_types.scalar_type() == at::kLong && token_ids.is_contiguous() && token_types.is_contiguous()) {
    const int64_t length = token_ids.size(1);
    at::Tensor x = at::empty({token_ids.size(0), length, config_.hidden_size}, w.word.options());
    cuda::EmbedLayerNormArgs args;
    args.dtype = KernelDType(x.scalar_type());
    args.rows = token_ids.numel();
    args.length = length;
    args.dim = config_.hidden_size;
    args.position_offset = config_.position_offset();
    args.eps = static_cast<float>(config_.layer_norm_eps);
    args.token_ids = token_ids.data_ptr<int64_t>();  // within the tables: CheckEncoderInput
    args.token_types = token_types.data_ptr<int64_t>();
    args.word = w.word.data_ptr();
    args.position = w.position.data_ptr();
    args.token_type = w.token_type.data_ptr();
    args.weight = w.embed_norm.data_ptr();
    args.bias = w.embed_norm_bias.data_ptr();
    args.output = x.data_ptr();
    ThrowIfError(cuda::EmbedLayerNorm(args, at::cuda::getCurrentCUDAStream()));
    return x;
  }
#endif
  // transformers' order: word + token type, then + position, each rounded.
  at::Tensor x = at::embedding(w.word, token_ids) + at::embedding(w.token_type, token_types);
  x = x + at::embedding(w.position, columns + config_.position_offset()).unsqueeze(0);
  return at::layer_norm(x, {config_.hidden_size}, w.embed_norm, w.embed_norm_bias, config_.layer_norm_eps);
}

at::Tensor EncoderModel::Forward(const at::Tensor& token_ids, const at::Tensor& token_types,
                                 const at::Tensor& lengths, bool padded) const {
  const int64_t batch = token_ids.size(0), length = token_ids.size(1);
  const int64_t hidden = config_.hidden_size, heads = config_.num_heads, head_dim = hidden / heads;
  const EncoderWeights& w = weights_;
  const auto long_options = at::TensorOptions().device(token_ids.device()).dtype(at::kLong);

  at::Tensor columns = at::arange(length, long_options);                        // [length]
  at::Tensor valid = columns.unsqueeze(0).lt(lengths.unsqueeze(1));              // [batch, length]
  at::Tensor x = Embed(token_ids, token_types, columns);  // [batch, length, hidden]

  // Padding keys are masked out; without padding there is no mask, so
  // LibTorch 2 can pick its flash attention kernel.
#if TORCH_VERSION_MAJOR >= 2
  // An empty optional, not an undefined tensor: LibTorch 2 rejects the latter.
  const std::optional<at::Tensor> key_mask =
      padded ? std::optional<at::Tensor>(valid.view({batch, 1, 1, length})) : std::nullopt;  // true: attend
#else
  // Additive: padding keys get -inf (every input has at least one real token).
  const at::Tensor key_mask =
      padded ? at::zeros({batch, 1, 1, length}, x.options().dtype(at::kFloat))
                   .masked_fill(valid.logical_not().view({batch, 1, 1, length}), -std::numeric_limits<float>::infinity())
             : at::zeros({1}, x.options().dtype(at::kFloat));
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
#endif
  auto attend = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
    return at::scaled_dot_product_attention(q, k, v, key_mask);
#else
    at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).to(at::kFloat) * scale + key_mask;
    return at::matmul(at::softmax(scores, -1).to(x.scalar_type()), v);
#endif
  };
  // [batch] the row of [batch * length] that the output reads from each
  // input, where it reads one: the first token (classifier heads, CLS
  // pooling) or the last real one (last-token pooling).
  at::Tensor output_rows;
  if (OutputReadsOneRow(config_, pooling_)) {
    const bool last_token = config_.head == EncoderHead::kNone && pooling_ == Pooling::kLastToken;
    output_rows = at::arange(batch, long_options) * length + (last_token ? lengths - 1 : at::zeros_like(lengths));
  }
  const bool last_layer_at_output_rows = last_layer_output_rows_only_ && output_rows.defined() && !w.layers.empty();
  const size_t full_layers = w.layers.size() - (last_layer_at_output_rows ? 1 : 0);
  for (size_t i = 0; i < full_layers; ++i) {
    const EncoderLayerWeights& layer = w.layers[i];
    at::Tensor qkv = Linear(x, layer.qkv, layer.qkv_bias)  // [3, batch, heads, length, head_dim]
                         .view({batch, length, 3, heads, head_dim})
                         .permute({2, 0, 3, 1, 4});
    at::Tensor context = attend(qkv[0], qkv[1], qkv[2]).permute({0, 2, 1, 3}).reshape({batch, length, hidden});
    AttentionOutputAndMlp(layer, context, x);
  }
  if (last_layer_at_output_rows) {
    // The last layer at the rows the output reads: every input's keys and
    // values, but the query, attention output, MLP and norms of one row per
    // input (about 1/24 of a 24-layer forward's products saved).
    const EncoderLayerWeights& layer = w.layers.back();
    at::Tensor picked = x.reshape({batch * length, hidden}).index_select(0, output_rows).view({batch, 1, hidden});
    at::Tensor q = Linear(picked, layer.qkv.narrow(0, 0, hidden), layer.qkv_bias.narrow(0, 0, hidden))
                       .view({batch, 1, heads, head_dim})
                       .transpose(1, 2);  // [batch, heads, 1, head_dim]
    at::Tensor kv = Linear(x, layer.qkv.narrow(0, hidden, 2 * hidden), layer.qkv_bias.narrow(0, hidden, 2 * hidden))
                        .view({batch, length, 2, heads, head_dim})
                        .permute({2, 0, 3, 1, 4});  // [2, batch, heads, length, head_dim]
    at::Tensor context = attend(q, kv[0], kv[1]).permute({0, 2, 1, 3}).reshape({batch, 1, hidden});
    AttentionOutputAndMlp(layer, context, picked);
    x = picked;  // [batch, 1, hidden]
  }
  // [batch, hidden]: each input's row the output reads (one-row outputs).
  auto output_row = [&] {
    return last_layer_at_output_rows ? x.select(1, 0)
                                     : x.reshape({batch * length, hidden}).index_select(0, output_rows);
  };

  if (config_.head != EncoderHead::kNone) {
    // Both classifier heads: dense + tanh on the first token, then the labels.
    at::Tensor first = at::tanh(at::linear(output_row(), w.head_dense, w.head_dense_bias));
    return at::linear(first, w.classifier, w.classifier_bias).to(at::kFloat);
  }
  at::Tensor pooled;  // [batch, hidden] float32
  switch (pooling_) {
    case Pooling::kCls:
    case Pooling::kLastToken:
      pooled = output_row().to(at::kFloat);
      break;
    case Pooling::kMean:
      pooled = (x.to(at::kFloat) * valid.unsqueeze(-1)).sum(1) / lengths.unsqueeze(1).to(at::kFloat);
      break;
  }
  if (normalize_) pooled = pooled / pooled.norm(2, {-1}, /*keepdim=*/true).clamp_min(1e-12);
  return pooled;
}

}  // namespace gantry::runtime
