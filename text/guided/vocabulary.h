// A model vocabulary as the guided decoder sees it: the bytes each token adds
// to the text, the stop tokens, the logits width, and the token trie (tokens
// sorted by bytes, so tokens sharing a prefix are walked once). Our own code,
// as the whole guided decoder is (automaton.h says why).
#ifndef GANTRY_TEXT_GUIDED_VOCABULARY_H_
#define GANTRY_TEXT_GUIDED_VOCABULARY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gantry::text {
class Tokenizer;
}

namespace gantry::guided {

class Vocabulary {
 public:
  // token_bytes[id]; mask_size = the model's logits width (>= token_bytes.size();
  // ids past token_bytes are never allowed). Tokens with no bytes (special and
  // control tokens) are never allowed by a grammar; stop tokens are allowed
  // exactly when the text is complete.
  static absl::StatusOr<std::shared_ptr<const Vocabulary>> Create(std::vector<std::string> token_bytes,
                                                                 std::vector<int32_t> stop_token_ids,
                                                                 int32_t mask_size);

  int32_t mask_size() const { return mask_size_; }
  int32_t mask_words() const { return (mask_size_ + 31) / 32; }
  const std::vector<std::string>& token_bytes() const { return token_bytes_; }
  const std::vector<int32_t>& stop_token_ids() const { return stop_token_ids_; }
  bool IsStop(int32_t id) const { return id >= 0 && id < mask_size_ && is_stop_[id]; }

  // The trie: the tokens with bytes that are not stop tokens, sorted by bytes.
  int32_t trie_size() const { return static_cast<int32_t>(sorted_ids_.size()); }
  int32_t sorted_id(int32_t i) const { return sorted_ids_[i]; }
  absl::string_view sorted_bytes(int32_t i) const { return token_bytes_[sorted_ids_[i]]; }
  // Common prefix length of sorted tokens i - 1 and i (0 for i == 0).
  int32_t lcp(int32_t i) const { return lcp_[i]; }
  // The first sorted index after i whose token does not start with the first
  // `depth` bytes of token i (1 <= depth <= its length): where a walk goes on
  // once that prefix is rejected.
  int32_t SkipPast(int32_t i, int32_t depth) const { return skip_[skip_begin_[i] + depth - 1]; }
  int32_t max_token_length() const { return max_token_length_; }
  // Bit set for every token a grammar can allow (the trie's tokens).
  const std::vector<uint32_t>& trie_token_bits() const { return trie_bits_; }

 private:
  Vocabulary() = default;

  std::vector<std::string> token_bytes_;
  std::vector<int32_t> stop_token_ids_;
  std::vector<uint8_t> is_stop_;
  int32_t mask_size_ = 0;
  std::vector<int32_t> sorted_ids_;
  std::vector<int32_t> lcp_;
  std::vector<int32_t> skip_begin_;
  std::vector<int32_t> skip_;
  int32_t max_token_length_ = 0;
  std::vector<uint32_t> trie_bits_;
};

// Builds it from a Hugging Face tokenizer: bytes via TokenBytes(id, first=false,
// skip_special_tokens=true); special tokens get no bytes; stop ids = eos_ids().
absl::StatusOr<std::shared_ptr<const Vocabulary>> VocabularyFromTokenizer(const text::Tokenizer& tokenizer,
                                                                          int32_t mask_size);

}  // namespace gantry::guided

#endif  // GANTRY_TEXT_GUIDED_VOCABULARY_H_
