#include "text/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"
#include "text/component_list.h"
#include "text/regex.h"
#include "text/utf8.h"

namespace gantry::text {
namespace {

using nlohmann::json;

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(utf8proc_option_t options) : options_(options) {}
  void Normalize(std::string* text) const override {
    utf8proc_uint8_t* result = nullptr;
    utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text->data()),
                                      static_cast<utf8proc_ssize_t>(text->size()), &result,
                                      static_cast<utf8proc_option_t>(options_ | UTF8PROC_STABLE));
    if (n >= 0) text->assign(reinterpret_cast<char*>(result), static_cast<size_t>(n));
    std::free(result);
  }

 private:
  utf8proc_option_t options_;
};

class Lowercase : public Normalizer {
 public:
  void Normalize(std::string* text) const override {
    std::string out;
    out.reserve(text->size());
    for (size_t pos = 0; pos < text->size();) {
      AppendUtf8(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(NextCodePoint(*text, &pos)))),
                 &out);
    }
    *text = std::move(out);
  }
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
    // Unicode whitespace, as Rust's char::is_whitespace.
    auto is_space = [](char32_t c) {
      return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
             (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
             c == 0x3000;
    };
    std::vector<std::pair<size_t, char32_t>> cps;
    for (size_t pos = 0; pos < text->size();) {
      size_t start = pos;
      cps.emplace_back(start, NextCodePoint(*text, &pos));
    }
    size_t first = 0, last = cps.size();
    if (left_) while (first < last && is_space(cps[first].second)) ++first;
    if (right_) while (last > first && is_space(cps[last - 1].second)) --last;
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
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UTF8PROC_COMPOSE);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(UTF8PROC_DECOMPOSE);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(static_cast<utf8proc_option_t>(UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
  if (type == "Lowercase") return std::make_unique<Lowercase>();
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
      "normalizer \"", type, "\" is not supported; supported: NFC, NFD, NFKC, NFKD, Lowercase, Prepend, "
      "Replace, Strip, Sequence"));
}

}  // namespace gantry::text
