#include "text/bpe_model.h"

#include <queue>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "text/utf8.h"

namespace gantry::text {
namespace {

using nlohmann::json;

constexpr size_t kCacheEntries = 1 << 16;  // cleared when full
constexpr size_t kCachedWordBytes = 256;   // longer words are not cached

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(const json& model) {
  const std::string type = model.value("type", "");
  if (type != "BPE") {
    return absl::UnimplementedError(
        absl::StrCat("tokenizer model \"", type, "\" is not supported; supported: BPE"));
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
      return absl::UnimplementedError(absl::StrCat("BPE with a non-empty ", key, " is not supported"));
    }
  }
  if (model.contains("dropout") && model["dropout"].is_number() && model["dropout"].get<double>() > 0) {
    return absl::UnimplementedError("BPE dropout is not supported for inference");
  }
  std::unique_ptr<BpeModel> bpe(new BpeModel());
  const json& vocab = model.value("vocab", json::object());
  if (!vocab.is_object() || vocab.empty()) return absl::InvalidArgumentError("BPE model has no vocab");
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("vocab entry \"", token, "\" has no valid id"));
    }
    bpe->vocab_[token] = id.get<int32_t>();
    max_id = std::max(max_id, id.get<int32_t>());
  }
  bpe->id_to_token_.resize(max_id + 1);
  for (const auto& [token, id] : bpe->vocab_) bpe->id_to_token_[id] = token;

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

std::optional<int32_t> BpeModel::TokenToId(absl::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size()) || id_to_token_[id].empty()) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::Encode(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  const bool cacheable = word.size() <= kCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> encoded;
  EncodeUncached(word, &encoded);
  ids->insert(ids->end(), encoded.begin(), encoded.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheEntries) cache_.clear();
    cache_.emplace(std::string(word), std::move(encoded));
  }
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
