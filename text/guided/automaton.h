// The byte-level pushdown automaton of a compiled grammar: one DFA per rule,
// whose edges read a byte or call another rule (push; the callee's final
// states pop back). This is xgrammar's and llguidance's shape of the problem;
// we write it ourselves because neither library (nor any other C++ grammar
// engine) can be installed here: only Debian 12 packages and npm are.
#ifndef GANTRY_TEXT_GUIDED_AUTOMATON_H_
#define GANTRY_TEXT_GUIDED_AUTOMATON_H_

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "text/guided/grammar_ir.h"

namespace gantry::guided::internal {

struct RuleDfa {
  std::string name;
  int32_t start = 0;
  int32_t num_states = 0;
  int32_t num_classes = 0;
  std::array<uint8_t, 256> byte_class{};  // bytes that behave alike share a class
  std::vector<int32_t> next;              // [state * num_classes + class] -> state, -1 = reject
  std::vector<uint8_t> is_final;
  std::vector<uint8_t> consumes;          // the state has a byte edge
  std::vector<int32_t> ref_begin;         // refs of state s: [ref_begin[s], ref_begin[s + 1])
  std::vector<std::pair<int32_t, int32_t>> refs;  // (called rule, state after the call)
  bool has_refs = false;

  int32_t Next(int32_t state, uint8_t byte) const { return next[state * num_classes + byte_class[byte]]; }
};

struct Automaton {
  std::vector<RuleDfa> rules;
  int32_t root = 0;
  // callers[r]: every (rule, state after the call) that calls r.
  std::vector<std::vector<std::pair<int32_t, int32_t>>> callers;
};

// Compiles every rule to a DFA, drops what can never complete, and refuses
// grammars that match nothing or recurse without reading a byte (left
// recursion), which a pushdown automaton over bytes could not run.
absl::StatusOr<Automaton> BuildAutomaton(const GrammarIr& ir);

// Moore partition refinement: per state, its class when states are told
// apart by at most `max_rounds` symbols (bytes or calls); -1 = unbounded,
// i.e. true equivalence. Bounded classes let states that differ only beyond
// the longest token share one token mask.
std::vector<int32_t> EquivalenceClasses(const RuleDfa& dfa, int32_t max_rounds, int32_t* num_classes);

}  // namespace gantry::guided::internal

#endif  // GANTRY_TEXT_GUIDED_AUTOMATON_H_
