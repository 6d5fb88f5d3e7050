// Unigram (SentencePiece) as Hugging Face's tokenizers "Unigram" model: the
// segmentation of a word with the highest total piece score (Viterbi over a
// byte trie of the vocabulary; ties keep the shorter piece found first). A
// character no piece starts with costs the lowest score minus 10 and becomes
// unk_id, runs of them fused into one; with byte_fallback an unknown run
// becomes its <0xXX> byte pieces instead.
#ifndef GANTRY_RUNTIME_TEXT_UNIGRAM_MODEL_H_
#define GANTRY_RUNTIME_TEXT_UNIGRAM_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"
#include "text/model.h"

namespace gantry::text {

class UnigramModel : public Model {
 public:
  // `model` is tokenizer.json's "model" object (type "Unigram").
  static absl::StatusOr<std::unique_ptr<Model>> Create(const nlohmann::json& model);

 private:
  UnigramModel() = default;
  void EncodeUncached(absl::string_view word, std::vector<int32_t>* ids) const override;
  // Calls f(end, id) for every vocabulary piece word[start, end), shortest
  // first.
  template <typename F>
  void ForEachPiece(absl::string_view word, size_t start, F f) const;

  std::vector<double> scores_;
  // Trie edges keyed by (node << 8 | byte); node 0 is the root.
  absl::flat_hash_map<uint64_t, int32_t> edges_;
  std::vector<int32_t> node_token_;  // token id ending at a node, -1 if none
  std::optional<int32_t> unk_id_;
  double unk_score_ = 0;
  bool byte_fallback_ = false;
};

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_UNIGRAM_MODEL_H_
