// The checks every encoder input passes, shared by the engine (at submit,
// where a client's error is cheapest) and the runner (its own contract).
#include "absl/strings/str_cat.h"
#include "runtime/encoder_runner.h"

namespace gantry::runtime {

absl::Status CheckEncoderInput(const EncoderInput& input, size_t index, const EncoderLimits& limits) {
  const int64_t size = static_cast<int64_t>(input.tokens.size());
  if (size == 0) return absl::InvalidArgumentError(absl::StrCat("input ", index, " is empty"));
  if (size > limits.max_tokens) {
    return absl::OutOfRangeError(
        absl::StrCat("input ", index, " has ", size, " tokens; the model takes at most ", limits.max_tokens));
  }
  for (int32_t token : input.tokens) {
    if (token < 0 || token >= limits.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("input ", index, ": token id ", token,
                                                     " is outside the vocabulary [0, ", limits.vocab_size, ")"));
    }
  }
  if (!input.token_types.empty() && static_cast<int64_t>(input.token_types.size()) != size) {
    return absl::InvalidArgumentError(
        absl::StrCat("input ", index, " has ", size, " tokens but ", input.token_types.size(), " token types"));
  }
  for (int32_t type : input.token_types) {
    if (type < 0 || type >= limits.type_vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("input ", index, ": token type ", type, " is outside [0, ", limits.type_vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace gantry::runtime
