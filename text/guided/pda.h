// Running the pushdown automaton (automaton.h) over bytes: frames on a
// persistent stack (each frame points at the frame it returns to, so stacks
// that share a bottom share it in memory), the closure over calls and
// returns, one-byte steps, and the walk of many tokens at once that shares
// the work of common prefixes. The same code computes the compile-time token
// mask cache (with the caller unknown) and checks the few uncertain tokens
// against a sequence's real stack at run time. Our own code (automaton.h
// says why).
#ifndef GANTRY_TEXT_GUIDED_PDA_H_
#define GANTRY_TEXT_GUIDED_PDA_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "text/guided/automaton.h"
#include "text/guided/vocabulary.h"

namespace gantry::guided::internal {

// Rule `rule` in DFA state `state`, returning to frame `parent` (an index
// into the arena) or to a sentinel below.
struct Frame {
  int32_t rule;
  int32_t state;
  int32_t parent;
  bool outside;  // reached by leaving the rule a cached mask is computed for
};

// The root's parent: popping it means the text is a complete match.
inline constexpr int32_t kEndOfText = -1;
// Compile time only: the caller is unknown; popping goes on in every caller
// of the rule (the "context expansion" that rejects most tokens crossing a
// rule's end already at compile time), `level` callers up.
inline constexpr int32_t ContextParent(int32_t level) { return -2 - level; }

struct StepFlags {
  bool accepting = false;  // a pop reached kEndOfText
  bool escaped = false;    // a pop went past the known callers
};

enum class Outcome : uint8_t { kRejected, kAccepted, kUncertain };

class Stepper {
 public:
  Stepper(const Automaton& automaton, int32_t max_context_levels, int32_t max_token_length);

  // Adds to *tops every byte-reading frame reachable from `from` without
  // reading a byte (calls push, final states pop).
  void Expand(const Frame& from, std::vector<Frame>* arena, std::vector<Frame>* tops, StepFlags* flags);
  // Reads `byte` in every frame of `tops`, then expands. *inside / *outside:
  // whether some frame inside / outside the start rule read it.
  void Step(const std::vector<Frame>& tops, uint8_t byte, std::vector<Frame>* arena, std::vector<Frame>* out,
            StepFlags* flags, bool* inside, bool* outside);

  // Walks the tokens of `source` (trie order) from `start`: visit(begin, end,
  // outcome) for ranges of source indices. Accepted: some path reads every
  // byte without leaving the start frame's rule; uncertain: only paths that
  // left it (or escaped past the known callers) survive; rejected: none.
  // At run time (real parents) accepted means allowed.
  template <typename Source, typename Visit>
  void Walk(const Source& source, const Frame& start, std::vector<Frame>* arena, Visit visit);

  const Automaton& automaton() const { return a_; }

 private:
  struct Level {
    std::vector<Frame> tops;
    size_t arena_size = 0;
    bool inherited_escape = false;  // an escape at a shorter prefix
    bool escaped = false;           // an escape in this level's expansion
    bool inside = false, outside = false;
  };

  bool Seen(const Frame& f) const {
    for (const Frame& s : seen_) {
      if (s.rule == f.rule && s.state == f.state && s.parent == f.parent) return true;
    }
    return false;
  }

  const Automaton& a_;
  int32_t max_context_levels_;
  std::vector<Frame> seen_, work_;
  std::vector<Level> levels_;
};

// All sorted tokens of a vocabulary.
class TrieSource {
 public:
  explicit TrieSource(const Vocabulary& v) : v_(v) {}
  int32_t size() const { return v_.trie_size(); }
  absl::string_view bytes(int32_t i) const { return v_.sorted_bytes(i); }
  int32_t lcp(int32_t i) const { return v_.lcp(i); }
  int32_t Skip(int32_t i, int32_t depth) const { return v_.SkipPast(i, depth); }

 private:
  const Vocabulary& v_;
};

// A sorted subset of them (a cache entry's uncertain tokens).
class ListSource {
 public:
  ListSource(const Vocabulary& v, const std::vector<int32_t>& positions, const std::vector<uint16_t>& lcps)
      : v_(v), positions_(positions), lcps_(lcps) {}
  int32_t size() const { return static_cast<int32_t>(positions_.size()); }
  absl::string_view bytes(int32_t i) const { return v_.sorted_bytes(positions_[i]); }
  int32_t lcp(int32_t i) const { return lcps_[i]; }
  int32_t Skip(int32_t i, int32_t depth) const {
    int32_t j = i + 1;
    while (j < size() && lcps_[j] >= depth) ++j;
    return j;
  }

 private:
  const Vocabulary& v_;
  const std::vector<int32_t>& positions_;
  const std::vector<uint16_t>& lcps_;
};

template <typename Source, typename Visit>
void Stepper::Walk(const Source& source, const Frame& start, std::vector<Frame>* arena, Visit visit) {
  const int32_t n = source.size();
  Level& root = levels_[0];
  root.tops.assign(1, start);
  root.arena_size = arena->size();
  root.inherited_escape = root.escaped = root.inside = root.outside = false;
  int32_t computed = 0;  // levels_[0..computed] hold the current token's prefix
  int32_t i = 0;
  while (i < n) {
    absl::string_view bytes = source.bytes(i);
    const int32_t len = static_cast<int32_t>(bytes.size());
    int32_t d = std::min(computed, source.lcp(i));
    arena->resize(levels_[d].arena_size);
    bool skipped = false;
    while (d < len) {
      Level& here = levels_[d];
      bool escape = here.inherited_escape || here.escaped;
      if (here.tops.empty() && !escape) {  // no token continuing this prefix can pass
        int32_t j = d == 0 ? n : source.Skip(i, d);
        visit(i, j, Outcome::kRejected);
        i = j;
        computed = d;
        skipped = true;
        break;
      }
      Level& next = levels_[d + 1];
      next.tops.clear();
      StepFlags flags;
      Step(here.tops, static_cast<uint8_t>(bytes[d]), arena, &next.tops, &flags, &next.inside, &next.outside);
      next.inherited_escape = escape;
      next.escaped = flags.escaped;
      next.arena_size = arena->size();
      ++d;
    }
    if (skipped) continue;
    computed = len;
    const Level& last = levels_[len];
    Outcome outcome = last.inside                                  ? Outcome::kAccepted
                      : (last.outside || last.inherited_escape) ? Outcome::kUncertain
                                                                  : Outcome::kRejected;
    visit(i, i + 1, outcome);
    ++i;
  }
  arena->resize(root.arena_size);
}

}  // namespace gantry::guided::internal

#endif  // GANTRY_TEXT_GUIDED_PDA_H_
