// GrammarMatcher (matcher.h).
#include "text/guided/matcher.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace gantry::guided {

using internal::Frame;

GrammarMatcher::GrammarMatcher(std::shared_ptr<const Grammar> grammar)
    : grammar_(std::move(grammar)),
      stepper_(grammar_->automaton(), /*max_context_levels=*/0, grammar_->vocabulary().max_token_length()) {
  const internal::Automaton& a = grammar_->automaton();
  internal::StepFlags flags;
  Frame root{a.root, a.rules[a.root].start, internal::kEndOfText, false};
  stepper_.Expand(root, &arena_, &tops_, &flags);
  accepting_ = flags.accepting;
}

void GrammarMatcher::FillNextTokenMask(uint32_t* words) const {
  const Vocabulary& vocab = grammar_->vocabulary();
  const internal::TokenMaskCache& cache = grammar_->mask_cache();
  std::memset(words, 0, sizeof(uint32_t) * vocab.mask_words());
  if (stopped_) return;
  // Tops in the same state share their cached accepted set.
  int32_t applied[16];
  int32_t num_applied = 0;
  for (const Frame& top : tops_) {
    int32_t index = cache.EntryIndex(top.rule, top.state);
    bool seen = false;
    for (int32_t k = 0; k < num_applied; ++k) seen |= applied[k] == index;
    const internal::MaskEntry& entry = cache.Entry(top.rule, top.state);
    if (!seen) {
      cache.OrAccepted(entry, words, &scratch_);
      if (num_applied < 16) applied[num_applied++] = index;
    }
    if (entry.uncertain.empty()) continue;
    internal::ListSource source(vocab, entry.uncertain, entry.uncertain_lcp);
    stepper_.Walk(source, top, &arena_, [&](int32_t begin, int32_t end, internal::Outcome outcome) {
      if (outcome != internal::Outcome::kAccepted) return;
      for (int32_t i = begin; i < end; ++i) {
        int32_t id = vocab.sorted_id(entry.uncertain[i]);
        words[id / 32] |= 1u << (id % 32);
      }
    });
  }
  if (CanStop()) {
    for (int32_t id : vocab.stop_token_ids()) words[id / 32] |= 1u << (id % 32);
  }
}

bool GrammarMatcher::Advance(absl::string_view bytes, std::vector<Frame>* tops, bool* accepting) const {
  std::vector<Frame> current = tops_, next;
  internal::StepFlags flags;
  flags.accepting = accepting_;
  for (char c : bytes) {
    next.clear();
    flags = internal::StepFlags();
    bool inside = false, outside = false;
    stepper_.Step(current, static_cast<uint8_t>(c), &arena_, &next, &flags, &inside, &outside);
    if (!inside && !outside) return false;
    current.swap(next);
  }
  *tops = std::move(current);
  *accepting = flags.accepting;
  return true;
}

bool GrammarMatcher::CanAcceptBytes(absl::string_view bytes) const {
  if (stopped_) return false;
  size_t mark = arena_.size();
  std::vector<Frame> tops;
  bool accepting = false;
  bool ok = Advance(bytes, &tops, &accepting);
  arena_.resize(mark);
  return ok;
}

absl::Status GrammarMatcher::AcceptToken(int32_t token) {
  const Vocabulary& vocab = grammar_->vocabulary();
  if (stopped_) return absl::InvalidArgumentError(absl::StrCat("token ", token, " after the stop token"));
  if (token < 0 || token >= vocab.mask_size()) {
    return absl::InvalidArgumentError(absl::StrCat("token ", token, " is outside the vocabulary"));
  }
  if (vocab.IsStop(token)) {
    if (!CanStop()) {
      return absl::InvalidArgumentError(absl::StrCat("stop token ", token, " before the output is complete"));
    }
    stopped_ = true;
    return absl::OkStatus();
  }
  if (token >= static_cast<int32_t>(vocab.token_bytes().size()) || vocab.token_bytes()[token].empty()) {
    return absl::InvalidArgumentError(absl::StrCat("token ", token, " has no text and is never allowed"));
  }
  size_t mark = arena_.size();
  std::vector<Frame> tops;
  bool accepting = false;
  if (!Advance(vocab.token_bytes()[token], &tops, &accepting)) {
    arena_.resize(mark);
    return absl::InvalidArgumentError(absl::StrCat("token ", token, " is not allowed by the grammar here"));
  }
  tops_ = std::move(tops);
  accepting_ = accepting;
  Compact();
  return absl::OkStatus();
}

void GrammarMatcher::Compact() {
  if (arena_.size() < compact_at_) return;
  // Copy the frames reachable from the tops, parents first.
  std::vector<int32_t> remap(arena_.size(), -1);
  std::vector<Frame> kept;
  std::vector<int32_t> chain;
  for (const Frame& top : tops_) {
    chain.clear();
    for (int32_t p = top.parent; p >= 0 && remap[p] < 0; p = arena_[p].parent) chain.push_back(p);
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      Frame f = arena_[*it];
      if (f.parent >= 0) f.parent = remap[f.parent];
      remap[*it] = static_cast<int32_t>(kept.size());
      kept.push_back(f);
    }
  }
  compact_at_ = std::max<size_t>(4096, kept.size() * 4);
  for (Frame& top : tops_) {
    if (top.parent >= 0) top.parent = remap[top.parent];
  }
  arena_ = std::move(kept);
}

}  // namespace gantry::guided
