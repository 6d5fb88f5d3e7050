// Builds and applies the adaptive token mask cache (token_mask_cache.h).
#include "text/guided/token_mask_cache.h"

#include <algorithm>

#include "text/guided/pda.h"

namespace gantry::guided::internal {
namespace {

inline void SetBit(uint32_t* words, int32_t id) { words[id / 32] |= 1u << (id % 32); }
inline void ClearBit(uint32_t* words, int32_t id) { words[id / 32] &= ~(1u << (id % 32)); }

}  // namespace

TokenMaskCache TokenMaskCache::Build(const Automaton& automaton, const Vocabulary& vocabulary) {
  TokenMaskCache cache(vocabulary);
  Stepper stepper(automaton, kContextLevels, vocabulary.max_token_length());
  TrieSource trie(vocabulary);
  std::vector<Frame> arena;
  std::vector<int32_t> accepted, rejected;
  const int64_t words = vocabulary.mask_words();
  cache.entry_index_.resize(automaton.rules.size());
  for (int32_t r = 0; r < static_cast<int32_t>(automaton.rules.size()); ++r) {
    const RuleDfa& dfa = automaton.rules[r];
    // States of a rule without calls that agree on every string as long as
    // the longest token read the same tokens: they share an entry.
    int32_t num_classes = 0;
    std::vector<int32_t> classes =
        EquivalenceClasses(dfa, dfa.has_refs ? -1 : vocabulary.max_token_length(), &num_classes);
    std::vector<int32_t> entry_of_class(num_classes, -1);
    cache.entry_index_[r].assign(dfa.num_states, -1);
    for (int32_t s = 0; s < dfa.num_states; ++s) {
      if (!dfa.consumes[s]) continue;
      ++cache.stats_.states;
      int32_t& index = entry_of_class[classes[s]];
      if (index < 0) {
        MaskEntry entry;
        accepted.clear();
        rejected.clear();
        stepper.Walk(trie, Frame{r, s, ContextParent(0), false}, &arena,
                     [&](int32_t begin, int32_t end, Outcome outcome) {
                       for (int32_t i = begin; i < end; ++i) {
                         switch (outcome) {
                           case Outcome::kAccepted:
                             accepted.push_back(vocabulary.sorted_id(i));
                             break;
                           case Outcome::kRejected:
                             rejected.push_back(vocabulary.sorted_id(i));
                             break;
                           case Outcome::kUncertain:
                             entry.uncertain.push_back(i);
                             break;
                         }
                       }
                     });
        for (size_t k = 0; k < entry.uncertain.size(); ++k) {
          int32_t lcp = 0;
          if (k > 0) {
            absl::string_view a = vocabulary.sorted_bytes(entry.uncertain[k - 1]);
            absl::string_view b = vocabulary.sorted_bytes(entry.uncertain[k]);
            while (lcp < static_cast<int32_t>(std::min(a.size(), b.size())) && a[lcp] == b[lcp]) ++lcp;
          }
          entry.uncertain_lcp.push_back(static_cast<uint16_t>(std::min(lcp, 65535)));
        }
        if (static_cast<int64_t>(accepted.size()) <= words && accepted.size() <= rejected.size()) {
          entry.storage = MaskEntry::Storage::kAcceptedList;
          entry.ids = accepted;
        } else if (static_cast<int64_t>(rejected.size()) <= words) {
          entry.storage = MaskEntry::Storage::kRejectedList;
          entry.ids = rejected;
        } else {
          entry.storage = MaskEntry::Storage::kAcceptedBits;
          entry.bits.assign(words, 0);
          for (int32_t id : accepted) SetBit(entry.bits.data(), id);
        }
        std::sort(entry.ids.begin(), entry.ids.end());
        cache.stats_.uncertain += static_cast<int64_t>(entry.uncertain.size());
        cache.stats_.bytes += static_cast<int64_t>(entry.ids.size() * 4 + entry.bits.size() * 4 +
                                                   entry.uncertain.size() * 6);
        index = static_cast<int32_t>(cache.entries_.size());
        cache.entries_.push_back(std::move(entry));
      }
      cache.entry_index_[r][s] = index;
    }
  }
  cache.stats_.entries = static_cast<int64_t>(cache.entries_.size());
  return cache;
}

void TokenMaskCache::OrAccepted(const MaskEntry& entry, uint32_t* words, std::vector<uint32_t>* scratch) const {
  const int32_t n = vocabulary_->mask_words();
  switch (entry.storage) {
    case MaskEntry::Storage::kAcceptedList:
      for (int32_t id : entry.ids) SetBit(words, id);
      return;
    case MaskEntry::Storage::kAcceptedBits:
      for (int32_t w = 0; w < n; ++w) words[w] |= entry.bits[w];
      return;
    case MaskEntry::Storage::kRejectedList: {
      scratch->assign(vocabulary_->trie_token_bits().begin(), vocabulary_->trie_token_bits().end());
      for (int32_t id : entry.ids) ClearBit(scratch->data(), id);
      for (int32_t i : entry.uncertain) ClearBit(scratch->data(), vocabulary_->sorted_id(i));
      for (int32_t w = 0; w < n; ++w) words[w] |= (*scratch)[w];
      return;
    }
  }
}

}  // namespace gantry::guided::internal
