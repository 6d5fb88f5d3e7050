// A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) in C++:
// added/special tokens, normalizer, pre-tokenizer, model (BPE, WordPiece,
// Unigram), post-processor and decoder, as the Rust `tokenizers` library runs
// them.
#ifndef GANTRY_RUNTIME_TEXT_TOKENIZER_H_
#define GANTRY_RUNTIME_TEXT_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "text/post_processor.h"

namespace gantry::text {

class Decoder;
class Model;
class Normalizer;
class PreTokenizer;

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

class Tokenizer {
 public:
  // Reads tokenizer.json, tokenizer_config.json and (for eos ids)
  // generation_config.json from a model folder.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_dir);
  // `tokenizer_config_json` and `generation_config_json` may be empty.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view tokenizer_json,
                                                             absl::string_view tokenizer_config_json,
                                                             absl::string_view generation_config_json = "");
  ~Tokenizer();

  // INVALID_ARGUMENT for text that is not UTF-8 (naming the byte offset).
  // `add_special_tokens` applies the post-processor (e.g. a leading BOS).
  // `split_special_tokens` (as in transformers): the text of a special token
  // is encoded as ordinary text, not as that token (added tokens that are
  // not special still match).
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text, bool add_special_tokens = true,
                                              bool split_special_tokens = false) const;
  // The same with token type ids (what encoder models take).
  //
  // `max_length` > 0 truncates as Hugging Face tokenizers' truncation
  // (longest_first, right, stride 0) does: the result, special tokens
  // included, has at most `max_length` tokens, and the special tokens are
  // kept. INVALID_ARGUMENT when `max_length` is negative or smaller than the
  // number of special tokens the post-processor adds. 0: no truncation.
  absl::StatusOr<Encoding> EncodeWithTypes(absl::string_view text, bool add_special_tokens = true,
                                           int max_length = 0) const;
  // A pair (query and document for a cross-encoder) joined as the
  // post-processor's pair template says, e.g. [CLS] A [SEP] B [SEP] with
  // type ids 0 for A's part and 1 for B's. Without special tokens the type
  // ids are still the template's (no post-processor: 0 for A, 1 for B).
  // `max_length` as above; the longer text gives up tokens first.
  absl::StatusOr<Encoding> EncodePair(absl::string_view text, absl::string_view text_pair,
                                      bool add_special_tokens = true, int max_length = 0) const;

  // The texts of the special added tokens (e.g. "<|im_start|>").
  std::vector<std::string> SpecialTokenTexts() const;

  // Decodes as the reference does without clean_up_tokenization_spaces, so
  // Decode(Encode(text)) == text. Invalid UTF-8 becomes U+FFFD.
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens = false) const;

  // The bytes one token contributes, `first` when it is the first token
  // decoded. Empty for ids outside the vocabulary and for skipped specials.
  std::string TokenBytes(int32_t id, bool first, bool skip_special_tokens) const;

  // Whether decoding includes the token at all (it exists and is not a
  // skipped special token); such a token ends the "first token" position.
  bool Decodes(int32_t id, bool skip_special_tokens) const;

  bool IsSpecial(int32_t id) const;
  // Vocab size including added tokens (the largest id + 1).
  int32_t vocab_size() const { return vocab_size_; }
  std::optional<int32_t> TokenToId(absl::string_view token) const;

  const std::string& bos_token() const { return bos_token_; }  // "" when none
  const std::string& eos_token() const { return eos_token_; }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  // generation_config.json's eos_token_id list if present, else eos_token's id.
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }
  const std::string& chat_template() const { return chat_template_; }  // "" when none

 private:
  Tokenizer();
  // Encodes one or two texts, truncates them (`max_length` > 0) and
  // post-processes them.
  absl::StatusOr<Encoding> EncodeSequences(absl::Span<const absl::string_view> texts, bool add_special_tokens,
                                           bool split_special_tokens, int max_length) const;
  // How many tokens the post-processor adds to `sequences` (1 or 2) texts.
  absl::StatusOr<int> AddedTokenCount(size_t sequences) const;
  // One text's ids without special tokens from the post-processor.
  void EncodeText(absl::string_view text, bool split_special_tokens, std::vector<int32_t>* ids) const;
  absl::Status SplitAddedTokens(absl::string_view text, bool normalized_pass, bool skip_special,
                                std::vector<std::pair<std::string, int32_t>>* out) const;
  const std::string* TokenText(int32_t id) const;

  std::unique_ptr<Model> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::vector<AddedToken> added_;
  absl::flat_hash_map<int32_t, size_t> added_by_id_;
  // Added tokens by first byte, longest first, for leftmost-longest matching.
  std::vector<std::vector<size_t>> added_by_first_byte_;
  bool has_normalized_added_ = false;
  int32_t vocab_size_ = 0;
  std::string bos_token_, eos_token_, chat_template_;
  std::optional<int32_t> bos_id_;
  std::vector<int32_t> eos_ids_;
};

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_TOKENIZER_H_
