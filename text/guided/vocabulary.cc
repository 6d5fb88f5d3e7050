// Vocabulary and its token trie (vocabulary.h).
#include "text/guided/vocabulary.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "text/tokenizer.h"

namespace gantry::guided {

absl::StatusOr<std::shared_ptr<const Vocabulary>> Vocabulary::Create(std::vector<std::string> token_bytes,
                                                                    std::vector<int32_t> stop_token_ids,
                                                                    int32_t mask_size) {
  if (mask_size < static_cast<int64_t>(token_bytes.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("mask_size ", mask_size, " is smaller than the vocabulary (", token_bytes.size(), " tokens)"));
  }
  std::shared_ptr<Vocabulary> v(new Vocabulary());
  v->is_stop_.assign(mask_size, 0);
  for (int32_t id : stop_token_ids) {
    if (id < 0 || id >= mask_size) {
      return absl::InvalidArgumentError(absl::StrCat("stop token id ", id, " is outside [0, ", mask_size, ")"));
    }
    v->is_stop_[id] = 1;
  }
  std::sort(stop_token_ids.begin(), stop_token_ids.end());
  stop_token_ids.erase(std::unique(stop_token_ids.begin(), stop_token_ids.end()), stop_token_ids.end());
  v->token_bytes_ = std::move(token_bytes);
  v->stop_token_ids_ = std::move(stop_token_ids);
  v->mask_size_ = mask_size;
  v->trie_bits_.assign(v->mask_words(), 0);

  for (int32_t id = 0; id < static_cast<int32_t>(v->token_bytes_.size()); ++id) {
    if (v->token_bytes_[id].empty() || v->is_stop_[id]) continue;
    v->sorted_ids_.push_back(id);
    v->trie_bits_[id / 32] |= 1u << (id % 32);
    v->max_token_length_ = std::max<int32_t>(v->max_token_length_, v->token_bytes_[id].size());
  }
  const auto& bytes = v->token_bytes_;
  std::sort(v->sorted_ids_.begin(), v->sorted_ids_.end(), [&](int32_t a, int32_t b) {
    return bytes[a] != bytes[b] ? bytes[a] < bytes[b] : a < b;
  });
  int32_t n = v->trie_size();
  v->lcp_.assign(n, 0);
  for (int32_t i = 1; i < n; ++i) {
    const std::string& a = bytes[v->sorted_ids_[i - 1]];
    const std::string& b = bytes[v->sorted_ids_[i]];
    size_t k = 0;
    while (k < a.size() && k < b.size() && a[k] == b[k]) ++k;
    v->lcp_[i] = static_cast<int32_t>(k);
  }
  // next_lt[d]: the first index after the current one whose lcp is below d.
  std::vector<int32_t> next_lt(v->max_token_length_ + 2, n);
  v->skip_begin_.assign(n + 1, 0);
  for (int32_t i = 0; i < n; ++i) {
    v->skip_begin_[i + 1] = v->skip_begin_[i] + static_cast<int32_t>(v->sorted_bytes(i).size());
  }
  v->skip_.assign(v->skip_begin_[n], n);
  for (int32_t i = n - 1; i >= 0; --i) {
    if (i + 1 < n) {
      for (int32_t d = v->lcp_[i + 1] + 1; d <= v->max_token_length_; ++d) next_lt[d] = i + 1;
    }
    int32_t len = static_cast<int32_t>(v->sorted_bytes(i).size());
    for (int32_t d = 1; d <= len; ++d) v->skip_[v->skip_begin_[i] + d - 1] = next_lt[d];
  }
  return std::shared_ptr<const Vocabulary>(std::move(v));
}

absl::StatusOr<std::shared_ptr<const Vocabulary>> VocabularyFromTokenizer(const text::Tokenizer& tokenizer,
                                                                          int32_t mask_size) {
  std::vector<std::string> token_bytes(tokenizer.vocab_size());
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (tokenizer.IsSpecial(id)) continue;
    token_bytes[id] = tokenizer.TokenBytes(id, /*first=*/false, /*skip_special_tokens=*/true);
  }
  return Vocabulary::Create(std::move(token_bytes), tokenizer.eos_ids(), mask_size);
}

}  // namespace gantry::guided
