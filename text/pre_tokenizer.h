// Pre-tokenizers of Hugging Face tokenizer.json: Split, ByteLevel, Metaspace,
// Digits, BertPreTokenizer and Sequence. Each refines a list of pieces; the
// model then runs on each piece on its own.
#ifndef GANTRY_RUNTIME_TEXT_PRE_TOKENIZER_H_
#define GANTRY_RUNTIME_TEXT_PRE_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace gantry::text {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // `first_section` is true for text at the start of the input (not after an
  // added token), for Metaspace's prepend_scheme "first".
  virtual void PreTokenize(std::vector<std::string>* pieces, bool first_section) const = 0;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const nlohmann::json& config);

// Maps every byte of `text` to GPT-2's printable byte characters.
std::string ByteLevelEncode(const std::string& text);

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_PRE_TOKENIZER_H_
