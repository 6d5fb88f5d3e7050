// Regular expressions (the ECMAScript/Python subset requests use) compiled to
// the guided decoder's grammar IR over UTF-8 bytes. Our own code: the
// project's PCRE2 wrapper matches text but cannot give the automaton a token
// mask needs (automaton.h says why the whole engine is ours).
#ifndef GANTRY_TEXT_GUIDED_REGEX_GRAMMAR_H_
#define GANTRY_TEXT_GUIDED_REGEX_GRAMMAR_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "text/guided/grammar_ir.h"

namespace gantry::guided::internal {

enum class RegexOutput {
  kRaw,          // the output text itself matches
  kJsonContent,  // the output is the inside of a JSON string whose decoded value matches
};

// Literals, escapes (\d \w \s \D \W \S \t \n \r \f \v \0 \xHH \uHHHH \u{H..}
// and escaped punctuation), classes [a-z] [^...], `.` (any code point but line
// terminators, as in JavaScript), groups ((...), (?:...), (?<name>...)),
// alternation, * + ? {n} {n,} {n,m} (lazy forms too: same language), and ^ / $
// at the very ends (ignored: the whole output must match). Anything else
// (backreferences, lookaround, \b, \p{...}) is INVALID_ARGUMENT with the
// offset.
absl::StatusOr<ExprPtr> RegexToExpr(absl::string_view pattern, RegexOutput output);

// A grammar whose one rule matches exactly the regex.
absl::Status RegexToGrammar(absl::string_view pattern, GrammarIr* ir);

// One code point of `set` as it appears inside a JSON string: as itself, or
// escaped where JSON requires (", \ and control characters).
ExprPtr JsonContentClass(const class CodePointSet& set);

}  // namespace gantry::guided::internal

#endif  // GANTRY_TEXT_GUIDED_REGEX_GRAMMAR_H_
