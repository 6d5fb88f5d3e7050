#include "text/bpe_model.h"

#include <queue>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "text/utf8.h"

namespace gantry::text {
using nlohmann::json;

absl::StatusOr<std::unique_ptr<Model>> BpeModel::Create(const json& model) {
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
      return absl::UnimplementedError(absl::StrCat("BPE with a non-empty ", key, " is not supported"));
    }
  }
  if (model.contains("dropout") && model["dropout"].is_number() && model["dropout"].get<double>() > 0) {
    return absl::UnimplementedError("BPE dropout is not supported for inference");
  }
  std::unique_ptr<BpeModel> bpe(new BpeModel());
  if (auto s = bpe->ReadVocabObject(model.value("vocab", json::object()), "BPE"); !s.ok()) return s;

  int32_t rank = 0;
  for (const auto& merge : model.value("merges", json::array())) {
    std::string left, right;
    if (merge.is_string()) {
      const std::string text = merge.get<std::string>();
      size_t space = text.find(' ');
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("merge \"", text, "\" is not two tokens"));
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " is malformed: ", merge.dump()));
    }
    auto l = bpe->vocab_.find(left), r = bpe->vocab_.find(right), m = bpe->vocab_.find(left + right);
    if (l == bpe->vocab_.end() || r == bpe->vocab_.end() || m == bpe->vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("merge ", rank, " (\"", left, "\", \"", right, "\") uses a token outside the vocab"));
    }
    bpe->merges_.emplace(PairKey(l->second, r->second), Merge{rank, m->second});
    ++rank;
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = bpe->vocab_.find(model["unk_token"].get<std::string>());
    if (it == bpe->vocab_.end()) return absl::InvalidArgumentError("unk_token is not in the vocab");
    bpe->unk_id_ = it->second;
  }
  bpe->fuse_unk_ = model.value("fuse_unk", false);
  bpe->byte_fallback_ = model.value("byte_fallback", false);
  bpe->ignore_merges_ = model.value("ignore_merges", false);
  for (int b = 0; b < 256; ++b) {
    auto it = bpe->vocab_.find(absl::StrFormat("<0x%02X>", b));
    bpe->byte_ids_[b] = it == bpe->vocab_.end() ? -1 : it->second;
  }
  return bpe;
}

void BpeModel::EncodeUncached(absl::string_view word, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // One symbol per character; characters outside the vocab become byte
  // tokens (byte_fallback) or unk.
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // -1 at the ends
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  bool last_was_unk = false;
  for (size_t pos = 0; pos < word.size();) {
    size_t start = pos;
    NextCodePoint(word, &pos);
    auto it = vocab_.find(word.substr(start, pos - start));
    if (it != vocab_.end()) {
      symbols.push_back({it->second, 0, 0, true});
      last_was_unk = false;
      continue;
    }
    bool all_bytes = byte_fallback_;
    for (size_t b = start; all_bytes && b < pos; ++b) all_bytes = byte_ids_[static_cast<uint8_t>(word[b])] >= 0;
    if (all_bytes) {
      for (size_t b = start; b < pos; ++b) symbols.push_back({byte_ids_[static_cast<uint8_t>(word[b])], 0, 0, true});
      last_was_unk = false;
    } else if (unk_id_) {
      if (!(fuse_unk_ && last_was_unk)) symbols.push_back({*unk_id_, 0, 0, true});
      last_was_unk = true;
    }
  }
  const int32_t n = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i < n; ++i) {
    symbols[i].prev = i - 1;
    symbols[i].next = i + 1 < n ? i + 1 : -1;
  }
  // Candidate merges ordered by (rank, position): the lowest rank merges
  // first, ties left to right, as the reference implementation does.
  struct Candidate {
    int32_t rank, left, left_id, right_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push = [&](int32_t left) {
    int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, symbols[left].id, symbols[right].id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!queue.empty()) {
    Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    if (!left.alive || left.id != c.left_id || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    if (right.id != c.right_id) continue;  // stale: a neighbour merged first
    left.id = merges_.at(PairKey(c.left_id, c.right_id)).merged;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    if (left.prev >= 0) push(left.prev);
    push(c.left);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = symbols[i].next) ids->push_back(symbols[i].id);
}

}  // namespace gantry::text
