// Regex parser -> grammar IR (regex_grammar.h).
#include "text/guided/regex_grammar.h"

#include <cctype>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "text/guided/utf8_ranges.h"
#include "text/utf8.h"

namespace gantry::guided::internal {
namespace {

constexpr int32_t kMaxRepeat = 10000;

CodePointSet Digits() { return CodePointSet::Range('0', '9'); }
CodePointSet Word() {
  CodePointSet s = Digits();
  s.Add('A', 'Z');
  s.Add('a', 'z');
  s.Add('_', '_');
  return s;
}
// JavaScript's \s: WhiteSpace and LineTerminator.
CodePointSet Space() {
  CodePointSet s;
  s.Add('\t', '\r');
  s.Add(' ', ' ');
  for (char32_t c : {0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF}) s.Add(c, c);
  s.Add(0x2000, 0x200A);
  return s;
}
CodePointSet AnyButLineTerminators() {
  CodePointSet s;
  s.Add('\n', '\n');
  s.Add('\r', '\r');
  s.Add(0x2028, 0x2029);
  return s.Complement();
}

class Parser {
 public:
  Parser(absl::string_view pattern, RegexOutput output) : p_(pattern), output_(output) {}

  absl::StatusOr<ExprPtr> Parse() {
    if (!p_.empty() && p_[0] == '^') pos_ = 1;
    ExprPtr e;
    if (absl::Status s = Alternation(&e); !s.ok()) return s;
    if (pos_ < p_.size()) return Error(p_[pos_] == ')' ? "unmatched ')'" : "unexpected character");
    return e;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("regex: ", what, " at offset ", pos_));
  }
  bool AtEnd() const { return pos_ >= p_.size(); }
  // `$` as the last character ends the pattern.
  bool AtDollarEnd() const { return pos_ + 1 == p_.size() && p_[pos_] == '$' && depth_ == 0; }

  ExprPtr Class(const CodePointSet& set) const {
    return output_ == RegexOutput::kRaw ? Utf8Class(set) : JsonContentClass(set);
  }

  absl::Status Alternation(ExprPtr* out) {
    std::vector<ExprPtr> options;
    while (true) {
      ExprPtr seq;
      if (absl::Status s = Sequence(&seq); !s.ok()) return s;
      options.push_back(seq);
      if (AtEnd() || p_[pos_] != '|') break;
      ++pos_;
    }
    *out = Alt(std::move(options));
    return absl::OkStatus();
  }

  absl::Status Sequence(ExprPtr* out) {
    std::vector<ExprPtr> parts;
    while (!AtEnd() && p_[pos_] != '|' && p_[pos_] != ')') {
      if (AtDollarEnd()) {
        ++pos_;
        break;
      }
      ExprPtr atom;
      if (absl::Status s = Atom(&atom); !s.ok()) return s;
      if (absl::Status s = Quantifier(&atom); !s.ok()) return s;
      parts.push_back(atom);
    }
    *out = Seq(std::move(parts));
    return absl::OkStatus();
  }

  // Reads {n}, {n,}, {n,m} at pos_; false (pos_ unchanged) if it is not one.
  bool Braces(int32_t* min, int32_t* max) {
    size_t p = pos_ + 1;
    auto number = [&](int64_t* v) {
      size_t begin = p;
      *v = 0;
      while (p < p_.size() && p_[p] >= '0' && p_[p] <= '9') {
        *v = std::min<int64_t>(*v * 10 + (p_[p] - '0'), int64_t{1} << 40);
        ++p;
      }
      return p > begin;
    };
    int64_t lo = 0, hi = 0;
    if (!number(&lo)) return false;
    hi = lo;
    if (p < p_.size() && p_[p] == ',') {
      ++p;
      if (!number(&hi)) hi = -1;
    }
    if (p >= p_.size() || p_[p] != '}') return false;
    pos_ = p + 1;
    *min = static_cast<int32_t>(std::min<int64_t>(lo, kMaxRepeat + 1));
    *max = hi < 0 ? -1 : static_cast<int32_t>(std::min<int64_t>(hi, kMaxRepeat + 1));
    return true;
  }

