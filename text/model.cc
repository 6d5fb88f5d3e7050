#include "text/model.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "text/bpe_model.h"
#include "text/unigram_model.h"
#include "text/wordpiece_model.h"

namespace gantry::text {
namespace {

using nlohmann::json;

constexpr size_t kCacheEntries = 1 << 16;  // cleared when full
constexpr size_t kCachedWordBytes = 256;   // longer words are not cached

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> MakeModel(const json& config) {
  const std::string type = config.value("type", "");
  if (type == "BPE") return BpeModel::Create(config);
  if (type == "WordPiece") return WordPieceModel::Create(config);
  if (type == "Unigram") return UnigramModel::Create(config);
  return absl::UnimplementedError(
      absl::StrCat("tokenizer model \"", type, "\" is not supported; supported: BPE, WordPiece, Unigram"));
}

absl::Status Model::ReadVocabObject(const json& vocab, absl::string_view type) {
  if (!vocab.is_object() || vocab.empty()) return absl::InvalidArgumentError(absl::StrCat(type, " model has no vocab"));
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX - 1) {
      return absl::InvalidArgumentError(absl::StrCat("vocab entry \"", token, "\" has no valid id"));
    }
    AddToken(token, id.get<int32_t>());
  }
  return absl::OkStatus();
}

void Model::AddToken(const std::string& token, int32_t id) {
  vocab_[token] = id;
  if (id >= static_cast<int32_t>(id_to_token_.size())) id_to_token_.resize(id + 1);
  id_to_token_[id] = token;
}

std::optional<int32_t> Model::TokenToId(absl::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* Model::IdToToken(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(id_to_token_.size()) || id_to_token_[id].empty()) return nullptr;
  return &id_to_token_[id];
}

void Model::Encode(absl::string_view word, std::vector<int32_t>* ids) const {
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

}  // namespace gantry::text
