// What a model folder serves (text generation, embeddings or rerank) and, for
// embedding models, how token states become one vector: read from the folder
// as sentence-transformers writes it (modules.json, 1_Pooling/config.json,
// 2_Normalize, sentence_bert_config.json, config_sentence_transformers.json),
// overridable per model in Gantry's config (`task`).
#ifndef GANTRY_RUNTIME_MODEL_TASK_H_
#define GANTRY_RUNTIME_MODEL_TASK_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gantry::runtime {

enum class ModelTask { kGenerate, kEmbed, kRerank };

absl::string_view ModelTaskName(ModelTask task);  // "generate", "embed", "rerank"
// INVALID_ARGUMENT naming the accepted values.
absl::StatusOr<ModelTask> ParseModelTask(absl::string_view name);

enum class Pooling { kCls, kMean, kLastToken };
absl::string_view PoolingName(Pooling pooling);  // "cls", "mean", "last_token"

struct EmbeddingSetup {
  Pooling pooling = Pooling::kCls;
  bool normalize = true;       // unit L2 length (sentence-transformers' Normalize module)
  int64_t max_seq_length = 0;  // tokens an input is cut to when truncation is asked for; 0: the model's limit
  // Named prompts prepended to the input text (config_sentence_transformers.json),
  // e.g. {"query": "Instruct: ...\nQuery:"}, and the one used when a request names none.
  std::map<std::string, std::string> prompts;
  std::string default_prompt_name;
  // "sentence-transformers" when the folder said so, else "default" (CLS
  // pooling, normalized: what BGE-style BERT and XLM-R models use).
  std::string source = "default";
};

struct ModelTaskInfo {
  ModelTask task = ModelTask::kGenerate;
  std::string architecture;  // config.json's architectures[0]
  EmbeddingSetup embedding;  // kEmbed only
  // kRerank by a causal LM (Qwen3-Reranker, `task: rerank`): a document's
  // relevance is P("yes") against "no" at the last position of the model
  // card's prompt. The token ids are the loader's, from the tokenizer.
  bool decoder_rerank = false;
  // Embed with a bare decoder (Qwen3Model and kin): the runner computes the
  // final-normed hidden states, pooled as `embedding` says (last token).
  bool decoder_embed = false;
  // Served by an EncoderRunner (BERT-style), not the generation runner.
  bool encoder() const { return task != ModelTask::kGenerate && !decoder_rerank && !decoder_embed; }
  int32_t yes_token = -1;
  int32_t no_token = -1;
};

// Reads the folder's config.json and sentence-transformers files. `requested`
// (the config's `task`) must be one the architecture can serve: a
// cross-encoder serves rerank, a bare encoder embed, a causal LM generate
// or, asked for, rerank (as Qwen3-Reranker).
// Errors name the file and what is unsupported (e.g. a Dense module, max
// pooling).
absl::StatusOr<ModelTaskInfo> DetectModelTask(const std::string& model_dir,
                                              std::optional<ModelTask> requested = std::nullopt);

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_MODEL_TASK_H_
