// Guided decoding grammars: what a request constrains its output to (a JSON
// Schema, any JSON object, a regular expression, or a fixed list of choices),
// compiled for one vocabulary into a byte-level pushdown automaton plus a
// per-state token mask cache. Our own code: xgrammar and llguidance, which do
// this elsewhere, cannot be installed here (only Debian 12 packages and npm
// are reachable); the design follows xgrammar's.
#ifndef GANTRY_TEXT_GUIDED_GRAMMAR_H_
#define GANTRY_TEXT_GUIDED_GRAMMAR_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "text/guided/automaton.h"
#include "text/guided/token_mask_cache.h"
#include "text/guided/vocabulary.h"

namespace gantry::guided {

struct GrammarSpec {
  enum class Kind { kJsonSchema, kAnyJson, kRegex, kChoice };
  Kind kind = Kind::kAnyJson;
  std::string json_schema;           // kJsonSchema: the schema document (JSON text)
  std::string regex;                 // kRegex
  std::vector<std::string> choices;  // kChoice: output is exactly one of these

  // A stable key for caches: equal keys compile to the same grammar.
  std::string CacheKey() const;
};

// Compiled for one vocabulary; immutable, shared by all sequences, thread-safe.
class Grammar {
 public:
  Grammar(std::shared_ptr<const Vocabulary> vocabulary, internal::Automaton automaton,
          internal::TokenMaskCache cache, double compile_seconds);
  Grammar(const Grammar&) = delete;
  Grammar& operator=(const Grammar&) = delete;

  const Vocabulary& vocabulary() const { return *vocabulary_; }
  const internal::Automaton& automaton() const { return automaton_; }
  const internal::TokenMaskCache& mask_cache() const { return cache_; }
  double compile_seconds() const { return compile_seconds_; }

 private:
  std::shared_ptr<const Vocabulary> vocabulary_;
  internal::Automaton automaton_;
  internal::TokenMaskCache cache_;
  double compile_seconds_;
};

// INVALID_ARGUMENT naming what is wrong: unsupported schema keywords by name
// and JSON pointer, a bad regex with its offset, an empty choice list,
// malformed JSON with its offset.
absl::StatusOr<std::shared_ptr<const Grammar>> CompileGrammar(const GrammarSpec& spec,
                                                              std::shared_ptr<const Vocabulary> vocabulary);

}  // namespace gantry::guided

#endif  // GANTRY_TEXT_GUIDED_GRAMMAR_H_
