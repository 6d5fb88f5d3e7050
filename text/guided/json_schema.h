// JSON Schema (and "any JSON object") to the guided decoder's grammar IR, in
// the strict mode of OpenAI's structured outputs. Our own code (grammar.h
// says why). What the output looks like:
// - Compact JSON: no whitespace except one optional space after ':' and ','
//   (as json.dumps' separators), so a model cannot loop in whitespace.
// - Objects list their properties in schema order; optional ones may be left
//   out; without "additionalProperties" no other property is allowed. With
//   additionalProperties true or a schema, extra properties come after the
//   declared ones, with keys that use no escapes and differ from every
//   declared name.
// - Numbers: at most 16 integer digits, 16 fraction digits and 2 exponent
//   digits, so every number is finite as a double. Integer minimum, maximum,
//   exclusiveMinimum and exclusiveMaximum are enforced (integers have at most
//   16 digits); for "number" only a lower bound >= 0 is (no minus sign), other
//   number bounds are not enforced.
// - Strings: any UTF-8 but unescaped '"', '\' and control characters; the
//   escapes \" \\ \/ \b \f \n \r \t \uXXXX (not surrogates, so a code point is
//   one escape); minLength/maxLength count code points. "pattern" must match
//   the whole string (JSON Schema searches; a whole match is one too) and
//   cannot be combined with minLength/maxLength. format: date (February 29 is
//   never generated), time and date-time (RFC 3339, offset required), email,
//   uuid.
// - oneOf is compiled as anyOf: an output that matches two branches is
//   possible when the branches overlap. allOf only with a single schema.
// - $ref: local JSON pointers ("#/$defs/x", "#/definitions/x", "#"),
//   recursion allowed as long as some finite output exists.
// - Ignored: description, title, default, examples, $schema, $id, $comment.
//   Any other keyword is INVALID_ARGUMENT naming it and its JSON pointer.
#ifndef GANTRY_TEXT_GUIDED_JSON_SCHEMA_H_
#define GANTRY_TEXT_GUIDED_JSON_SCHEMA_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "text/guided/grammar_ir.h"

namespace gantry::guided::internal {

// Fills an empty `ir` (rule 0 is the start) with the schema's grammar.
absl::Status JsonSchemaToGrammar(absl::string_view schema_json, GrammarIr* ir);

// Fills an empty `ir` with "any JSON object" (OpenAI's json_object).
void AnyJsonObjectGrammar(GrammarIr* ir);

}  // namespace gantry::guided::internal

#endif  // GANTRY_TEXT_GUIDED_JSON_SCHEMA_H_
