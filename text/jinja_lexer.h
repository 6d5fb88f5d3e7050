// Jinja lexer: template text and tag tokens, with Jinja's whitespace control
// as Hugging Face renders chat templates (trim_blocks, lstrip_blocks, "-"
// markers, one trailing newline dropped).
#ifndef GANTRY_RUNTIME_TEXT_JINJA_LEXER_H_
#define GANTRY_RUNTIME_TEXT_JINJA_LEXER_H_

#include <string>
#include <vector>

namespace gantry::text::jinja {

struct Token {
  enum class Type {
    kText,         // literal template text
    kExprBegin,    // {{
    kExprEnd,      // }}
    kStmtBegin,    // {%
    kStmtEnd,      // %}
    kName,
    kString,
    kInteger,
    kFloat,
    kOperator,     // punctuation and operators
    kEnd,
  };
  Type type;
  std::string text;
  int line;
};

// Throws jinja::Error (with the line) on an unterminated tag or string.
std::vector<Token> Tokenize(const std::string& source);

}  // namespace gantry::text::jinja

#endif  // GANTRY_RUNTIME_TEXT_JINJA_LEXER_H_
