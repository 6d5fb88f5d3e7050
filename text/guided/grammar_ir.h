// The guided decoder's grammar IR: rules whose bodies are regular expressions
// over bytes that may reference other rules (a context-free grammar in
// extended BNF). The front ends (JSON Schema, any-JSON, regex, choice) build
// it; automaton.cc compiles each rule to a DFA. Our own code: no packaged C++
// grammar engine is installable here (see automaton.h).
#ifndef GANTRY_TEXT_GUIDED_GRAMMAR_IR_H_
#define GANTRY_TEXT_GUIDED_GRAMMAR_IR_H_

#include <bitset>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace gantry::guided::internal {

using ByteSet = std::bitset<256>;

struct Expr;
// Expressions are immutable and shared: a sub-expression used twice is
// instantiated twice when compiled, so front ends share freely.
using ExprPtr = std::shared_ptr<const Expr>;

struct Expr {
  enum class Kind { kEmpty, kBytes, kSeq, kAlt, kRef, kRepeat };
  Kind kind = Kind::kEmpty;
  ByteSet bytes;                  // kBytes: one byte out of this set
  std::vector<ExprPtr> children;  // kSeq, kAlt (an empty kAlt matches nothing), kRepeat (one)
  int32_t rule = -1;              // kRef
  int32_t min = 0, max = 0;       // kRepeat; max < 0 is unbounded
};

ExprPtr Empty();
ExprPtr Nothing();  // matches no string at all
ExprPtr Bytes(const ByteSet& set);
ExprPtr ByteRange(uint8_t lo, uint8_t hi);
ExprPtr Literal(absl::string_view bytes);
ExprPtr Seq(std::vector<ExprPtr> parts);
ExprPtr Alt(std::vector<ExprPtr> options);
ExprPtr Ref(int32_t rule);
ExprPtr Repeat(ExprPtr body, int32_t min, int32_t max);
ExprPtr Optional(ExprPtr body);
ExprPtr Star(ExprPtr body);

// Rule 0 is the start rule.
class GrammarIr {
 public:
  // Declares a rule (so bodies may reference it before it is defined).
  int32_t AddRule(std::string name);
  void Define(int32_t rule, ExprPtr body) { bodies_[rule] = std::move(body); }
  int32_t size() const { return static_cast<int32_t>(names_.size()); }
  const std::string& name(int32_t rule) const { return names_[rule]; }
  const ExprPtr& body(int32_t rule) const { return bodies_[rule]; }

 private:
  std::vector<std::string> names_;
  std::vector<ExprPtr> bodies_;
};

}  // namespace gantry::guided::internal

#endif  // GANTRY_TEXT_GUIDED_GRAMMAR_IR_H_
