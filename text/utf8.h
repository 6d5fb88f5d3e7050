// UTF-8 helpers for the tokenizer: validation, code point iteration, lossy
// conversion (as Rust's String::from_utf8_lossy, which Hugging Face's
// tokenizers use), and GPT-2's byte-to-character table.
#ifndef GANTRY_RUNTIME_TEXT_UTF8_H_
#define GANTRY_RUNTIME_TEXT_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gantry::text {

// Length of the UTF-8 sequence starting at text[pos]: 1-4 for a valid code
// point, 0 for an invalid one, -1 when the bytes are a valid start cut off by
// the end of the text.
int Utf8SequenceLength(absl::string_view text, size_t pos);

// OK, or INVALID_ARGUMENT naming the byte offset of the first bad sequence.
absl::Status ValidateUtf8(absl::string_view text);

// Appends `code_point` encoded as UTF-8.
void AppendUtf8(char32_t code_point, std::string* out);

// Decodes the code point at text[pos] (which must be valid) and advances pos.
char32_t NextCodePoint(absl::string_view text, size_t* pos);

// Moves the longest prefix of `*pending` that is settled into `*out`: valid
// code points as they are, invalid bytes as U+FFFD (one per maximal invalid
// subpart, as from_utf8_lossy does). When `final` is false a valid but cut-off
// sequence at the end stays in `*pending`; when true it becomes U+FFFD.
void DrainUtf8(std::string* pending, bool final, std::string* out);

// GPT-2's reversible byte <-> printable character mapping used by byte-level
// BPE: byte b stands for the code point ByteToCodePoint(b).
char32_t ByteToCodePoint(uint8_t byte);
// The byte a code point stands for, or -1 when it stands for none.
int CodePointToByte(char32_t code_point);

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_UTF8_H_
