#include "text/pre_tokenizer.h"

#include <cctype>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"
#include "text/component_list.h"
#include "text/regex.h"
#include "text/unicode.h"
#include "text/utf8.h"

namespace gantry::text {
namespace {

using nlohmann::json;

// GPT-2's pattern, used by ByteLevel when use_regex is set.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext };

// Splits each piece at the regex's matches according to `behavior`.
void SplitPieces(const Regex& regex, Behavior behavior, std::vector<std::string>* pieces) {
  std::vector<std::string> out;
  for (const std::string& piece : *pieces) {
    size_t last = 0;
    std::string carry;  // MergedWithNext: a match waiting for the next gap
    for (auto [begin, end] : regex.FindAll(piece)) {
      std::string gap = piece.substr(last, begin - last);
      std::string match = piece.substr(begin, end - begin);
      switch (behavior) {
        case Behavior::kRemoved:
          if (!gap.empty()) out.push_back(std::move(gap));
          break;
        case Behavior::kIsolated:
          if (!gap.empty()) out.push_back(std::move(gap));
          out.push_back(std::move(match));
          break;
        case Behavior::kMergedWithPrevious:
          out.push_back(gap + match);
          break;
        case Behavior::kMergedWithNext:
          if (!carry.empty() || !gap.empty()) out.push_back(carry + gap);
          carry = std::move(match);
          break;
      }
      last = end;
    }
    std::string tail = piece.substr(last);
    if (!carry.empty() || !tail.empty()) out.push_back(carry + tail);
  }
  *pieces = std::move(out);
}

class Split : public PreTokenizer {
 public:
  Split(std::unique_ptr<Regex> regex, Behavior behavior) : regex_(std::move(regex)), behavior_(behavior) {}
  void PreTokenize(std::vector<std::string>* pieces, bool) const override {
    SplitPieces(*regex_, behavior_, pieces);
  }

 private:
  std::unique_ptr<Regex> regex_;
  Behavior behavior_;
};

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  void PreTokenize(std::vector<std::string>* pieces, bool) const override {
    if (add_prefix_space_) {
      for (auto& piece : *pieces) {
        if (!piece.empty() && piece[0] != ' ') piece.insert(0, " ");
      }
    }
    if (regex_) SplitPieces(*regex_, Behavior::kIsolated, pieces);
    for (auto& piece : *pieces) piece = ByteLevelEncode(piece);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class Metaspace : public PreTokenizer {
 public:
  Metaspace(std::string replacement, std::string prepend_scheme, bool split)
      : replacement_(std::move(replacement)), prepend_scheme_(std::move(prepend_scheme)), split_(split) {}
  void PreTokenize(std::vector<std::string>* pieces, bool first_section) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < pieces->size(); ++i) {
      std::string piece = absl::StrReplaceAll((*pieces)[i], {{" ", replacement_}});
      const bool prepend = prepend_scheme_ == "always" || (prepend_scheme_ == "first" && first_section && i == 0);
      if (prepend && piece.compare(0, replacement_.size(), replacement_) != 0) piece.insert(0, replacement_);
      if (!split_) {
        out.push_back(std::move(piece));
        continue;
      }
      // Each word keeps the replacement character that starts it.
      size_t start = 0;
      for (size_t pos = piece.find(replacement_, 1); pos != std::string::npos;
           pos = piece.find(replacement_, pos + replacement_.size())) {
        out.push_back(piece.substr(start, pos - start));
        start = pos;
      }
      out.push_back(piece.substr(start));
    }
    *pieces = std::move(out);
  }

