// The "Precompiled" normalizer of tokenizer.json: SentencePiece's compiled
// normalization rules (precompiled_charsmap, base64), which XLM-RoBERTa,
// bge-m3, mT5 and other SentencePiece conversions carry instead of a named
// Unicode form. The blob is a darts-clone double-array trie over UTF-8 keys
// followed by NUL-terminated replacement strings. It is applied as Hugging
// Face's tokenizers applies it, which is not SentencePiece's own longest
// match: per extended grapheme cluster, a cluster under 6 bytes whose first
// (shortest) key prefix matches is replaced whole by that key's string;
// otherwise each character is replaced by its own entry or kept.
#ifndef GANTRY_RUNTIME_TEXT_PRECOMPILED_NORMALIZER_H_
#define GANTRY_RUNTIME_TEXT_PRECOMPILED_NORMALIZER_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "text/normalizer.h"

namespace gantry::text {

// `charsmap_base64` is the "precompiled_charsmap" field; an empty map
// normalizes nothing.
absl::StatusOr<std::unique_ptr<Normalizer>> MakePrecompiledNormalizer(absl::string_view charsmap_base64);

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_PRECOMPILED_NORMALIZER_H_