  absl::Status Quantifier(ExprPtr* atom) {
    while (!AtEnd()) {
      char c = p_[pos_];
      int32_t min = 0, max = 0;
      size_t at = pos_;
      if (c == '*') {
        max = -1;
        ++pos_;
      } else if (c == '+') {
        min = 1;
        max = -1;
        ++pos_;
      } else if (c == '?') {
        max = 1;
        ++pos_;
      } else if (c == '{' && Braces(&min, &max)) {
        if (min > kMaxRepeat || max > kMaxRepeat) {
          pos_ = at;
          return Error(absl::StrCat("repetition count above ", kMaxRepeat));
        }
        if (max >= 0 && max < min) {
          pos_ = at;
          return Error("repetition {n,m} with m < n");
        }
      } else {
        return absl::OkStatus();
      }
      if (!AtEnd() && p_[pos_] == '?') ++pos_;  // lazy: the same language
      if (!AtEnd() && (p_[pos_] == '*' || p_[pos_] == '+' || p_[pos_] == '?')) {
        return Error("nothing to repeat");
      }
      *atom = Repeat(*atom, min, max);
    }
    return absl::OkStatus();
  }

  absl::Status Atom(ExprPtr* out) {
    char c = p_[pos_];
    switch (c) {
      case '(': {
        size_t open = pos_;
        ++pos_;
        if (!AtEnd() && p_[pos_] == '?') {
          if (pos_ + 1 < p_.size() && p_[pos_ + 1] == ':') {
            pos_ += 2;
          } else if (pos_ + 2 < p_.size() && (p_[pos_ + 1] == '<' || p_[pos_ + 1] == 'P') &&
                     p_[pos_ + 1 + (p_[pos_ + 1] == 'P')] == '<' && p_[pos_ + 2] != '=' && p_[pos_ + 2] != '!') {
            size_t close = p_.find('>', pos_);
            if (close == absl::string_view::npos) return Error("unterminated group name");
            pos_ = close + 1;
          } else {
            return Error("unsupported group (lookaround or flags)");
          }
        }
        ++depth_;
        if (absl::Status s = Alternation(out); !s.ok()) return s;
        --depth_;
        if (AtEnd() || p_[pos_] != ')') {
          pos_ = open;
          return Error("unclosed '('");
        }
        ++pos_;
        return absl::OkStatus();
      }
      case '[': {
        CodePointSet set;
        if (absl::Status s = BracketClass(&set); !s.ok()) return s;
        *out = Class(set);
        return absl::OkStatus();
      }
      case '.':
        ++pos_;
        *out = Class(AnyButLineTerminators());
        return absl::OkStatus();
      case '*':
      case '+':
      case '?':
        return Error("nothing to repeat");
      case '{': {
        int32_t min, max;
        size_t at = pos_;
        if (Braces(&min, &max)) {
          pos_ = at;
          return Error("nothing to repeat");
        }
        break;
      }
      case '^':
      case '$':
        return Error("anchors are supported only at the start and end of the pattern");
      case '\\': {
        CodePointSet set;
        if (absl::Status s = Escape(/*in_class=*/false, &set); !s.ok()) return s;
        *out = Class(set);
        return absl::OkStatus();
      }
      default:
        break;
    }
    char32_t cp = 0;
    if (absl::Status s = ReadLiteral(&cp); !s.ok()) return s;
    *out = Class(CodePointSet::Range(cp, cp));
    return absl::OkStatus();
  }

  absl::Status ReadLiteral(char32_t* cp) {
    int n = text::Utf8SequenceLength(p_, pos_);
    if (n <= 0) return Error("invalid UTF-8");
    *cp = text::NextCodePoint(p_, &pos_);
    return absl::OkStatus();
  }

  absl::Status Hex(int digits, char32_t* value) {
    *value = 0;
    for (int i = 0; i < digits; ++i) {
      if (AtEnd() || !std::isxdigit(static_cast<unsigned char>(p_[pos_]))) return Error("bad hex escape");
      char h = p_[pos_++];
      *value = *value * 16 + (h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
    }
    return absl::OkStatus();
  }

  // At a backslash: the set the escape stands for.
  absl::Status Escape(bool in_class, CodePointSet* set) {
    size_t at = pos_;
    ++pos_;
    if (AtEnd()) return Error("trailing backslash");
    char c = p_[pos_++];
    char32_t v = 0;
    switch (c) {
      case 'd': *set = Digits(); return absl::OkStatus();
      case 'D': *set = Digits().Complement(); return absl::OkStatus();
      case 'w': *set = Word(); return absl::OkStatus();
      case 'W': *set = Word().Complement(); return absl::OkStatus();
      case 's': *set = Space(); return absl::OkStatus();
      case 'S': *set = Space().Complement(); return absl::OkStatus();
      case 't': v = '\t'; break;
      case 'n': v = '\n'; break;
      case 'r': v = '\r'; break;
      case 'f': v = '\f'; break;
      case 'v': v = '\v'; break;
      case '0': v = 0; break;
      case 'x':
        if (absl::Status s = Hex(2, &v); !s.ok()) return s;
        break;
      case 'u':
        if (!AtEnd() && p_[pos_] == '{') {
          ++pos_;
          size_t close = p_.find('}', pos_);
          if (close == absl::string_view::npos || close == pos_ || close - pos_ > 6) return Error("bad \\u{...}");
          if (absl::Status s = Hex(static_cast<int>(close - pos_), &v); !s.ok()) return s;
          ++pos_;
          if (v > kMaxCodePoint) return Error("code point out of range");
        } else if (absl::Status s = Hex(4, &v); !s.ok()) {
          return s;
        }
        break;
      case 'b':
        if (in_class) {
          v = '\b';
          break;
        }
        pos_ = at;
        return Error("unsupported escape \\b (word boundary)");
      default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '1' && c <= '9')) {
          pos_ = at;
          return Error(absl::StrCat("unsupported escape \\", std::string(1, c)));
        }
        --pos_;
        if (absl::Status s = ReadLiteral(&v); !s.ok()) return s;
        break;
    }
    *set = CodePointSet::Range(v, v);
    return absl::OkStatus();
  }