 private:
  std::string replacement_, prepend_scheme_;
  bool split_;
};

// Splits each piece at the code points `is_boundary` marks: whitespace
// boundaries are dropped, any other becomes a piece of its own.
template <typename IsBoundary>
void SplitAtBoundaries(std::vector<std::string>* pieces, IsBoundary is_boundary) {
  std::vector<std::string> out;
  for (const std::string& piece : *pieces) {
    size_t word_start = 0;
    for (size_t pos = 0; pos < piece.size();) {
      const size_t start = pos;
      const char32_t c = NextCodePoint(piece, &pos);
      if (!is_boundary(c)) continue;
      if (start > word_start) out.push_back(piece.substr(word_start, start - word_start));
      if (!IsWhitespace(c)) out.push_back(piece.substr(start, pos - start));
      word_start = pos;
    }
    if (word_start < piece.size()) out.push_back(piece.substr(word_start));
  }
  *pieces = std::move(out);
}

// BERT's: split at whitespace (dropped), then around each punctuation
// character (ASCII punctuation, symbols included, or Unicode P*).
class BertPreTokenizer : public PreTokenizer {
 public:
  void PreTokenize(std::vector<std::string>* pieces, bool) const override {
    SplitAtBoundaries(pieces, [](char32_t c) {
      return IsWhitespace(c) || (c < 0x80 ? std::ispunct(static_cast<int>(c)) != 0 : IsPunctuation(c));
    });
  }
};

// Split at whitespace (char::is_whitespace), which is dropped; what
// transformers 5 puts before Metaspace in XLM-R-style tokenizers.
class WhitespaceSplit : public PreTokenizer {
 public:
  void PreTokenize(std::vector<std::string>* pieces, bool) const override {
    SplitAtBoundaries(pieces, [](char32_t c) { return IsWhitespace(c); });
  }
};

class Sequence : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void PreTokenize(std::vector<std::string>* pieces, bool first_section) const override {
    for (const auto& step : steps_) step->PreTokenize(pieces, first_section);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

absl::StatusOr<Behavior> ParseBehavior(const std::string& name) {
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  return absl::UnimplementedError(absl::StrCat("Split behavior \"", name, "\" is not supported"));
}

// PCRE2 quoting for a literal pattern.
std::string QuoteLiteral(const std::string& text) {
  return "\\Q" + absl::StrReplaceAll(text, {{"\\E", "\\E\\\\E\\Q"}}) + "\\E";
}

}  // namespace

std::string ByteLevelEncode(const std::string& text) {
  std::string out;
  out.reserve(text.size() * 2);
  for (unsigned char c : text) AppendUtf8(ByteToCodePoint(c), &out);
  return out;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const json& config) {
  if (config.is_null()) return std::unique_ptr<PreTokenizer>();
  const std::string type = config.value("type", "");
  if (type == "Split") {
    const json& pattern = config.value("pattern", json::object());
    std::string source;
    if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
      source = pattern["Regex"].get<std::string>();
    } else if (pattern.contains("String") && pattern["String"].is_string()) {
      source = QuoteLiteral(pattern["String"].get<std::string>());
    } else {
      return absl::InvalidArgumentError("pre-tokenizer Split needs a String or Regex pattern");
    }
    if (config.value("invert", false)) {
      return absl::UnimplementedError("pre-tokenizer Split with invert: true is not supported");
    }
    auto behavior = ParseBehavior(config.value("behavior", "Isolated"));
    if (!behavior.ok()) return behavior.status();
    auto regex = Regex::Compile(source);
    if (!regex.ok()) return regex.status();
    return std::make_unique<Split>(*std::move(regex), *behavior);
  }
  if (type == "ByteLevel") {
    std::unique_ptr<Regex> regex;
    if (config.value("use_regex", true)) {
      auto compiled = Regex::Compile(kGpt2Pattern);
      if (!compiled.ok()) return compiled.status();
      regex = *std::move(compiled);
    }
    return std::make_unique<ByteLevel>(config.value("add_prefix_space", false), std::move(regex));
  }
  if (type == "Metaspace") {
    std::string scheme = config.value("prepend_scheme", "");
    if (scheme.empty()) scheme = config.value("add_prefix_space", true) ? "always" : "never";
    return std::make_unique<Metaspace>(config.value("replacement", "\xE2\x96\x81"), scheme,
                                       config.value("split", true));
  }
  if (type == "Digits") {
    auto regex = Regex::Compile(config.value("individual_digits", false) ? "\\p{Nd}" : "\\p{Nd}+");
    if (!regex.ok()) return regex.status();
    return std::make_unique<Split>(*std::move(regex), Behavior::kIsolated);
  }
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplit>();
  if (type == "Sequence") {
    auto steps = MakeComponents<PreTokenizer>(config.value("pretokenizers", json::array()), MakePreTokenizer);
    if (!steps.ok()) return steps.status();
    return std::make_unique<Sequence>(*std::move(steps));
  }
  return absl::UnimplementedError(absl::StrCat(
      "pre-tokenizer \"", type, "\" is not supported; supported: Split, ByteLevel, Metaspace, Digits, BertPreTokenizer, "
      "WhitespaceSplit, Sequence"));
}

}  // namespace gantry::text
