// GrammarCache (grammar_cache.h).
#include "text/guided/grammar_cache.h"

namespace gantry::guided {

GrammarCache::GrammarCache(std::shared_ptr<const Vocabulary> vocabulary, size_t capacity)
    : vocabulary_(std::move(vocabulary)), capacity_(std::max<size_t>(capacity, 1)) {}

absl::StatusOr<std::shared_ptr<const Grammar>> GrammarCache::Get(const GrammarSpec& spec) {
  std::string key = spec.CacheKey();
  {
    absl::MutexLock lock(&mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      ++hits_;
      return it->second->second;
    }
    ++misses_;
  }
  absl::StatusOr<std::shared_ptr<const Grammar>> grammar = CompileGrammar(spec, vocabulary_);
  if (!grammar.ok()) return grammar.status();
  absl::MutexLock lock(&mu_);
  auto it = index_.find(key);
  if (it != index_.end()) {  // another caller compiled it meanwhile
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->second;
  }
  lru_.emplace_front(key, *grammar);
  index_[key] = lru_.begin();
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return *grammar;
}

size_t GrammarCache::size() const {
  absl::MutexLock lock(&mu_);
  return lru_.size();
}

int64_t GrammarCache::hits() const {
  absl::MutexLock lock(&mu_);
  return hits_;
}

int64_t GrammarCache::misses() const {
  absl::MutexLock lock(&mu_);
  return misses_;
}

}  // namespace gantry::guided
