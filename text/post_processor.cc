#include "text/post_processor.h"

#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "text/component_list.h"

namespace gantry::text {
namespace {

using nlohmann::json;

Encoding Specials(const std::vector<int32_t>& ids, int32_t type_id) {
  return Encoding{ids, std::vector<int32_t>(ids.size(), type_id)};
}

void SetTypeIds(Encoding* encoding, int32_t type_id) { encoding->type_ids.assign(encoding->ids.size(), type_id); }

class TemplateProcessing : public PostProcessor {
 public:
  // One template piece: a sequence (0 for $A, 1 for $B) or special token ids.
  struct Piece {
    int sequence = -1;
    std::vector<int32_t> ids;
    int32_t type_id = 0;
  };
  TemplateProcessing(std::vector<Piece> single, std::vector<Piece> pair, bool has_pair)
      : single_(std::move(single)), pair_(std::move(pair)), has_pair_(has_pair) {}

  absl::Status Process(std::vector<Encoding>* encodings, bool add_special_tokens) const override {
    const bool is_pair = encodings->size() == 2;
    if (is_pair && !has_pair_) {
      return absl::InvalidArgumentError("this tokenizer's TemplateProcessing has no pair template");
    }
    std::vector<Encoding> out;
    for (const Piece& piece : is_pair ? pair_ : single_) {
      if (piece.sequence >= 0) {
        if (piece.sequence >= static_cast<int>(encodings->size())) continue;
        out.push_back((*encodings)[piece.sequence]);
        SetTypeIds(&out.back(), piece.type_id);
      } else if (add_special_tokens) {
        out.push_back(Specials(piece.ids, piece.type_id));
      }
    }
    *encodings = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::vector<Piece> single_, pair_;
  bool has_pair_;
};

// BertProcessing: [CLS] A [SEP] (type 0) B [SEP] (type 1). RobertaProcessing:
// <s> A </s> </s> B </s>, every type id 0 (also without special tokens).
class ClsSepProcessing : public PostProcessor {
 public:
  ClsSepProcessing(int32_t cls, int32_t sep, bool roberta) : cls_(cls), sep_(sep), roberta_(roberta) {}

  absl::Status Process(std::vector<Encoding>* encodings, bool add_special_tokens) const override {
    if (roberta_) {
      for (auto& encoding : *encodings) SetTypeIds(&encoding, 0);
    }
    if (!add_special_tokens) return absl::OkStatus();
    std::vector<Encoding> out;
    out.push_back(Specials({cls_}, 0));
    out.push_back(std::move((*encodings)[0]));
    out.push_back(Specials({sep_}, 0));
    if (encodings->size() == 2) {
      const int32_t type_id = roberta_ ? 0 : 1;
      if (roberta_) out.push_back(Specials({sep_}, 0));
      out.push_back(std::move((*encodings)[1]));
      SetTypeIds(&out.back(), type_id);
      out.push_back(Specials({sep_}, type_id));
    }
    *encodings = std::move(out);
    return absl::OkStatus();
  }

 private:
  int32_t cls_, sep_;
  bool roberta_;
};

class NoOp : public PostProcessor {  // ByteLevel: offsets only
 public:
  absl::Status Process(std::vector<Encoding>*, bool) const override { return absl::OkStatus(); }
};

class Sequence : public PostProcessor {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PostProcessor>> steps) : steps_(std::move(steps)) {}
  absl::Status Process(std::vector<Encoding>* encodings, bool add_special_tokens) const override {
    for (const auto& step : steps_) {
      if (auto s = step->Process(encodings, add_special_tokens); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

absl::StatusOr<std::vector<TemplateProcessing::Piece>> ParseTemplate(
    const json& pieces, const absl::flat_hash_map<std::string, std::vector<int32_t>>& specials) {
  std::vector<TemplateProcessing::Piece> out;
  if (!pieces.is_array()) return out;
  for (const auto& piece : pieces) {
    TemplateProcessing::Piece parsed;
    if (piece.contains("Sequence")) {
      const json& sequence = piece["Sequence"];
      parsed.sequence = sequence.value("id", "A") == "B" ? 1 : 0;
      parsed.type_id = sequence.value("type_id", 0);
    } else {
      const json& special = piece.value("SpecialToken", json::object());
      const std::string name = special.value("id", "");
      auto it = specials.find(name);
      if (it == specials.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("TemplateProcessing names special token \"", name, "\" without ids"));
      }
      parsed.ids = it->second;
      parsed.type_id = special.value("type_id", 0);
    }
    out.push_back(std::move(parsed));
  }
  return out;
}

// BertProcessing's "cls"/"sep": ["[CLS]", 101].
absl::StatusOr<int32_t> TokenPairId(const json& config, const char* key, const std::string& type) {
  const json pair = config.value(key, json());
  if (!pair.is_array() || pair.size() != 2 || !pair[1].is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat("post-processor ", type, " needs \"", key, "\": [token, id]"));
  }
  return pair[1].get<int32_t>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(const json& config) {
  if (config.is_null()) return std::unique_ptr<PostProcessor>();
  const std::string type = config.value("type", "");
  if (type == "ByteLevel") return std::make_unique<NoOp>();
  if (type == "TemplateProcessing") {
    absl::flat_hash_map<std::string, std::vector<int32_t>> specials;
    const json special_tokens = config.value("special_tokens", json::object());
    for (auto it = special_tokens.begin(); it != special_tokens.end(); ++it) {
      const json ids = it->is_object() ? it->value("ids", json::array()) : json::array();
      for (const auto& id : ids) specials[it.key()].push_back(id.get<int32_t>());
    }
    auto single = ParseTemplate(config.value("single", json()), specials);
    if (!single.ok()) return single.status();
    const json pair_config = config.value("pair", json());
    auto pair = ParseTemplate(pair_config, specials);
    if (!pair.ok()) return pair.status();
    return std::make_unique<TemplateProcessing>(*std::move(single), *std::move(pair), pair_config.is_array());
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto cls = TokenPairId(config, "cls", type);
    if (!cls.ok()) return cls.status();
    auto sep = TokenPairId(config, "sep", type);
    if (!sep.ok()) return sep.status();
    return std::make_unique<ClsSepProcessing>(*cls, *sep, type == "RobertaProcessing");
  }
  if (type == "Sequence") {
    auto steps = MakeComponents<PostProcessor>(config.value("processors", json::array()), MakePostProcessor);
    if (!steps.ok()) return steps.status();
    return std::make_unique<Sequence>(*std::move(steps));
  }
  return absl::UnimplementedError(absl::StrCat("post-processor \"", type,
                                               "\" is not supported; supported: TemplateProcessing, BertProcessing, "
                                               "RobertaProcessing, ByteLevel, Sequence"));
}

}  // namespace gantry::text
