// Closure and one-byte steps of the pushdown automaton (pda.h).
#include "text/guided/pda.h"

namespace gantry::guided::internal {

Stepper::Stepper(const Automaton& automaton, int32_t max_context_levels, int32_t max_token_length)
    : a_(automaton), max_context_levels_(max_context_levels), levels_(max_token_length + 1) {}

void Stepper::Expand(const Frame& from, std::vector<Frame>* arena, std::vector<Frame>* tops, StepFlags* flags) {
  work_.clear();
  work_.push_back(from);
  while (!work_.empty()) {
    Frame g = work_.back();
    work_.pop_back();
    if (Seen(g)) continue;
    seen_.push_back(g);
    const RuleDfa& dfa = a_.rules[g.rule];
    if (dfa.consumes[g.state]) tops->push_back(g);
    for (int32_t i = dfa.ref_begin[g.state]; i < dfa.ref_begin[g.state + 1]; ++i) {
      const auto& [callee, after] = dfa.refs[i];
      arena->push_back(Frame{g.rule, after, g.parent, g.outside});
      work_.push_back(Frame{callee, a_.rules[callee].start, static_cast<int32_t>(arena->size()) - 1, g.outside});
    }
    if (!dfa.is_final[g.state]) continue;
    if (g.parent >= 0) {
      work_.push_back((*arena)[g.parent]);
    } else if (g.parent == kEndOfText) {
      flags->accepting = true;
    } else {
      int32_t level = -2 - g.parent;
      if (level >= max_context_levels_) {
        flags->escaped = true;
        continue;
      }
      for (const auto& [caller, after] : a_.callers[g.rule]) {
        work_.push_back(Frame{caller, after, ContextParent(level + 1), true});
      }
    }
  }
}

void Stepper::Step(const std::vector<Frame>& tops, uint8_t byte, std::vector<Frame>* arena, std::vector<Frame>* out,
                   StepFlags* flags, bool* inside, bool* outside) {
  seen_.clear();
  *inside = *outside = false;
  for (const Frame& f : tops) {
    const RuleDfa& dfa = a_.rules[f.rule];
    int32_t next = dfa.Next(f.state, byte);
    if (next < 0) continue;
    (f.outside ? *outside : *inside) = true;
    Frame moved{f.rule, next, f.parent, f.outside};
    if (!dfa.is_final[next] && dfa.ref_begin[next] == dfa.ref_begin[next + 1]) {
      // The common case (inside a string, a number, a literal): no call or
      // return to expand.
      if (!Seen(moved)) {
        seen_.push_back(moved);
        out->push_back(moved);
      }
      continue;
    }
    Expand(moved, arena, out, flags);
  }
}

}  // namespace gantry::guided::internal
