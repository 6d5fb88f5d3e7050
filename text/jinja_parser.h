// Jinja parser: tokens to a statement list. Unsupported tags, filters and
// tests fail here, naming the construct and its line.
#ifndef GANTRY_TEXT_JINJA_PARSER_H_
#define GANTRY_TEXT_JINJA_PARSER_H_

#include <vector>

#include "text/jinja_ast.h"
#include "text/jinja_lexer.h"

namespace gantry::text::jinja {

// Throws jinja::Error.
Body Parse(const std::vector<Token>& tokens);

}  // namespace gantry::text::jinja

#endif  // GANTRY_TEXT_JINJA_PARSER_H_
