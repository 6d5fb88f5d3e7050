// Grammar IR -> per-rule DFAs (automaton.h): Thompson NFA, subset
// construction over byte classes, then the whole-grammar checks (rules that
// can complete, left recursion) and pruning of states that cannot complete.
#include "text/guided/automaton.h"

#include <algorithm>
#include <map>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace gantry::guided::internal {
namespace {

// DFA states a grammar may have in all its rules. Subset construction can
// grow exponentially with the pattern (".*a.{30}" needs 2^30 states), so a
// client's regex or schema could otherwise hold a server thread for
// minutes and its memory without bound; this many states build in well
// under a second, and real schemas stay far below it.
constexpr int64_t kMaxDfaStates = 100000;

class Nfa {
 public:
  struct State {
    std::vector<int32_t> eps;
    std::vector<std::pair<int32_t, int32_t>> bytes;  // (index into sets_, target)
    std::vector<std::pair<int32_t, int32_t>> refs;   // (rule, target)
  };

  int32_t NewState() {
    states_.emplace_back();
    return static_cast<int32_t>(states_.size()) - 1;
  }

  // Adds paths from `from` to `to` for `e`. Never adds an edge into `from` or
  // out of `to`, so alternatives may share both ends without mixing.
  void Build(const Expr& e, int32_t from, int32_t to) {
    switch (e.kind) {
      case Expr::Kind::kEmpty:
        states_[from].eps.push_back(to);
        return;
      case Expr::Kind::kBytes: {
        sets_.push_back(e.bytes);
        states_[from].bytes.emplace_back(static_cast<int32_t>(sets_.size()) - 1, to);
        return;
      }
      case Expr::Kind::kRef:
        states_[from].refs.emplace_back(e.rule, to);
        return;
      case Expr::Kind::kSeq: {
        int32_t cur = from;
        for (size_t i = 0; i < e.children.size(); ++i) {
          int32_t next = i + 1 == e.children.size() ? to : NewState();
          Build(*e.children[i], cur, next);
          cur = next;
        }
        return;
      }
      case Expr::Kind::kAlt:
        for (const ExprPtr& c : e.children) Build(*c, from, to);
        return;
      case Expr::Kind::kRepeat: {
        const Expr& body = *e.children[0];
        int32_t cur = from;
        for (int32_t i = 0; i < e.min; ++i) {
          int32_t next = NewState();
          Build(body, cur, next);
          cur = next;
        }
        if (e.max < 0) {
          int32_t loop = NewState();
          states_[cur].eps.push_back(loop);
          Build(body, loop, loop);
          states_[loop].eps.push_back(to);
          return;
        }
        for (int32_t i = e.min; i < e.max; ++i) {
          states_[cur].eps.push_back(to);
          int32_t next = NewState();
          Build(body, cur, next);
          cur = next;
        }
        states_[cur].eps.push_back(to);
        return;
      }
    }
  }

