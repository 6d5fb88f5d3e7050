// Decoders of Hugging Face tokenizer.json: ByteLevel, Replace, ByteFallback,
// Fuse, Strip, Metaspace, WordPiece and Sequence.
//
// Every supported chain is concatenative: decoding a token list equals
// decoding each token on its own and joining the bytes, given whether the
// token is the first one decoded (Strip and Metaspace act on the start only).
// That lets the streaming detokenizer append one token at a time. Results are
// raw bytes; invalid UTF-8 becomes U+FFFD only when text is released.
#ifndef GANTRY_RUNTIME_TEXT_DECODER_H_
#define GANTRY_RUNTIME_TEXT_DECODER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace gantry::text {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Turns a token's vocab text into its bytes, in place.
  virtual void Decode(std::string* token, bool first) const = 0;
};

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const nlohmann::json& config);

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_DECODER_H_
