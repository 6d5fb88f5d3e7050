// A thread-safe LRU cache of compiled guided decoding grammars for one
// vocabulary, keyed by spec, so repeated requests with the same schema do not
// recompile (compiling walks the whole vocabulary per automaton state). Our
// own code, as the whole guided decoder is (grammar.h says why).
#ifndef GANTRY_TEXT_GUIDED_GRAMMAR_CACHE_H_
#define GANTRY_TEXT_GUIDED_GRAMMAR_CACHE_H_

#include <list>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "text/guided/grammar.h"

namespace gantry::guided {

class GrammarCache {
 public:
  GrammarCache(std::shared_ptr<const Vocabulary> vocabulary, size_t capacity);

  // The cached grammar, or compiles it (outside the lock: other specs are
  // served meanwhile; two callers racing on one new spec may both compile,
  // and one result is kept). Errors are not cached.
  absl::StatusOr<std::shared_ptr<const Grammar>> Get(const GrammarSpec& spec);

  size_t size() const;
  int64_t hits() const;
  int64_t misses() const;

 private:
  using Entry = std::pair<std::string, std::shared_ptr<const Grammar>>;

  std::shared_ptr<const Vocabulary> vocabulary_;
  size_t capacity_;
  mutable absl::Mutex mu_;
  std::list<Entry> lru_ ABSL_GUARDED_BY(mu_);  // most recent first
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> index_ ABSL_GUARDED_BY(mu_);
  int64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace gantry::guided

#endif  // GANTRY_TEXT_GUIDED_GRAMMAR_CACHE_H_
