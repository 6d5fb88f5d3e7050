#include "text/wordpiece_model.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "text/utf8.h"

namespace gantry::text {

using nlohmann::json;

absl::StatusOr<std::unique_ptr<Model>> WordPieceModel::Create(const json& model) {
  std::unique_ptr<WordPieceModel> wp(new WordPieceModel());
  if (auto s = wp->ReadVocabObject(model.value("vocab", json::object()), "WordPiece"); !s.ok()) return s;
  const std::string unk = model.value("unk_token", "[UNK]");
  auto unk_id = wp->TokenToId(unk);
  if (!unk_id) return absl::InvalidArgumentError(absl::StrCat("WordPiece unk_token \"", unk, "\" is not in the vocab"));
  wp->unk_id_ = *unk_id;
  wp->prefix_ = model.value("continuing_subword_prefix", "##");
  const json max_chars = model.value("max_input_chars_per_word", json(100));
  if (!max_chars.is_number_unsigned()) {
    return absl::InvalidArgumentError("WordPiece max_input_chars_per_word must be a non-negative integer");
  }
  wp->max_chars_ = max_chars.get<size_t>();
  return wp;
}

void WordPieceModel::EncodeUncached(absl::string_view word, std::vector<int32_t>* ids) const {
  std::vector<size_t> char_ends;  // byte offset after each character
  for (size_t pos = 0; pos < word.size();) {
    NextCodePoint(word, &pos);
    char_ends.push_back(pos);
  }
  if (char_ends.size() > max_chars_) {
    ids->push_back(unk_id_);
    return;
  }
  const size_t first = ids->size();
  std::string candidate;
  size_t start = 0, start_char = 0;
  while (start < word.size()) {
    // Longest piece first: shrink the end one character at a time.
    int32_t found = -1;
    size_t end_char = char_ends.size();
    for (; end_char > start_char; --end_char) {
      candidate.assign(start > 0 ? prefix_ : "");
      candidate.append(word.data() + start, char_ends[end_char - 1] - start);
      if (auto it = vocab_.find(candidate); it != vocab_.end()) {
        found = it->second;
        break;
      }
    }
    if (found < 0) {  // the whole word becomes unk
      ids->resize(first);
      ids->push_back(unk_id_);
      return;
    }
    ids->push_back(found);
    start = char_ends[end_char - 1];
    start_char = end_char;
  }
}

}  // namespace gantry::text
