#include "text/unigram_model.h"

#include <algorithm>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "text/utf8.h"

namespace gantry::text {

using nlohmann::json;

namespace {

constexpr double kUnkPenalty = 10.0;  // sentencepiece's kUnkPenalty

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> UnigramModel::Create(const json& model) {
  std::unique_ptr<UnigramModel> unigram(new UnigramModel());
  const json& vocab = model.value("vocab", json::array());
  if (!vocab.is_array() || vocab.empty()) return absl::InvalidArgumentError("Unigram model has no vocab");
  unigram->node_token_.push_back(-1);
  double min_score = std::numeric_limits<double>::max();
  for (size_t i = 0; i < vocab.size(); ++i) {
    const json& entry = vocab[i];
    if (!entry.is_array() || entry.size() != 2 || !entry[0].is_string() || !entry[1].is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("Unigram vocab entry ", i, " is not [piece, score]"));
    }
    const std::string piece = entry[0].get<std::string>();
    const int32_t id = static_cast<int32_t>(i);
    unigram->AddToken(piece, id);
    unigram->scores_.push_back(entry[1].get<double>());
    min_score = std::min(min_score, unigram->scores_.back());
    int32_t node = 0;
    for (unsigned char byte : piece) {
      auto [it, inserted] = unigram->edges_.try_emplace((static_cast<uint64_t>(node) << 8) | byte,
                                                        static_cast<int32_t>(unigram->node_token_.size()));
      if (inserted) unigram->node_token_.push_back(-1);
      node = it->second;
    }
    unigram->node_token_[node] = id;
  }
  // A duplicated piece resolves to its last id, in the trie as in vocab_.
  for (int32_t& token : unigram->node_token_) {
    if (token >= 0) token = unigram->vocab_.at(unigram->id_to_token_[token]);
  }
  unigram->unk_score_ = min_score - kUnkPenalty;
  if (model.contains("unk_id") && model["unk_id"].is_number_integer()) {
    const int64_t unk = model["unk_id"].get<int64_t>();
    if (unk < 0 || unk >= static_cast<int64_t>(vocab.size())) {
      return absl::InvalidArgumentError(absl::StrCat("Unigram unk_id ", unk, " is outside the vocab"));
    }
    unigram->unk_id_ = static_cast<int32_t>(unk);
  }
  unigram->byte_fallback_ = model.value("byte_fallback", false);
  return unigram;
}

template <typename F>
void UnigramModel::ForEachPiece(absl::string_view word, size_t start, F f) const {
  int32_t node = 0;
  for (size_t pos = start; pos < word.size(); ++pos) {
    auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(word[pos]));
    if (it == edges_.end()) return;
    node = it->second;
    if (node_token_[node] >= 0) f(pos + 1, node_token_[node]);
  }
}

void UnigramModel::EncodeUncached(absl::string_view word, std::vector<int32_t>* ids) const {
  // best[i]: the best segmentation of word[0, i) ends with piece `id` that
  // starts at `start` (-1: not reached).
  struct Node {
    double score = 0;
    int64_t start = -1;
    int32_t id = -1;
  };
  const size_t n = word.size();
  std::vector<Node> best(n + 1);
  best[0].start = 0;
  auto relax = [&](size_t from, size_t to, int32_t id, double score) {
    const double total = best[from].score + score;
    if (best[to].start < 0 || total > best[to].score) best[to] = {total, static_cast<int64_t>(from), id};
  };
  for (size_t start = 0; start < n;) {
    size_t char_end = start;
    NextCodePoint(word, &char_end);
    bool single_char_piece = false;
    ForEachPiece(word, start, [&](size_t end, int32_t id) {
      relax(start, end, id, scores_[id]);
      single_char_piece |= end == char_end;
    });
    // Without an unk_id the reference fails the encode; an unknown
    // character is then dropped.
    if (!single_char_piece && unk_id_) relax(start, char_end, *unk_id_, unk_score_);
    start = char_end;
  }
  // Walk back; adjacent unknown characters fuse into one piece.
  std::vector<std::pair<size_t, size_t>> pieces;  // [start, end) of each piece, last first
  for (size_t end = n; end > 0;) {
    const Node& node = best[end];
    if (node.start < 0) {  // unreachable without unk_id: skip the character
      size_t start = end - 1;
      while (start > 0 && (static_cast<unsigned char>(word[start]) & 0xC0) == 0x80) --start;
      end = start;
      continue;
    }
    const size_t start = static_cast<size_t>(node.start);
    const bool unk = unk_id_ && node.id == *unk_id_;
    if (unk && !pieces.empty() && pieces.back().first == end && best[pieces.back().second].id == *unk_id_) {
      pieces.back().first = start;
    } else {
      pieces.emplace_back(start, end);
    }
    end = start;
  }
  for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
    const absl::string_view piece = word.substr(it->first, it->second - it->first);
    if (auto id = TokenToId(piece)) {
      ids->push_back(*id);
      continue;
    }
    if (byte_fallback_) {
      std::vector<int32_t> bytes;
      for (unsigned char byte : piece) {
        auto id = TokenToId(absl::StrFormat("<0x%02X>", byte));
        if (!id) break;
        bytes.push_back(*id);
      }
      if (bytes.size() == piece.size()) {
        ids->insert(ids->end(), bytes.begin(), bytes.end());
        continue;
      }
    }
    if (unk_id_) ids->push_back(*unk_id_);
  }
}

}  // namespace gantry::text
