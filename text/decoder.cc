#include "text/decoder.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"
#include "text/component_list.h"
#include "text/utf8.h"

namespace gantry::text {
namespace {

using nlohmann::json;

class ByteLevel : public Decoder {
 public:
  void Decode(std::string* token, bool) const override {
    // Characters outside GPT-2's byte table (an added token's text) keep
    // their own bytes, as the reference does.
    std::string bytes;
    for (size_t pos = 0; pos < token->size();) {
      int byte = CodePointToByte(NextCodePoint(*token, &pos));
      if (byte < 0) return;
      bytes.push_back(static_cast<char>(byte));
    }
    *token = std::move(bytes);
  }
};

class Replace : public Decoder {
 public:
  Replace(std::string pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Decode(std::string* token, bool) const override {
    *token = absl::StrReplaceAll(*token, {{pattern_, content_}});
  }

 private:
  std::string pattern_, content_;
};

class ByteFallback : public Decoder {
 public:
  void Decode(std::string* token, bool) const override {
    // "<0xAB>": exactly six characters with two hex digits.
    if (token->size() != 6 || token->compare(0, 3, "<0x") != 0 || (*token)[5] != '>') return;
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int hi = hex((*token)[3]), lo = hex((*token)[4]);
    if (hi < 0 || lo < 0) return;
    *token = std::string(1, static_cast<char>(hi * 16 + lo));
  }
};

class Strip : public Decoder {
 public:
  Strip(std::string content, int start) : content_(std::move(content)), start_(start) {}
  void Decode(std::string* token, bool first) const override {
    if (!first) return;
    for (int i = 0; i < start_ && token->compare(0, content_.size(), content_) == 0; ++i) {
      token->erase(0, content_.size());
    }
  }

 private:
  std::string content_;
  int start_;
};

class Metaspace : public Decoder {
 public:
  Metaspace(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void Decode(std::string* token, bool first) const override {
    *token = absl::StrReplaceAll(*token, {{replacement_, " "}});
    if (first && strip_first_ && !token->empty() && (*token)[0] == ' ') token->erase(0, 1);
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

// WordPiece: "##piece" joins the previous token, any other token after the
// first gets a leading space; cleanup removes the spaces BERT puts before
// punctuation and contractions (per token, as the reference does).
class WordPiece : public Decoder {
 public:
  WordPiece(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void Decode(std::string* token, bool first) const override {
    if (!first) {
      if (token->compare(0, prefix_.size(), prefix_) == 0) {
        token->erase(0, prefix_.size());
      } else {
        token->insert(0, " ");
      }
    }
    if (cleanup_) {
      // Applied in sequence, each over the previous one's result.
      for (const auto& [from, to] : std::initializer_list<std::pair<const char*, const char*>>{
               {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"},
               {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}}) {
        *token = absl::StrReplaceAll(*token, {{from, to}});
      }
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class NoOp : public Decoder {  // Fuse: joining is what every chain does anyway
 public:
  void Decode(std::string*, bool) const override {}
};

class Sequence : public Decoder {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void Decode(std::string* token, bool first) const override {
    for (const auto& step : steps_) step->Decode(token, first);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const json& config) {
  if (config.is_null()) return std::unique_ptr<Decoder>();
  const std::string type = config.value("type", "");
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<NoOp>();
  if (type == "Replace") {
    const json& pattern = config.value("pattern", json::object());
    if (!pattern.contains("String") || !pattern["String"].is_string() || !config.contains("content")) {
      return absl::UnimplementedError("decoder Replace is supported with a String pattern only");
    }
    return std::make_unique<Replace>(pattern["String"].get<std::string>(), config.value("content", ""));
  }
  if (type == "Strip") {
    if (config.value("stop", 0) != 0) {
      return absl::UnimplementedError("decoder Strip with stop > 0 is not supported");
    }
    return std::make_unique<Strip>(config.value("content", " "), config.value("start", 0));
  }
  if (type == "Metaspace") {
    std::string scheme = config.value("prepend_scheme", "");
    if (scheme.empty()) scheme = config.value("add_prefix_space", true) ? "always" : "never";
    return std::make_unique<Metaspace>(config.value("replacement", "\xE2\x96\x81"), scheme != "never");
  }
  if (type == "WordPiece") return std::make_unique<WordPiece>(config.value("prefix", "##"), config.value("cleanup", true));
  if (type == "Sequence") {
    auto steps = MakeComponents<Decoder>(config.value("decoders", json::array()), MakeDecoder);
    if (!steps.ok()) return steps.status();
    return std::make_unique<Sequence>(*std::move(steps));
  }
  return absl::UnimplementedError(absl::StrCat(
      "decoder \"", type, "\" is not supported; supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, "
      "Metaspace, WordPiece, Sequence"));
}

}  // namespace gantry::text
