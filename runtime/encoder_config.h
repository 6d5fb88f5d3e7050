// Hugging Face `config.json` of the bidirectional encoders Gantry serves for
// embeddings and rerank: BERT and (XLM-)RoBERTa, bare (embedding models such
// as bge-large-zh and bge-m3) or with a sequence-classification head
// (cross-encoder rerankers such as bge-reranker-v2-m3).
#ifndef GANTRY_RUNTIME_ENCODER_CONFIG_H_
#define GANTRY_RUNTIME_ENCODER_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gantry::runtime {

enum class EncoderArchitecture { kBert, kRoberta };  // kRoberta: RoBERTa and XLM-RoBERTa

// What sits on top of the encoder's last hidden states.
enum class EncoderHead {
  kNone,                // bare encoder: hidden states, pooled by the caller's choice
  kBertClassifier,      // BertForSequenceClassification: tanh pooler on [CLS], then a linear classifier
  kRobertaClassifier,   // (XLM-)RobertaForSequenceClassification: dense, tanh, out_proj on <s>
};

struct EncoderConfig {
  std::string architecture_name;  // as written in config.json
  EncoderArchitecture architecture = EncoderArchitecture::kBert;
  EncoderHead head = EncoderHead::kNone;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t max_position_embeddings = 0;
  int64_t type_vocab_size = 2;
  int64_t pad_token_id = 0;
  int64_t num_labels = 0;  // classifiers: outputs per input
  double layer_norm_eps = 1e-12;
  std::string hidden_act = "gelu";  // "gelu" (erf), "gelu_new" / "gelu_pytorch_tanh" (tanh), "relu"
  std::string dtype = "float32";

  // RoBERTa numbers positions from pad_token_id + 1 (fairseq's convention),
  // so its longest input is that much shorter than its position table.
  int64_t position_offset() const {
    return architecture == EncoderArchitecture::kRoberta ? pad_token_id + 1 : 0;
  }
  int64_t max_tokens() const { return max_position_embeddings - position_offset(); }
  // Floats per input: the hidden size, or the classifier's labels.
  int64_t output_size() const { return head == EncoderHead::kNone ? hidden_size : num_labels; }
};

// The `architectures` values this parser accepts.
std::vector<absl::string_view> SupportedEncoderArchitectures();
bool IsEncoderArchitecture(absl::string_view name);

absl::StatusOr<EncoderConfig> ParseEncoderConfig(absl::string_view config_json, absl::string_view source);
absl::StatusOr<EncoderConfig> LoadEncoderConfig(const std::string& model_dir);

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_ENCODER_CONFIG_H_