  std::vector<State> states_;
  std::vector<ByteSet> sets_;
};

void Closure(const Nfa& nfa, std::vector<int32_t>* set, std::vector<uint8_t>* mark) {
  std::vector<int32_t> stack(set->begin(), set->end());
  for (int32_t s : *set) (*mark)[s] = 1;
  while (!stack.empty()) {
    int32_t s = stack.back();
    stack.pop_back();
    for (int32_t t : nfa.states_[s].eps) {
      if (!(*mark)[t]) {
        (*mark)[t] = 1;
        set->push_back(t);
        stack.push_back(t);
      }
    }
  }
  for (int32_t s : *set) (*mark)[s] = 0;
  std::sort(set->begin(), set->end());
}

// `states_left`: DFA states the grammar may still add; INVALID_ARGUMENT
// (naming the limit and the rule) when this rule would take more.
absl::StatusOr<RuleDfa> Determinize(const std::string& name, const Expr& body, int64_t* states_left) {
  Nfa nfa;
  int32_t start = nfa.NewState(), accept = nfa.NewState();
  nfa.Build(body, start, accept);

  RuleDfa dfa;
  dfa.name = name;
  // Byte classes: refine "all bytes alike" by every byte set on an edge.
  std::array<int32_t, 256> cls{};
  int32_t num_classes = 1;
  for (const ByteSet& set : nfa.sets_) {
    std::map<std::pair<int32_t, bool>, int32_t> split;
    for (int b = 0; b < 256; ++b) {
      auto it = split.emplace(std::make_pair(cls[b], set.test(b)), static_cast<int32_t>(split.size())).first;
      cls[b] = it->second;
    }
    num_classes = static_cast<int32_t>(split.size());
  }
  std::vector<int> representative(num_classes, -1);
  for (int b = 0; b < 256; ++b) {
    dfa.byte_class[b] = static_cast<uint8_t>(cls[b]);
    if (representative[cls[b]] < 0) representative[cls[b]] = b;
  }
  dfa.num_classes = num_classes;

  std::vector<uint8_t> mark(nfa.states_.size(), 0);
  std::map<std::vector<int32_t>, int32_t> ids;
  std::vector<std::vector<int32_t>> sets;
  auto intern = [&](std::vector<int32_t> set) {
    Closure(nfa, &set, &mark);
    auto it = ids.find(set);
    if (it != ids.end()) return it->second;
    int32_t id = static_cast<int32_t>(sets.size());
    ids.emplace(set, id);
    sets.push_back(std::move(set));
    return id;
  };
  dfa.start = intern({start});
  dfa.ref_begin.push_back(0);
  for (size_t d = 0; d < sets.size(); ++d) {
    if (static_cast<int64_t>(sets.size()) > *states_left) {
      return absl::InvalidArgumentError(absl::StrCat("the grammar is too complex: its automaton needs more than ",
                                                     kMaxDfaStates, " states (rule \"", name,
                                                     "\"); simplify the pattern, e.g. bound a repeat after '.*'"));
    }
    std::vector<int32_t> set = sets[d];  // copy: `sets` grows below
    dfa.is_final.push_back(std::binary_search(set.begin(), set.end(), accept));
    bool consumes = false;
    for (int32_t c = 0; c < num_classes; ++c) {
      std::vector<int32_t> targets;
      for (int32_t s : set) {
        for (const auto& [set_index, target] : nfa.states_[s].bytes) {
          if (nfa.sets_[set_index].test(representative[c])) targets.push_back(target);
        }
      }
      if (targets.empty()) {
        dfa.next.push_back(-1);
      } else {
        std::sort(targets.begin(), targets.end());
        targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
        dfa.next.push_back(intern(std::move(targets)));
        consumes = true;
      }
    }
    dfa.consumes.push_back(consumes);
    std::map<int32_t, std::vector<int32_t>> by_rule;
    for (int32_t s : set) {
      for (const auto& [rule, target] : nfa.states_[s].refs) by_rule[rule].push_back(target);
    }
    for (auto& [rule, targets] : by_rule) dfa.refs.emplace_back(rule, intern(std::move(targets)));
    dfa.ref_begin.push_back(static_cast<int32_t>(dfa.refs.size()));
  }
  dfa.num_states = static_cast<int32_t>(sets.size());
  dfa.has_refs = !dfa.refs.empty();
  *states_left -= dfa.num_states;
  return dfa;
}

// Whether a final state is reachable from the start, following byte edges
// and calls for which `follow_call(rule)` holds (`bytes`: byte edges too).
template <typename FollowCall>
bool CanFinish(const RuleDfa& dfa, bool bytes, FollowCall follow_call, std::vector<int32_t>* reached = nullptr) {
  std::vector<uint8_t> seen(dfa.num_states, 0);
  std::vector<int32_t> stack = {dfa.start};
  seen[dfa.start] = 1;
  bool finishes = false;
  while (!stack.empty()) {
    int32_t s = stack.back();
    stack.pop_back();
    if (reached) reached->push_back(s);
    if (dfa.is_final[s]) finishes = true;
    auto visit = [&](int32_t t) {
      if (t >= 0 && !seen[t]) {
        seen[t] = 1;
        stack.push_back(t);
      }
    };
    if (bytes) {
      for (int32_t c = 0; c < dfa.num_classes; ++c) visit(dfa.next[s * dfa.num_classes + c]);
    }
    for (int32_t i = dfa.ref_begin[s]; i < dfa.ref_begin[s + 1]; ++i) {
      if (follow_call(dfa.refs[i].first)) visit(dfa.refs[i].second);
    }
  }
  return finishes;
}

// Keeps the states reachable from the start that can still reach a final
// state, without calls to rules that never complete.
void Prune(RuleDfa* dfa, const std::vector<uint8_t>& productive) {
  int32_t n = dfa->num_states, k = dfa->num_classes;
  std::vector<std::vector<int32_t>> reverse(n);
  for (int32_t s = 0; s < n; ++s) {
    for (int32_t c = 0; c < k; ++c) {
      int32_t t = dfa->next[s * k + c];
      if (t >= 0) reverse[t].push_back(s);
    }
    for (int32_t i = dfa->ref_begin[s]; i < dfa->ref_begin[s + 1]; ++i) {
      if (productive[dfa->refs[i].first]) reverse[dfa->refs[i].second].push_back(s);
    }
  }
  std::vector<uint8_t> live(n, 0);
  std::vector<int32_t> stack;
  for (int32_t s = 0; s < n; ++s) {
    if (dfa->is_final[s]) {
      live[s] = 1;
      stack.push_back(s);
    }
  }
  while (!stack.empty()) {
    int32_t s = stack.back();
    stack.pop_back();
    for (int32_t p : reverse[s]) {
      if (!live[p]) {
        live[p] = 1;
        stack.push_back(p);
      }
    }
  }
  std::vector<int32_t> reached;
  CanFinish(
      *dfa, true, [&](int32_t rule) { return productive[rule] != 0; }, &reached);
  std::vector<int32_t> remap(n, -1);
  std::sort(reached.begin(), reached.end());
  RuleDfa out;
  out.name = dfa->name;
  out.num_classes = k;
  out.byte_class = dfa->byte_class;
  for (int32_t s : reached) {
    if (live[s]) remap[s] = out.num_states++;
  }
  if (out.num_states == 0) {  // never completes; nothing calls it after pruning
    out.num_states = 1;
    out.next.assign(k, -1);
    out.is_final = {0};
    out.consumes = {0};
    out.ref_begin = {0, 0};
    *dfa = std::move(out);
    return;
  }
  out.start = remap[dfa->start];
  out.ref_begin.push_back(0);
  for (int32_t s : reached) {
    if (remap[s] < 0) continue;
    bool consumes = false;
    for (int32_t c = 0; c < k; ++c) {
      int32_t t = dfa->next[s * k + c];
      int32_t m = t >= 0 ? remap[t] : -1;
      out.next.push_back(m);
      consumes |= m >= 0;
    }
    out.is_final.push_back(dfa->is_final[s]);
    out.consumes.push_back(consumes);
    for (int32_t i = dfa->ref_begin[s]; i < dfa->ref_begin[s + 1]; ++i) {
      auto [rule, target] = dfa->refs[i];
      if (productive[rule] && remap[target] >= 0) out.refs.emplace_back(rule, remap[target]);
    }
    out.ref_begin.push_back(static_cast<int32_t>(out.refs.size()));
  }
  out.has_refs = !out.refs.empty();
  *dfa = std::move(out);
}

// The rules that can complete (bytes: reading bytes; else without reading
// any: nullable), as a fixpoint over the calls.
std::vector<uint8_t> RulesThatFinish(const Automaton& a, bool bytes) {
  std::vector<uint8_t> finishes(a.rules.size(), 0);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t r = 0; r < a.rules.size(); ++r) {
      if (!finishes[r] && CanFinish(a.rules[r], bytes, [&](int32_t q) { return finishes[q] != 0; })) {
        finishes[r] = changed = true;
      }
    }
  }
  return finishes;
}

}  // namespace

