#include "text/normalizer.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"
#include "text/component_list.h"
#include "text/precompiled_normalizer.h"
#include "text/regex.h"
#include "text/unicode.h"
#include "text/utf8.h"

namespace gantry::text {
namespace {

using nlohmann::json;

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void Normalize(std::string* text) const override { *text = NormalizeUnicode(*text, form_); }

 private:
  NormalForm form_;
};

void Lowercase(std::string* text) {
  std::string out;
  out.reserve(text->size());
  for (size_t pos = 0; pos < text->size();) AppendLowercase(NextCodePoint(*text, &pos), &out);
  *text = std::move(out);
}

// Drops nonspacing marks; after NFD that removes accents.
void RemoveNonspacingMarks(std::string* text) {
  std::string out;
  out.reserve(text->size());
  for (size_t pos = 0; pos < text->size();) {
    const char32_t c = NextCodePoint(*text, &pos);
    if (!IsNonspacingMark(c)) AppendUtf8(c, &out);
  }
  *text = std::move(out);
}

class LowercaseNormalizer : public Normalizer {
 public:
  void Normalize(std::string* text) const override { Lowercase(text); }
};

class StripAccents : public Normalizer {
 public:
  void Normalize(std::string* text) const override { RemoveNonspacingMarks(text); }
};

// BERT's normalizer: control characters out and whitespace to spaces
// (clean_text), spaces around CJK ideographs (handle_chinese_chars), NFD
// without nonspacing marks (strip_accents; null follows lowercase),
// lowercase.
class BertNormalizer : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool handle_chinese_chars, bool strip_accents, bool lowercase)
      : clean_text_(clean_text),
        handle_chinese_chars_(handle_chinese_chars),
        strip_accents_(strip_accents),
        lowercase_(lowercase) {}

  void Normalize(std::string* text) const override {
    if (clean_text_ || handle_chinese_chars_) {
      std::string out;
      out.reserve(text->size());
      for (size_t pos = 0; pos < text->size();) {
        const char32_t c = NextCodePoint(*text, &pos);
        if (clean_text_) {
          if (c == 0 || c == 0xFFFD || (c != '\t' && c != '\n' && c != '\r' && IsOther(c))) continue;
          if (IsWhitespace(c)) {
            out.push_back(' ');
            continue;
          }
        }
        if (handle_chinese_chars_ && IsChineseChar(c)) {
          out.push_back(' ');
          AppendUtf8(c, &out);
          out.push_back(' ');
          continue;
        }
        AppendUtf8(c, &out);
      }
      *text = std::move(out);
    }
    if (strip_accents_) {
      *text = NormalizeUnicode(*text, NormalForm::kNfd);
      RemoveNonspacingMarks(text);
    }
    if (lowercase_) Lowercase(text);
  }

 private:
  // The CJK ideograph blocks BERT spaces out (the reference's list, its
  // 0x2B920 start included).
  static bool IsChineseChar(char32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
  }

  bool clean_text_, handle_chinese_chars_, strip_accents_, lowercase_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ReplaceString : public Normalizer {
 public:
  ReplaceString(std::string pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Normalize(std::string* text) const override {
    if (!pattern_.empty()) *text = absl::StrReplaceAll(*text, {{pattern_, content_}});
  }

 private:
  std::string pattern_, content_;
};

class ReplaceRegex : public Normalizer {
 public:
  ReplaceRegex(std::unique_ptr<Regex> regex, std::string content)
      : regex_(std::move(regex)), content_(std::move(content)) {}
  void Normalize(std::string* text) const override {
    std::string out;
    size_t last = 0;
    for (auto [begin, end] : regex_->FindAll(*text)) {
      out.append(*text, last, begin - last);
      out += content_;
      last = end;
    }
    out.append(*text, last, std::string::npos);
    *text = std::move(out);
  }

 private:
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void Normalize(std::string* text) const override {
    std::vector<std::pair<size_t, char32_t>> cps;
    for (size_t pos = 0; pos < text->size();) {
      size_t start = pos;
      cps.emplace_back(start, NextCodePoint(*text, &pos));
    }
    size_t first = 0, last = cps.size();
    if (left_) while (first < last && IsWhitespace(cps[first].second)) ++first;
    if (right_) while (last > first && IsWhitespace(cps[last - 1].second)) --last;
    size_t begin = first < cps.size() ? cps[first].first : text->size();
    size_t end = last < cps.size() ? cps[last].first : text->size();
    *text = text->substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class Sequence : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void Normalize(std::string* text) const override {
    for (const auto& step : steps_) step->Normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

absl::StatusOr<std::string> StringField(const json& config, const char* key, const std::string& type) {
  auto it = config.find(key);
  if (it == config.end() || !it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("normalizer ", type, " needs a string \"", key, "\""));
  }
  return it->get<std::string>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const json& config) {
  if (config.is_null()) return std::unique_ptr<Normalizer>();
  const std::string type = config.value("type", "");
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkd);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "BertNormalizer") {
    const bool lowercase = config.value("lowercase", true);
    const json strip = config.value("strip_accents", json());
    return std::make_unique<BertNormalizer>(config.value("clean_text", true), config.value("handle_chinese_chars", true),
                                            strip.is_boolean() ? strip.get<bool>() : lowercase, lowercase);
  }
  if (type == "Precompiled") {
    const json charsmap = config.value("precompiled_charsmap", json());
    if (charsmap.is_null()) return MakePrecompiledNormalizer("");
    if (!charsmap.is_string()) {
      return absl::InvalidArgumentError("normalizer Precompiled needs a base64 precompiled_charsmap");
    }
    return MakePrecompiledNormalizer(charsmap.get<std::string>());
  }
  if (type == "Prepend") {
    auto prefix = StringField(config, "prepend", type);
    if (!prefix.ok()) return prefix.status();
    return std::make_unique<Prepend>(*prefix);
  }
  if (type == "Strip") {
    return std::make_unique<Strip>(config.value("strip_left", true), config.value("strip_right", true));
  }
  if (type == "Replace") {
    auto content = StringField(config, "content", type);
    if (!content.ok()) return content.status();
    const json& pattern = config.value("pattern", json::object());
    if (pattern.contains("String") && pattern["String"].is_string()) {
      return std::make_unique<ReplaceString>(pattern["String"].get<std::string>(), *content);
    }
    if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
      auto regex = Regex::Compile(pattern["Regex"].get<std::string>());
      if (!regex.ok()) return regex.status();
      return std::make_unique<ReplaceRegex>(*std::move(regex), *content);
    }
    return absl::InvalidArgumentError("normalizer Replace needs a String or Regex pattern");
  }
  if (type == "Sequence") {
    auto steps = MakeComponents<Normalizer>(config.value("normalizers", json::array()), MakeNormalizer);
    if (!steps.ok()) return steps.status();
    return std::make_unique<Sequence>(*std::move(steps));
  }
  return absl::UnimplementedError(absl::StrCat(
      "normalizer \"", type, "\" is not supported; supported: NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, "
      "BertNormalizer, Precompiled, Prepend, Replace, Strip, Sequence"));
}

}  // namespace gantry::text
