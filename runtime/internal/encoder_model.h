// BERT / (XLM-)RoBERTa encoders in LibTorch: weights (q/k/v fused at load)
// and the forward over a padded batch, with pooling or the classifier head.
#ifndef GANTRY_RUNTIME_INTERNAL_ENCODER_MODEL_H_
#define GANTRY_RUNTIME_INTERNAL_ENCODER_MODEL_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/checkpoint.h"
#include "runtime/encoder_config.h"
#include "runtime/internal/tensor_loader.h"
#include "runtime/model_task.h"

namespace gantry::cuda {
class LtGemm;  // runtime/cuda/lt_gemm.h
}  // namespace gantry::cuda

namespace gantry::runtime {

struct EncoderLayerWeights {
  at::Tensor qkv;           // [3 * hidden, hidden]: query rows, key rows, value rows
  at::Tensor qkv_bias;      // [3 * hidden]
  at::Tensor attn_out;      // [hidden, hidden]
  at::Tensor attn_out_bias; // [hidden]
  at::Tensor attn_norm;     // [hidden] LayerNorm weight after attention
  at::Tensor attn_norm_bias;
  at::Tensor up;            // [intermediate, hidden]
  at::Tensor up_bias;       // [intermediate]
  at::Tensor down;          // [hidden, intermediate]
  at::Tensor down_bias;     // [hidden]
  at::Tensor out_norm;      // [hidden] LayerNorm weight after the MLP
  at::Tensor out_norm_bias;
};

struct EncoderWeights {
  at::Tensor word;            // [vocab, hidden]
  at::Tensor position;        // [max_position_embeddings, hidden]
  at::Tensor token_type;      // [type_vocab_size, hidden]
  at::Tensor embed_norm;      // [hidden]
  at::Tensor embed_norm_bias; // [hidden]
  std::vector<EncoderLayerWeights> layers;
  // kBertClassifier: pooler (dense + tanh on [CLS]) then classifier.
  // kRobertaClassifier: head_dense + tanh on <s>, then classifier (out_proj).
  at::Tensor head_dense;       // [hidden, hidden], or undefined
  at::Tensor head_dense_bias;  // [hidden], or undefined
  at::Tensor classifier;       // [num_labels, hidden], or undefined
  at::Tensor classifier_bias;  // [num_labels], or undefined
  uint64_t device_bytes = 0;
};

// Finds the tensors under their prefix ("", "bert.", "roberta.", ...),
// checks every name and shape against the config (unused pooler tensors and
// position_ids buffers are ignored) and copies them to `device` in `dtype`.
// With `sink`, contiguous tensors of the file's dtype go through it
// (TensorLoader); the weights are complete when this returns.
absl::StatusOr<EncoderWeights> LoadEncoderWeights(const Checkpoint& checkpoint, const EncoderConfig& config,
                                                  const at::Device& device, at::ScalarType dtype,
                                                  ByteSink* sink = nullptr);

// How a CUDA forward may run (EncoderLoadOptions' cuda_kernels,
// cuda_gelu_epilogue, cuda_lt_gemm and cuda_residual_epilogue, as the load
// resolved them for the device and dtype).
struct EncoderCudaPaths {
  bool kernels = false;
  bool gelu_epilogue = false;
  // Set with lt_gemm: the sublayers' residual adds in its epilogue, the
  // LayerNorm after reading the sum alone (where lt_gemm takes the product).
  bool residual_epilogue = false;
  // Set: the layers' four products through it (16-bit, on the model's device).
  std::shared_ptr<cuda::LtGemm> lt_gemm;
};

// The output reads one row of each input's last hidden states (a classifier
// head, CLS or last-token pooling), not all of them (mean pooling).
bool OutputReadsOneRow(const EncoderConfig& config, Pooling pooling);

class EncoderModel {
 public:
  // last_layer_output_rows_only: EncoderLoadOptions' field of that name.
  EncoderModel(EncoderConfig config, EncoderWeights weights, Pooling pooling, bool normalize,
               EncoderCudaPaths cuda = EncoderCudaPaths(), bool last_layer_output_rows_only = true);

  // token_ids, token_types: [batch, length] int64, padded past each input's
  // length with pad_token_id / 0; lengths: [batch] int64 on the same device;
  // `padded`: some input is shorter than `length` (false lets attention run
  // without a mask, on the fastest kernel). Returns [batch, output_size]
  // float32: pooled (normalized when set up so) last hidden states, or the
  // classifier's logits.
  at::Tensor Forward(const at::Tensor& token_ids, const at::Tensor& token_types, const at::Tensor& lengths,
                     bool padded) const;

  const EncoderConfig& config() const { return config_; }
  const EncoderWeights& weights() const { return weights_; }

 private:
  at::Tensor Activation(const at::Tensor& x) const;
  // LayerNorm(word + token type + position embeddings) of token_ids and
  // token_types [batch, length] (int64), columns = arange(length) (int64):
  // [batch, length, hidden]. On CUDA with cuda_.kernels one
  // cuda::EmbedLayerNorm, else LibTorch's operators.
  at::Tensor Embed(const at::Tensor& token_ids, const at::Tensor& token_types, const at::Tensor& columns) const;
  // linear(x, weight, bias), through cuda_.lt_gemm where it takes the operands.
  at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) const;
  // x weight^T + bias (then the tanh-form GELU when `gelu`; plus `residual`,
  // of the output's shape, when defined: rounded once) through
  // cuda_.lt_gemm; nullopt when it is not set up or cannot take the operands
  // (float32, non-contiguous or misaligned, n or k not a multiple of 8, GELU
  // with a residual).
  std::optional<at::Tensor> LtLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                     bool gelu, const at::Tensor& residual = at::Tensor()) const;
  // Activation(linear(x, weight, bias)).
  at::Tensor Intermediate(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) const;
  // x = layer_norm(sublayer + x) with the norm's weight and bias, in place;
  // x = layer_norm(sublayer) when `sublayer_includes_x` (the residual add
  // made in the product's epilogue).
  void AddLayerNorm(const at::Tensor& sublayer, at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                    bool sublayer_includes_x = false) const;
  // x = layer_norm(linear(input, weight, bias) + x) with the norm's
  // weight and bias, in place: the add in LtGemm's epilogue where
  // cuda_.residual_epilogue is set and it takes the operands, else by AddLayerNorm.
  void DenseAddLayerNorm(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias, at::Tensor& x,
                         const at::Tensor& norm_weight, const at::Tensor& norm_bias) const;
  // The rest of `layer` after attention, in place over x [batch, rows, hidden]:
  // output projection of context [batch, rows, hidden], residual +
  // LayerNorm, MLP, residual + LayerNorm.
  void AttentionOutputAndMlp(const EncoderLayerWeights& layer, const at::Tensor& context, at::Tensor& x) const;

  EncoderConfig config_;
  EncoderWeights weights_;
  Pooling pooling_;
  bool normalize_;
  EncoderCudaPaths cuda_;
  bool last_layer_output_rows_only_;
};

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_ENCODER_MODEL_H_
