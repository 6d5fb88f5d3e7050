// The adaptive token mask cache (xgrammar's design, our own code): computed
// once per compiled grammar, for every DFA state that reads bytes, by walking
// the token trie from that state with the caller unknown. Each state's tokens
// fall into accepted (read entirely inside the rule: allowed whatever the
// stack below), rejected, and the few uncertain ones that leave the rule and
// survive in some caller; only those are checked against the real stack at
// run time. Each set is stored as a list or a bitset, whichever is smaller.
#ifndef GANTRY_TEXT_GUIDED_TOKEN_MASK_CACHE_H_
#define GANTRY_TEXT_GUIDED_TOKEN_MASK_CACHE_H_

#include <cstdint>
#include <vector>

#include "text/guided/automaton.h"
#include "text/guided/vocabulary.h"

namespace gantry::guided::internal {

struct MaskEntry {
  enum class Storage : uint8_t { kAcceptedList, kRejectedList, kAcceptedBits };
  Storage storage = Storage::kAcceptedList;
  std::vector<int32_t> ids;    // token ids: the accepted or the rejected ones
  std::vector<uint32_t> bits;  // kAcceptedBits
  // Uncertain tokens as sorted trie indices, with each one's common prefix
  // length with the previous one, so the run-time check walks them as a trie.
  std::vector<int32_t> uncertain;
  std::vector<uint16_t> uncertain_lcp;
};

struct CacheStats {
  int64_t states = 0;          // byte-reading DFA states
  int64_t entries = 0;         // distinct entries (equivalent states share one)
  int64_t uncertain = 0;       // uncertain tokens over all entries
  int64_t bytes = 0;           // memory of the stored sets
};

class TokenMaskCache {
 public:
  // How many callers up a compile-time walk follows a token past a rule's end.
  static constexpr int32_t kContextLevels = 3;

  static TokenMaskCache Build(const Automaton& automaton, const Vocabulary& vocabulary);

  // The entry for a byte-reading state.
  const MaskEntry& Entry(int32_t rule, int32_t state) const {
    return entries_[entry_index_[rule][state]];
  }
  int32_t EntryIndex(int32_t rule, int32_t state) const { return entry_index_[rule][state]; }
  // ORs the entry's accepted tokens into `words`; `scratch` has mask_words.
  void OrAccepted(const MaskEntry& entry, uint32_t* words, std::vector<uint32_t>* scratch) const;
  const CacheStats& stats() const { return stats_; }

 private:
  explicit TokenMaskCache(const Vocabulary& vocabulary) : vocabulary_(&vocabulary) {}

  const Vocabulary* vocabulary_;
  std::vector<std::vector<int32_t>> entry_index_;  // [rule][state], -1 for states that read nothing
  std::vector<MaskEntry> entries_;
  CacheStats stats_;
};

}  // namespace gantry::guided::internal

#endif  // GANTRY_TEXT_GUIDED_TOKEN_MASK_CACHE_H_