absl::StatusOr<Automaton> BuildAutomaton(const GrammarIr& ir) {
  Automaton a;
  int32_t n = ir.size();
  int64_t states_left = kMaxDfaStates;
  for (int32_t r = 0; r < n; ++r) {
    absl::StatusOr<RuleDfa> dfa = Determinize(ir.name(r), *ir.body(r), &states_left);
    if (!dfa.ok()) return dfa.status();
    a.rules.push_back(*std::move(dfa));
  }

  std::vector<uint8_t> productive = RulesThatFinish(a, /*bytes=*/true);
  if (!productive[0]) return absl::InvalidArgumentError("the grammar matches no text (e.g. required recursion)");
  for (RuleDfa& dfa : a.rules) Prune(&dfa, productive);

  std::vector<uint8_t> nullable = RulesThatFinish(a, /*bytes=*/false);
  // Left recursion: a rule that can call itself before reading a byte.
  std::vector<std::vector<int32_t>> left_calls(n);
  for (int32_t r = 0; r < n; ++r) {
    const RuleDfa& dfa = a.rules[r];
    std::vector<int32_t> reached;
    CanFinish(
        dfa, false, [&](int32_t q) { return nullable[q] != 0; }, &reached);
    for (int32_t s : reached) {
      for (int32_t i = dfa.ref_begin[s]; i < dfa.ref_begin[s + 1]; ++i) left_calls[r].push_back(dfa.refs[i].first);
    }
  }
  std::vector<uint8_t> color(n, 0);  // 0 new, 1 on the path, 2 done
  for (int32_t root = 0; root < n; ++root) {
    if (color[root]) continue;
    std::vector<std::pair<int32_t, size_t>> stack = {{root, 0}};
    color[root] = 1;
    while (!stack.empty()) {
      auto& [r, i] = stack.back();
      if (i == left_calls[r].size()) {
        color[r] = 2;
        stack.pop_back();
        continue;
      }
      int32_t q = left_calls[r][i++];
      if (color[q] == 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("the grammar is left-recursive: rule \"", ir.name(q), "\" can reach itself without output"));
      }
      if (color[q] == 0) {
        color[q] = 1;
        stack.emplace_back(q, 0);
      }
    }
  }
  a.callers.resize(n);
  for (int32_t r = 0; r < n; ++r) {
    for (const auto& [rule, target] : a.rules[r].refs) a.callers[rule].emplace_back(r, target);
  }
  for (auto& c : a.callers) {
    std::sort(c.begin(), c.end());
    c.erase(std::unique(c.begin(), c.end()), c.end());
  }
  return a;
}

