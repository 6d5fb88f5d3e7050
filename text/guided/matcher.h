// One sequence's position in a guided decoding grammar: the set of stack
// tops of the pushdown automaton after the text so far, the token mask for
// the next step (cached per state, plus run-time checks of the few uncertain
// tokens) and token acceptance. Our own code (grammar.h says why).
#ifndef GANTRY_TEXT_GUIDED_MATCHER_H_
#define GANTRY_TEXT_GUIDED_MATCHER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "text/guided/grammar.h"
#include "text/guided/pda.h"

namespace gantry::guided {

// Not thread-safe; different matchers may run on different threads at once.
// Copyable (a copy is an independent position).
class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<const Grammar> grammar);

  // words[mask_words()]: bit (id % 32) of words[id / 32] set <=> token id may
  // come next. Stop tokens are allowed exactly when CanStop().
  void FillNextTokenMask(uint32_t* words) const;
  // INVALID_ARGUMENT (naming the token id) if the token is not allowed; the
  // matcher is unchanged then.
  absl::Status AcceptToken(int32_t token);
  // Whether `bytes` could be appended (the text stays a prefix of a match);
  // the matcher is unchanged. For tests and debugging; not cached.
  bool CanAcceptBytes(absl::string_view bytes) const;
  bool CanStop() const { return accepting_ && !stopped_; }  // the text so far is a complete match
  // A stop token was accepted, or the match is complete and no byte can
  // extend it (the engine ends the sequence then).
  bool IsCompleted() const { return stopped_ || (accepting_ && tops_.empty()); }

 private:
  // Reads `bytes` from the current tops into *tops; false when some byte
  // cannot be read. Appends to arena_.
  bool Advance(absl::string_view bytes, std::vector<internal::Frame>* tops, bool* accepting) const;
  // Drops arena frames no top can return to, when the arena has grown large.
  void Compact();

  std::shared_ptr<const Grammar> grammar_;
  // Mutable: mask computation and trial reads push scratch frames and remove
  // them again; the observable state is tops_, accepting_ and stopped_.
  mutable std::vector<internal::Frame> arena_;
  mutable internal::Stepper stepper_;
  mutable std::vector<uint32_t> scratch_;
  std::vector<internal::Frame> tops_;
  size_t compact_at_ = 4096;
  bool accepting_ = false;
  bool stopped_ = false;
};

}  // namespace gantry::guided

#endif  // GANTRY_TEXT_GUIDED_MATCHER_H_
