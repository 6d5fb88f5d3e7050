#include "text/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "text/decoder.h"
#include "text/model.h"
#include "text/normalizer.h"
#include "text/pre_tokenizer.h"
#include "text/utf8.h"

namespace gantry::text {
namespace {

using nlohmann::json;

absl::StatusOr<json> ParseJson(absl::string_view text, absl::string_view what) {
  json value = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded() || !value.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not a JSON object"));
  }
  return value;
}

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// tokenizer_config.json writes special tokens as strings or as objects with a
// "content" field.
std::string TokenString(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

bool IsWordByte(unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; }

bool IsSpaceByte(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Keeps the first `length` tokens (truncation on the right, no overflow).
void KeepFirst(size_t length, Encoding* encoding) {
  if (encoding->ids.size() <= length) return;
  encoding->ids.resize(length);
  encoding->type_ids.resize(length);
}

// Cuts one text or a pair to `budget` tokens in all, as tokenizers'
// truncate_encodings (src/utils/truncation.rs) with LongestFirst: a pair
// keeps the shorter text whole when the longer one can absorb the cut,
// otherwise each gets half the budget (the odd token to the longer one).
void TruncateLongestFirst(size_t budget, std::vector<Encoding>* parts) {
  if (parts->size() == 1) {
    KeepFirst(budget, &(*parts)[0]);
    return;
  }
  size_t n1 = (*parts)[0].ids.size(), n2 = (*parts)[1].ids.size();
  if (n1 + n2 <= budget) return;
  const bool swapped = n1 > n2;
  if (swapped) std::swap(n1, n2);  // n1: the shorter
  n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
  if (n1 + n2 > budget) {
    n1 = budget / 2;
    n2 = n1 + budget % 2;
  }
  if (swapped) std::swap(n1, n2);
  KeepFirst(n1, &(*parts)[0]);
  KeepFirst(n2, &(*parts)[1]);
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& model_dir) {
  auto tokenizer_json = ReadFile(model_dir + "/tokenizer.json");
  if (!tokenizer_json) return absl::NotFoundError(absl::StrCat(model_dir, ": no readable tokenizer.json"));
  std::string config = ReadFile(model_dir + "/tokenizer_config.json").value_or("");
  std::string generation = ReadFile(model_dir + "/generation_config.json").value_or("");
  auto tokenizer = FromJson(*tokenizer_json, config, generation);
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(), absl::StrCat(model_dir, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view tokenizer_json,
                                                               absl::string_view tokenizer_config_json,
                                                               absl::string_view generation_config_json) {
  // A field of the wrong JSON type throws from nlohmann's accessors; it is
  // a malformed file, not a crash.
  auto build = [&]() -> absl::StatusOr<std::unique_ptr<Tokenizer>> {
    auto root = ParseJson(tokenizer_json, "tokenizer.json");
    if (!root.ok()) return root.status();
    json config = json::object();
    if (!tokenizer_config_json.empty()) {
      auto parsed = ParseJson(tokenizer_config_json, "tokenizer_config.json");
      if (!parsed.ok()) return parsed.status();
      config = *std::move(parsed);
    }
    std::unique_ptr<Tokenizer> t(new Tokenizer());
    auto model = MakeModel(root->value("model", json::object()));
    if (!model.ok()) return model.status();
    t->model_ = *std::move(model);
    auto normalizer = MakeNormalizer(root->value("normalizer", json()));
    if (!normalizer.ok()) return normalizer.status();
    t->normalizer_ = *std::move(normalizer);
    auto pre_tokenizer = MakePreTokenizer(root->value("pre_tokenizer", json()));
    if (!pre_tokenizer.ok()) return pre_tokenizer.status();
    t->pre_tokenizer_ = *std::move(pre_tokenizer);
    auto decoder = MakeDecoder(root->value("decoder", json()));
    if (!decoder.ok()) return decoder.status();
    t->decoder_ = *std::move(decoder);

    t->vocab_size_ = t->model_->vocab_size();
    t->added_by_first_byte_.resize(256);
    for (const auto& entry : root->value("added_tokens", json::array())) {
      AddedToken token;
      token.id = entry.value("id", -1);
      token.content = entry.value("content", "");
      token.single_word = entry.value("single_word", false);
      token.lstrip = entry.value("lstrip", false);
      token.rstrip = entry.value("rstrip", false);
      token.normalized = entry.value("normalized", false);
      token.special = entry.value("special", false);
      if (token.id < 0 || token.content.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("added token ", entry.dump(), " lacks an id or content"));
      }
      t->has_normalized_added_ |= token.normalized;
      t->vocab_size_ = std::max(t->vocab_size_, token.id + 1);
      t->added_by_id_[token.id] = t->added_.size();
      t->added_.push_back(std::move(token));
    }
    for (size_t i = 0; i < t->added_.size(); ++i) {
      t->added_by_first_byte_[static_cast<uint8_t>(t->added_[i].content[0])].push_back(i);
    }
    for (auto& candidates : t->added_by_first_byte_) {
      std::stable_sort(candidates.begin(), candidates.end(), [&](size_t a, size_t b) {
        return t->added_[a].content.size() > t->added_[b].content.size();
      });
    }
    auto post_processor = MakePostProcessor(root->value("post_processor", json()));
    if (!post_processor.ok()) return post_processor.status();
    t->post_processor_ = *std::move(post_processor);

    t->bos_token_ = TokenString(config, "bos_token");
    t->eos_token_ = TokenString(config, "eos_token");
    if (!t->bos_token_.empty()) t->bos_id_ = t->TokenToId(t->bos_token_);
    if (!t->eos_token_.empty()) {
      if (auto id = t->TokenToId(t->eos_token_)) t->eos_ids_.push_back(*id);
    }
    if (!generation_config_json.empty()) {
      auto generation = ParseJson(generation_config_json, "generation_config.json");
      if (!generation.ok()) return generation.status();
      const json eos = generation->value("eos_token_id", json());
      if (eos.is_number_integer()) t->eos_ids_ = {eos.get<int32_t>()};
      if (eos.is_array()) {
        t->eos_ids_.clear();
        for (const auto& id : eos) t->eos_ids_.push_back(id.get<int32_t>());
      }
    }
    // chat_template: a string, or a list of named templates ("default" used).
    if (auto it = config.find("chat_template"); it != config.end()) {
      if (it->is_string()) {
        t->chat_template_ = it->get<std::string>();
      } else if (it->is_array()) {
        for (const auto& named : *it) {
          if (named.value("name", "") == "default") t->chat_template_ = named.value("template", "");
        }
      }
    }
    return t;
  };
  try {
    return build();
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json or its config: ", e.what()));
  }
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  for (const auto& added : added_) {
    if (added.content == token) return added.id;
  }
  return model_->TokenToId(token);
}

bool Tokenizer::IsSpecial(int32_t id) const {
  auto it = added_by_id_.find(id);
  return it != added_by_id_.end() && added_[it->second].special;
}

const std::string* Tokenizer::TokenText(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return &added_[it->second].content;
  return model_->IdToToken(id);
}

std::vector<std::string> Tokenizer::SpecialTokenTexts() const {
  std::vector<std::string> texts;
  for (const auto& token : added_) {
    if (token.special) texts.push_back(token.content);
  }
  return texts;
}

absl::Status Tokenizer::SplitAddedTokens(absl::string_view text, bool normalized_pass, bool skip_special,
                                         std::vector<std::pair<std::string, int32_t>>* out) const {
  // Leftmost-longest matches of the added tokens of this pass; -1 marks text.
  size_t text_start = 0, pos = 0;
  while (pos < text.size()) {
    const AddedToken* match = nullptr;
    for (size_t index : added_by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      const AddedToken& token = added_[index];
      if (token.normalized != normalized_pass || (skip_special && token.special)) continue;
      if (text.compare(pos, token.content.size(), token.content) != 0) continue;
      if (token.single_word) {
        size_t end = pos + token.content.size();
        if ((pos > 0 && IsWordByte(text[pos - 1])) || (end < text.size() && IsWordByte(text[end]))) continue;
      }
      match = &token;
      break;
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    size_t begin = pos, end = pos + match->content.size();
    if (match->lstrip) {
      while (begin > text_start && IsSpaceByte(text[begin - 1])) --begin;
    }
    if (match->rstrip) {
      while (end < text.size() && IsSpaceByte(text[end])) ++end;
    }
    if (begin > text_start) out->emplace_back(std::string(text.substr(text_start, begin - text_start)), -1);
    out->emplace_back(std::string(), match->id);
    text_start = pos = end;
  }
  if (text_start < text.size()) out->emplace_back(std::string(text.substr(text_start)), -1);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text, bool add_special_tokens,
                                                      bool split_special_tokens) const {
  const absl::string_view texts[] = {text};
  auto encoding = EncodeSequences(texts, add_special_tokens, split_special_tokens, /*max_length=*/0);
  if (!encoding.ok()) return encoding.status();
  return std::move(encoding->ids);
}

absl::StatusOr<Encoding> Tokenizer::EncodeWithTypes(absl::string_view text, bool add_special_tokens,
                                                    int max_length) const {
  const absl::string_view texts[] = {text};
  return EncodeSequences(texts, add_special_tokens, /*split_special_tokens=*/false, max_length);
}

absl::StatusOr<Encoding> Tokenizer::EncodePair(absl::string_view text, absl::string_view text_pair,
                                               bool add_special_tokens, int max_length) const {
  const absl::string_view texts[] = {text, text_pair};
  return EncodeSequences(texts, add_special_tokens, /*split_special_tokens=*/false, max_length);
}

absl::StatusOr<int> Tokenizer::AddedTokenCount(size_t sequences) const {
  if (!post_processor_) return 0;
  // Post-processing empty texts leaves just what it adds, so every
  // post-processor type (and Sequence of them) is counted the same way.
  std::vector<Encoding> empty(sequences);
  if (auto s = post_processor_->Process(&empty, /*add_special_tokens=*/true); !s.ok()) return s;
  size_t added = 0;
  for (const auto& part : empty) added += part.ids.size();
  return static_cast<int>(added);
}

absl::StatusOr<Encoding> Tokenizer::EncodeSequences(absl::Span<const absl::string_view> texts,
                                                    bool add_special_tokens, bool split_special_tokens,
                                                    int max_length) const {
  if (max_length < 0) return absl::InvalidArgumentError(absl::StrCat("max_length ", max_length, " is negative"));
  std::vector<Encoding> parts(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    if (auto s = ValidateUtf8(texts[i]); !s.ok()) {
      return texts.size() == 1 ? s : absl::InvalidArgumentError(absl::StrCat("text ", i + 1, " of the pair: ", s.message()));
    }
    EncodeText(texts[i], split_special_tokens, &parts[i].ids);
    parts[i].type_ids.assign(parts[i].ids.size(), static_cast<int32_t>(i));
  }
  if (max_length > 0) {
    // The special tokens are kept, so the texts share what they leave.
    int added = 0;
    if (add_special_tokens) {
      auto count = AddedTokenCount(parts.size());
      if (!count.ok()) return count.status();
      added = *count;
    }
    if (added > max_length) {
      // The Rust library's subtraction would underflow here (and a release
      // build then skips truncation); an error is the honest answer.
      return absl::InvalidArgumentError(absl::StrCat("max_length ", max_length, " is less than the ", added,
                                                     " special tokens added to ",
                                                     parts.size() == 1 ? "a text" : "a pair"));
    }
    TruncateLongestFirst(static_cast<size_t>(max_length - added), &parts);
  }
  if (post_processor_) {
    if (auto s = post_processor_->Process(&parts, add_special_tokens); !s.ok()) return s;
  }
  if (parts.size() == 1) return std::move(parts[0]);
  Encoding merged;
  for (auto& part : parts) {
    merged.ids.insert(merged.ids.end(), part.ids.begin(), part.ids.end());
    merged.type_ids.insert(merged.type_ids.end(), part.type_ids.begin(), part.type_ids.end());
  }
  return merged;
}

void Tokenizer::EncodeText(absl::string_view text, bool split_special_tokens, std::vector<int32_t>* ids) const {
  std::vector<std::pair<std::string, int32_t>> sections;
  (void)SplitAddedTokens(text, /*normalized_pass=*/false, split_special_tokens, &sections);

  std::vector<std::string> pieces;
  std::vector<std::pair<std::string, int32_t>> normalized_sections;
  for (size_t s = 0; s < sections.size(); ++s) {
    auto& [section, id] = sections[s];
    if (id >= 0) {
      ids->push_back(id);
      continue;
    }
    if (normalizer_) normalizer_->Normalize(&section);
    normalized_sections.clear();
    if (has_normalized_added_) {
      (void)SplitAddedTokens(section, /*normalized_pass=*/true, split_special_tokens, &normalized_sections);
    } else {
      normalized_sections.emplace_back(std::move(section), -1);
    }
    for (size_t n = 0; n < normalized_sections.size(); ++n) {
      auto& [piece, piece_id] = normalized_sections[n];
      if (piece_id >= 0) {
        ids->push_back(piece_id);
        continue;
      }
      if (piece.empty()) continue;  // normalized away: no pre-tokenizer runs on it
      pieces.clear();
      pieces.push_back(std::move(piece));
      if (pre_tokenizer_) pre_tokenizer_->PreTokenize(&pieces, /*first_section=*/s == 0 && n == 0);
      for (const auto& word : pieces) model_->Encode(word, ids);
    }
  }
}

bool Tokenizer::Decodes(int32_t id, bool skip_special_tokens) const {
  return TokenText(id) != nullptr && !(skip_special_tokens && IsSpecial(id));
}

std::string Tokenizer::TokenBytes(int32_t id, bool first, bool skip_special_tokens) const {
  if (!Decodes(id, skip_special_tokens)) return "";
  std::string token = *TokenText(id);
  if (decoder_) {
    decoder_->Decode(&token, first);
  } else if (!first) {
    token.insert(0, " ");  // no decoder: tokens joined by spaces
  }
  return token;
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  bool first = true;
  for (int32_t id : ids) {
    if (!Decodes(id, skip_special_tokens)) continue;
    bytes += TokenBytes(id, first, skip_special_tokens);
    first = false;
  }
  std::string out;
  DrainUtf8(&bytes, /*final=*/true, &out);
  return out;
}

}  // namespace gantry::text
