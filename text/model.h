// The model step of a Hugging Face tokenizer.json: BPE, WordPiece or Unigram
// turns one pre-tokenized word into ids. The vocabulary and a bounded cache
// of words already encoded (most words repeat) are shared here.
#ifndef GANTRY_RUNTIME_TEXT_MODEL_H_
#define GANTRY_RUNTIME_TEXT_MODEL_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"

namespace gantry::text {

class Model {
 public:
  virtual ~Model() = default;

  // Appends the ids of one pre-tokenized word.
  void Encode(absl::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // The token's text, or nullptr for an id outside the vocabulary.
  const std::string* IdToToken(int32_t id) const;
  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }

 protected:
  Model() = default;
  virtual void EncodeUncached(absl::string_view word, std::vector<int32_t>* ids) const = 0;

  // Reads a {"token": id} vocabulary (BPE, WordPiece); `type` names the model
  // in errors.
  absl::Status ReadVocabObject(const nlohmann::json& vocab, absl::string_view type);
  // A later duplicate of a token takes its id, as in the reference.
  void AddToken(const std::string& token, int32_t id);

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;

 private:
  mutable std::mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

// `config` is tokenizer.json's "model" object; an unknown type is an error
// naming it.
absl::StatusOr<std::unique_ptr<Model>> MakeModel(const nlohmann::json& config);

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_MODEL_H_
