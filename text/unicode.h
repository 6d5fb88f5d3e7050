// Character classes and case mappings as Rust's `char` methods define them,
// which Hugging Face's tokenizers use (utf8proc's tables underneath).
#ifndef GANTRY_RUNTIME_TEXT_UNICODE_H_
#define GANTRY_RUNTIME_TEXT_UNICODE_H_

#include <string>

#include "absl/strings/string_view.h"

namespace gantry::text {

// char::is_whitespace: the White_Space property.
bool IsWhitespace(char32_t c);
// Unicode general category P* (Pc, Pd, Ps, Pe, Pi, Pf, Po).
bool IsPunctuation(char32_t c);
// Category Mn (nonspacing marks: the accents NFD splits off).
bool IsNonspacingMark(char32_t c);
// Categories Cc, Cf, Cn, Co, Cs (unicode_categories' is_other).
bool IsOther(char32_t c);

// Appends char::to_lowercase(c): the full mapping, so U+0130 becomes two
// code points.
void AppendLowercase(char32_t c, std::string* out);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
// Through utf8proc, length-aware (a NUL survives); invalid UTF-8 is returned
// unchanged.
std::string NormalizeUnicode(absl::string_view text, NormalForm form);

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_UNICODE_H_
