// Sets of Unicode code points as byte-level grammar expressions: a class such
// as [^a-z] or `.` becomes the alternatives of UTF-8 byte sequences that
// encode exactly its code points (the range splitting RE2 and Rust's
// regex-syntax do), so the automata work on bytes, as tokens do. Our own
// code: the grammar engine itself is (automaton.h says why).
#ifndef GANTRY_TEXT_GUIDED_UTF8_RANGES_H_
#define GANTRY_TEXT_GUIDED_UTF8_RANGES_H_

#include <utility>
#include <vector>

#include "text/guided/grammar_ir.h"

namespace gantry::guided::internal {

inline constexpr char32_t kMaxCodePoint = 0x10FFFF;

// Sorted, disjoint, non-adjacent inclusive ranges.
class CodePointSet {
 public:
  CodePointSet() = default;
  static CodePointSet Range(char32_t lo, char32_t hi);
  void Add(char32_t lo, char32_t hi);
  void AddSet(const CodePointSet& other);
  // Every scalar value (surrogates are not encodable in UTF-8) not in this set.
  CodePointSet Complement() const;
  CodePointSet Intersect(const CodePointSet& other) const;
  bool Contains(char32_t c) const;
  bool empty() const { return ranges_.empty(); }
  const std::vector<std::pair<char32_t, char32_t>>& ranges() const { return ranges_; }

 private:
  void Normalize();
  std::vector<std::pair<char32_t, char32_t>> ranges_;
};

// One code point of the set, as UTF-8 bytes (surrogates excluded).
ExprPtr Utf8Class(const CodePointSet& set);

}  // namespace gantry::guided::internal

#endif  // GANTRY_TEXT_GUIDED_UTF8_RANGES_H_