std::vector<int32_t> EquivalenceClasses(const RuleDfa& dfa, int32_t max_rounds, int32_t* num_classes) {
  int32_t n = dfa.num_states, k = dfa.num_classes;
  std::vector<int32_t> cls(n);
  for (int32_t s = 0; s < n; ++s) cls[s] = dfa.is_final[s];
  int32_t count = -1;
  std::vector<int32_t> sig;
  for (int32_t round = 0; max_rounds < 0 || round <= max_rounds; ++round) {
    absl::flat_hash_map<std::vector<int32_t>, int32_t> ids;
    std::vector<int32_t> next_cls(n);
    for (int32_t s = 0; s < n; ++s) {
      sig.clear();
      sig.push_back(cls[s]);
      if (round > 0) {
        for (int32_t c = 0; c < k; ++c) {
          int32_t t = dfa.next[s * k + c];
          sig.push_back(t < 0 ? -1 : cls[t]);
        }
        for (int32_t i = dfa.ref_begin[s]; i < dfa.ref_begin[s + 1]; ++i) {
          sig.push_back(dfa.refs[i].first);
          sig.push_back(cls[dfa.refs[i].second]);
        }
      }
      next_cls[s] = ids.emplace(sig, static_cast<int32_t>(ids.size())).first->second;
    }
    cls = std::move(next_cls);
    bool stable = static_cast<int32_t>(ids.size()) == count;
    count = static_cast<int32_t>(ids.size());
    if (stable) break;
  }
  *num_classes = count;
  return cls;
}

}  // namespace gantry::guided::internal
