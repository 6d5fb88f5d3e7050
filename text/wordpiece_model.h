// WordPiece as Hugging Face's tokenizers "WordPiece" model (BERT): greedy
// longest-match-first over the vocabulary, later pieces spelled with
// continuing_subword_prefix ("##"); a word with an unmatchable rest, or longer
// than max_input_chars_per_word characters, is one unk_token.
#ifndef GANTRY_RUNTIME_TEXT_WORDPIECE_MODEL_H_
#define GANTRY_RUNTIME_TEXT_WORDPIECE_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"
#include "text/model.h"

namespace gantry::text {

class WordPieceModel : public Model {
 public:
  // `model` is tokenizer.json's "model" object (type "WordPiece").
  static absl::StatusOr<std::unique_ptr<Model>> Create(const nlohmann::json& model);

 private:
  WordPieceModel() = default;
  void EncodeUncached(absl::string_view word, std::vector<int32_t>* ids) const override;

  std::string prefix_;
  size_t max_chars_ = 100;
  int32_t unk_id_ = 0;
};

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_WORDPIECE_MODEL_H_