  absl::Status BracketClass(CodePointSet* out) {
    size_t open = pos_;
    ++pos_;
    bool negate = !AtEnd() && p_[pos_] == '^';
    if (negate) ++pos_;
    CodePointSet set;
    while (true) {
      if (AtEnd()) {
        pos_ = open;
        return Error("unclosed '['");
      }
      if (p_[pos_] == ']') {
        ++pos_;
        break;
      }
      CodePointSet lo_set;
      if (absl::Status s = ClassAtom(&lo_set); !s.ok()) return s;
      bool single = lo_set.ranges().size() == 1 && lo_set.ranges()[0].first == lo_set.ranges()[0].second;
      if (single && pos_ + 1 < p_.size() && p_[pos_] == '-' && p_[pos_ + 1] != ']') {
        ++pos_;
        CodePointSet hi_set;
        size_t at = pos_;
        if (absl::Status s = ClassAtom(&hi_set); !s.ok()) return s;
        bool hi_single = hi_set.ranges().size() == 1 && hi_set.ranges()[0].first == hi_set.ranges()[0].second;
        char32_t lo = lo_set.ranges()[0].first;
        if (!hi_single || hi_set.ranges()[0].first < lo) {
          pos_ = at;
          return Error("bad character range");
        }
        set.Add(lo, hi_set.ranges()[0].first);
        continue;
      }
      set.AddSet(lo_set);
    }
    *out = negate ? set.Complement() : set;
    return absl::OkStatus();
  }

  absl::Status ClassAtom(CodePointSet* set) {
    if (p_[pos_] == '\\') return Escape(/*in_class=*/true, set);
    char32_t cp = 0;
    if (absl::Status s = ReadLiteral(&cp); !s.ok()) return s;
    *set = CodePointSet::Range(cp, cp);
    return absl::OkStatus();
  }

  absl::string_view p_;
  RegexOutput output_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

ExprPtr JsonContentClass(const CodePointSet& set) {
  CodePointSet special;
  special.Add(0, 0x1F);
  special.Add('"', '"');
  special.Add('\\', '\\');
  CodePointSet plain = special.Complement();
  std::vector<ExprPtr> options;
  CodePointSet kept = set.Intersect(plain);
  if (!kept.empty()) options.push_back(Utf8Class(kept));
  for (const auto& [lo, hi] : special.ranges()) {
    for (char32_t c = lo; c <= hi; ++c) {
      if (!set.Contains(c)) continue;
      switch (c) {
        case '"': options.push_back(Literal("\\\"")); break;
        case '\\': options.push_back(Literal("\\\\")); break;
        case '\b': options.push_back(Literal("\\b")); break;
        case '\f': options.push_back(Literal("\\f")); break;
        case '\n': options.push_back(Literal("\\n")); break;
        case '\r': options.push_back(Literal("\\r")); break;
        case '\t': options.push_back(Literal("\\t")); break;
        default: options.push_back(Literal(absl::StrFormat("\\u%04x", static_cast<uint32_t>(c)))); break;
      }
    }
  }
  return Alt(std::move(options));
}

absl::StatusOr<ExprPtr> RegexToExpr(absl::string_view pattern, RegexOutput output) {
  return Parser(pattern, output).Parse();
}

absl::Status RegexToGrammar(absl::string_view pattern, GrammarIr* ir) {
  absl::StatusOr<ExprPtr> e = RegexToExpr(pattern, RegexOutput::kRaw);
  if (!e.ok()) return e.status();
  ir->Define(ir->AddRule("regex"), *e);
  return absl::OkStatus();
}

}  // namespace gantry::guided::internal
