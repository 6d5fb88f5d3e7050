#include "text/json_scanner.h"

#include "absl/strings/ascii.h"

namespace gantry::text {
namespace {

bool IsJsonSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

void JsonScanner::Reset() { *this = JsonScanner(); }

JsonScanner::Result JsonScanner::Feed(char c) {
  if (in_string_) {
    if (hex_left_ > 0) {
      if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return Result::kError;
      --hex_left_;
      return Result::kMore;
    }
    if (escape_) {
      escape_ = false;
      if (c == 'u') {
        hex_left_ = 4;
        return Result::kMore;
      }
      const absl::string_view escapes = "\"\\/bfnrt";
      return escapes.find(c) != absl::string_view::npos ? Result::kMore : Result::kError;
    }
    if (c == '\\') {
      escape_ = true;
      return Result::kMore;
    }
    if (c == '"') {
      in_string_ = false;
      return ValueEnded();
    }
    return static_cast<unsigned char>(c) < 0x20 ? Result::kError : Result::kMore;
  }
  if (!literal_rest_.empty()) {
    if (c != literal_rest_[0]) return Result::kError;
    literal_rest_.remove_prefix(1);
    return literal_rest_.empty() ? ValueEnded() : Result::kMore;
  }
  if (in_number_) {
    if (absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '.' || c == 'e' || c == 'E' || c == '+' ||
        c == '-') {
      return Result::kMore;
    }
    in_number_ = false;
    if (stack_.empty()) return Result::kDoneBefore;
    // The byte after the number belongs to the enclosing container.
  }
  if (stack_.empty()) return StartValue(c);
  if (IsJsonSpace(c)) return Result::kMore;
  Frame& frame = stack_.back();
  const char close = frame.object ? '}' : ']';
  switch (frame.expect) {
    case Expect::kKeyOrClose:
    case Expect::kKey:
      if (c == '}' && frame.expect == Expect::kKeyOrClose) break;
      if (c != '"') return Result::kError;
      frame.expect = Expect::kColon;
      in_string_ = true;
      return Result::kMore;
    case Expect::kColon:
      if (c != ':') return Result::kError;
      frame.expect = Expect::kValue;
      return Result::kMore;
    case Expect::kValueOrClose:
      if (c == ']') break;
      [[fallthrough]];
    case Expect::kValue:
      frame.expect = Expect::kCommaOrClose;
      return StartValue(c);
    case Expect::kCommaOrClose:
      if (c == ',') {
        frame.expect = frame.object ? Expect::kKey : Expect::kValue;
        return Result::kMore;
      }
      if (c != close) return Result::kError;
      break;
  }
  // `c` closes the innermost container.
  stack_.pop_back();
  return ValueEnded();
}

JsonScanner::Result JsonScanner::StartValue(char c) {
  switch (c) {
    case '{':
      stack_.push_back({true, Expect::kKeyOrClose});
      return Result::kMore;
    case '[':
      stack_.push_back({false, Expect::kValueOrClose});
      return Result::kMore;
    case '"':
      in_string_ = true;
      return Result::kMore;
    case 't':
      literal_rest_ = "rue";
      return Result::kMore;
    case 'f':
      literal_rest_ = "alse";
      return Result::kMore;
    case 'n':
      literal_rest_ = "ull";
      return Result::kMore;
    default:
      if (c == '-' || absl::ascii_isdigit(static_cast<unsigned char>(c))) {
        in_number_ = true;
        return Result::kMore;
      }
      return Result::kError;
  }
}

}  // namespace gantry::text
