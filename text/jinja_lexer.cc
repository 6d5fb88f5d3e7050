#include "text/jinja_lexer.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "text/jinja_value.h"
#include "text/utf8.h"

namespace gantry::text::jinja {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();  // keep_trailing_newline=False
  }

  std::vector<Token> Run() {
    std::string text;
    int text_line = line_;
    bool strip_next_text = false;  // a "-" closed the previous tag
    while (pos_ < src_.size()) {
      const bool tag = src_[pos_] == '{' && pos_ + 1 < src_.size() &&
                       (src_[pos_ + 1] == '{' || src_[pos_ + 1] == '%' || src_[pos_ + 1] == '#');
      if (!tag) {
        if (src_[pos_] == '\n') ++line_;
        text.push_back(src_[pos_++]);
        continue;
      }
      const char kind = src_[pos_ + 1];
      const bool minus = pos_ + 2 < src_.size() && src_[pos_ + 2] == '-';
      const bool plus = pos_ + 2 < src_.size() && src_[pos_ + 2] == '+';
      if (strip_next_text) StripLeading(&text);
      if (minus) {
        StripTrailing(&text);
      } else if (kind != '{' && !plus) {
        LstripBlock(&text);
      }
      if (!text.empty()) tokens_.push_back({Token::Type::kText, text, text_line});
      text.clear();
      pos_ += (minus || plus) ? 3 : 2;
      bool closing_minus = false;
      if (kind == '#') {
        closing_minus = SkipComment();
      } else {
        closing_minus = LexTag(kind == '{');
      }
      strip_next_text = closing_minus;
      // trim_blocks: the newline right after a block or comment tag goes.
      if (!closing_minus && kind != '{' && pos_ < src_.size() && src_[pos_] == '\n' && !last_close_plus_) {
        ++pos_;
        ++line_;
      }
      text_line = line_;
    }
    if (strip_next_text) StripLeading(&text);
    if (!text.empty()) tokens_.push_back({Token::Type::kText, text, text_line});
    tokens_.push_back({Token::Type::kEnd, "", line_});
    return std::move(tokens_);
  }

 private:
  static void StripTrailing(std::string* text) {
    while (!text->empty() && IsSpace(text->back())) text->pop_back();
  }
  static void StripLeading(std::string* text) {
    size_t n = 0;
    while (n < text->size() && IsSpace((*text)[n])) ++n;
    text->erase(0, n);
  }
  // lstrip_blocks: spaces and tabs between a line start and a block tag go.
  // Judged on the source, as Jinja does: the newline may already have been
  // eaten by trim_blocks after the previous tag.
  void LstripBlock(std::string* text) const {
    size_t k = 0;
    while (k < pos_ && (src_[pos_ - k - 1] == ' ' || src_[pos_ - k - 1] == '\t')) ++k;
    const bool at_line_start = k == pos_ || src_[pos_ - k - 1] == '\n';
    if (at_line_start && k <= text->size()) text->erase(text->size() - k);
  }

  bool SkipComment() {
    const int start_line = line_;
    while (pos_ + 1 < src_.size()) {
      if (src_[pos_] == '#' && src_[pos_ + 1] == '}') {
        const bool minus = pos_ > 0 && src_[pos_ - 1] == '-';
        pos_ += 2;
        last_close_plus_ = false;
        return minus;
      }
      if (src_[pos_] == '\n') ++line_;
      ++pos_;
    }
    throw Error("unterminated comment", start_line);
  }

  // Lexes the inside of {{ }} or {% %}; returns whether it closed with "-".
  bool LexTag(bool expression) {
    const int start_line = line_;
    tokens_.push_back({expression ? Token::Type::kExprBegin : Token::Type::kStmtBegin, "", line_});
    int depth = 0;  // brackets opened inside the tag
    while (true) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) {
        if (src_[pos_] == '\n') ++line_;
        ++pos_;
      }
      if (pos_ >= src_.size()) throw Error(expression ? "unterminated {{" : "unterminated {%", start_line);
      // Closing marker, with an optional "-" or "+" before it.
      for (char modifier : {'\0', '-', '+'}) {
        size_t at = pos_ + (modifier ? 1 : 0);
        if (modifier && (pos_ >= src_.size() || src_[pos_] != modifier)) continue;
        if (depth == 0 && at + 1 < src_.size() && src_[at] == (expression ? '}' : '%') && src_[at + 1] == '}') {
          pos_ = at + 2;
          last_close_plus_ = modifier == '+';
          tokens_.push_back({expression ? Token::Type::kExprEnd : Token::Type::kStmtEnd, "", line_});
          return modifier == '-';
        }
      }
      const char c = src_[pos_];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t start = pos_;
        while (pos_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
        tokens_.push_back({Token::Type::kName, src_.substr(start, pos_ - start), line_});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t start = pos_;
        bool is_float = false;
        while (pos_ < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
        if (pos_ + 1 < src_.size() && src_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
          is_float = true;
          ++pos_;
          while (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) ++pos_;
        }
        std::string digits;
        for (char d : src_.substr(start, pos_ - start)) {
          if (d != '_') digits.push_back(d);
        }
        tokens_.push_back({is_float ? Token::Type::kFloat : Token::Type::kInteger, digits, line_});
      } else if (c == '\'' || c == '"') {
        tokens_.push_back({Token::Type::kString, LexString(c), line_});
      } else {
        static const char* kTwoChar[] = {"==", "!=", "<=", ">=", "//", "**"};
        std::string op(1, c);
        for (const char* two : kTwoChar) {
          if (src_.compare(pos_, 2, two) == 0) op = two;
        }
        if (std::string("()[]{},.:|+-*/%~<>=!").find(c) == std::string::npos) {
          throw Error(absl::StrCat("unexpected character '", std::string(1, c), "' in tag"), line_);
        }
        if (op == "(" || op == "[" || op == "{") ++depth;
        if (op == ")" || op == "]" || op == "}") --depth;
        pos_ += op.size();
        tokens_.push_back({Token::Type::kOperator, op, line_});
      }
    }
  }

  std::string LexString(char quote) {
    const int start_line = line_;
    ++pos_;
    std::string out;
    while (pos_ < src_.size() && src_[pos_] != quote) {
      char c = src_[pos_++];
      if (c == '\n') ++line_;
      if (c != '\\' || pos_ >= src_.size()) {
        out.push_back(c);
        continue;
      }
      char e = src_[pos_++];
      switch (e) {
        case 'n': out.push_back('\n'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case '\\': out.push_back('\\'); break;
        case '\'': out.push_back('\''); break;
        case '"': out.push_back('"'); break;
        case 'u': {
          // Four hex digits, checked here: std::stoul would throw out of
          // the parser on "\\u+1" or "\\uZZZZ" (found by tests/fuzz).
          if (pos_ + 4 > src_.size()) throw Error("bad \\u escape", line_);
          char32_t code = 0;
          for (size_t i = 0; i < 4; ++i) {
            const char h = src_[pos_ + i];
            const int digit = h >= '0' && h <= '9' ? h - '0'
                              : h >= 'a' && h <= 'f' ? h - 'a' + 10
                              : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                                     : -1;
            if (digit < 0) throw Error("bad \\u escape: four hex digits expected", line_);
            code = code * 16 + static_cast<char32_t>(digit);
          }
          AppendUtf8(code, &out);
          pos_ += 4;
          break;
        }
        default:
          out.push_back('\\');
          out.push_back(e);
      }
    }
    if (pos_ >= src_.size()) throw Error("unterminated string", start_line);
    ++pos_;
    return out;
  }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  bool last_close_plus_ = false;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> Tokenize(const std::string& source) { return Lexer(source).Run(); }

}  // namespace gantry::text::jinja
