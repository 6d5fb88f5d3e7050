// Constructors for the grammar IR (grammar_ir.h); they flatten trivial nesting
// so the compiled automata stay small.
#include "text/guided/grammar_ir.h"

#include <utility>

namespace gantry::guided::internal {

namespace {
ExprPtr Make(Expr e) { return std::make_shared<const Expr>(std::move(e)); }
}  // namespace

ExprPtr Empty() { return Make(Expr{}); }

ExprPtr Nothing() {
  Expr e;
  e.kind = Expr::Kind::kAlt;
  return Make(std::move(e));
}

ExprPtr Bytes(const ByteSet& set) {
  if (set.none()) return Nothing();
  Expr e;
  e.kind = Expr::Kind::kBytes;
  e.bytes = set;
  return Make(std::move(e));
}

ExprPtr ByteRange(uint8_t lo, uint8_t hi) {
  ByteSet set;
  for (int b = lo; b <= hi; ++b) set.set(b);
  return Bytes(set);
}

ExprPtr Literal(absl::string_view bytes) {
  std::vector<ExprPtr> parts;
  parts.reserve(bytes.size());
  for (unsigned char c : bytes) parts.push_back(ByteRange(c, c));
  return Seq(std::move(parts));
}

ExprPtr Seq(std::vector<ExprPtr> parts) {
  Expr e;
  e.kind = Expr::Kind::kSeq;
  for (ExprPtr& p : parts) {
    if (p->kind == Expr::Kind::kEmpty) continue;
    if (p->kind == Expr::Kind::kSeq) {
      e.children.insert(e.children.end(), p->children.begin(), p->children.end());
    } else {
      e.children.push_back(std::move(p));
    }
  }
  if (e.children.empty()) return Empty();
  if (e.children.size() == 1) return e.children[0];
  return Make(std::move(e));
}

ExprPtr Alt(std::vector<ExprPtr> options) {
  if (options.size() == 1) return options[0];
  Expr e;
  e.kind = Expr::Kind::kAlt;
  for (ExprPtr& o : options) {
    if (o->kind == Expr::Kind::kAlt) {
      e.children.insert(e.children.end(), o->children.begin(), o->children.end());
    } else {
      e.children.push_back(std::move(o));
    }
  }
  if (e.children.size() == 1) return e.children[0];
  return Make(std::move(e));
}

ExprPtr Ref(int32_t rule) {
  Expr e;
  e.kind = Expr::Kind::kRef;
  e.rule = rule;
  return Make(std::move(e));
}

ExprPtr Repeat(ExprPtr body, int32_t min, int32_t max) {
  if (max == 0) return Empty();
  if (min == 1 && max == 1) return body;
  Expr e;
  e.kind = Expr::Kind::kRepeat;
  e.children.push_back(std::move(body));
  e.min = min;
  e.max = max;
  return Make(std::move(e));
}

ExprPtr Optional(ExprPtr body) { return Repeat(std::move(body), 0, 1); }
ExprPtr Star(ExprPtr body) { return Repeat(std::move(body), 0, -1); }

int32_t GrammarIr::AddRule(std::string name) {
  names_.push_back(std::move(name));
  bodies_.push_back(Nothing());
  return static_cast<int32_t>(names_.size()) - 1;
}

}  // namespace gantry::guided::internal
