// Normalizers of Hugging Face tokenizer.json: NFC, NFD, NFKC, NFKD (utf8proc),
// Lowercase, StripAccents, BertNormalizer, Precompiled (SentencePiece's
// character map), Prepend, Replace, Strip and Sequence.
#ifndef GANTRY_RUNTIME_TEXT_NORMALIZER_H_
#define GANTRY_RUNTIME_TEXT_NORMALIZER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace gantry::text {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void Normalize(std::string* text) const = 0;
};

// A null JSON value gives nullptr (no normalization). An unknown type is an
// error naming it.
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const nlohmann::json& config);

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_NORMALIZER_H_
