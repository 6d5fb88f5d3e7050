#include "text/chat_encoder.h"

#include <random>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace gantry::text {
namespace {

// Special-token text in content is replaced, before rendering, by a marker
// the template passes through untouched (private-use characters around
// digits: no case change, trim or split on ordinary text alters them); the
// rendered prompt is encoded piece by piece, each marker as its original
// text with special tokens split.
constexpr char kOpen[] = "\xEF\xA3\xB0";   // U+F8F0
constexpr char kClose[] = "\xEF\xA3\xB1";  // U+F8F1
constexpr size_t kCloseSize = sizeof(kClose) - 1;

class Escaper {
 public:
  Escaper(std::vector<std::string> specials, uint64_t nonce)
      : specials_(std::move(specials)), prefix_(absl::StrCat(kOpen, nonce, ":")) {}

  // `text` with every special token's text (leftmost, longest) replaced by a marker.
  std::string Escape(const std::string& text) {
    std::string out;
    size_t pos = 0, copied = 0;
    while (pos < text.size()) {
      const std::string* match = nullptr;
      for (const auto& special : specials_) {
        if (text.compare(pos, special.size(), special) == 0 && (match == nullptr || special.size() > match->size())) {
          match = &special;
        }
      }
      if (match == nullptr) {
        ++pos;
        continue;
      }
      out.append(text, copied, pos - copied);
      absl::StrAppend(&out, prefix_, originals_.size(), kClose);
      originals_.push_back(*match);
      pos += match->size();
      copied = pos;
    }
    out.append(text, copied, std::string::npos);
    return out;
  }

  void EscapeContent(nlohmann::ordered_json& message) {
    if (!message.is_object() || !message.contains("content")) return;
    nlohmann::ordered_json& content = message["content"];
    if (content.is_string()) {
      content = Escape(content.get<std::string>());
    } else if (content.is_array()) {
      for (auto& part : content) {
        if (part.is_object() && part.contains("text") && part["text"].is_string()) {
          part["text"] = Escape(part["text"].get<std::string>());
        }
      }
    }
    // Tool-call arguments are client text too (templates write them as JSON).
    if (message.contains("tool_calls") && message["tool_calls"].is_array()) {
      for (auto& call : message["tool_calls"]) {
        if (call.is_object() && call.contains("function") && call["function"].is_object() &&
            call["function"].contains("arguments")) {
          EscapeStrings(call["function"]["arguments"]);
        }
      }
    }
  }

  // Every string inside `value`, keys included.
  void EscapeStrings(nlohmann::ordered_json& value) {
    if (value.is_string()) {
      value = Escape(value.get<std::string>());
    } else if (value.is_array()) {
      for (auto& item : value) EscapeStrings(item);
    } else if (value.is_object()) {
      nlohmann::ordered_json escaped = nlohmann::ordered_json::object();
      for (auto& [key, item] : value.items()) {
        EscapeStrings(item);
        escaped[Escape(key)] = std::move(item);
      }
      value = std::move(escaped);
    }
  }

  bool escaped_any() const { return !originals_.empty(); }

  // Encodes the rendered prompt: ordinary pieces as the tokenizer does,
  // markers as their original text with special tokens split.
  absl::StatusOr<std::vector<int32_t>> Encode(const Tokenizer& tokenizer, const std::string& prompt) const {
    std::vector<int32_t> ids;
    auto append = [&](absl::string_view text, bool split) -> absl::Status {
      if (text.empty()) return absl::OkStatus();
      auto piece = tokenizer.Encode(text, /*add_special_tokens=*/false, split);
      if (!piece.ok()) return piece.status();
      ids.insert(ids.end(), piece->begin(), piece->end());
      return absl::OkStatus();
    };
    size_t pos = 0;
    while (true) {
      const size_t start = prompt.find(prefix_, pos);
      if (start == std::string::npos) break;
      const size_t digits = start + prefix_.size();
      const size_t end = prompt.find(kClose, digits);
      size_t index = 0;
      if (end == std::string::npos || !absl::SimpleAtoi(absl::string_view(prompt).substr(digits, end - digits), &index) ||
          index >= originals_.size()) {
        return absl::InvalidArgumentError(
            "the chat template altered message content in a way that keeping its special tokens as text cannot "
            "follow; the model's special_tokens_in_content option turns the protection off");
      }
      if (auto s = append(absl::string_view(prompt).substr(pos, start - pos), false); !s.ok()) return s;
      if (auto s = append(originals_[index], true); !s.ok()) return s;
      pos = end + kCloseSize;
    }
    if (auto s = append(absl::string_view(prompt).substr(pos), false); !s.ok()) return s;
    return ids;
  }

 private:
  std::vector<std::string> specials_;
  std::string prefix_;
  std::vector<std::string> originals_;
};

}  // namespace

absl::StatusOr<std::vector<int32_t>> EncodeChat(const ChatTemplate& chat, const Tokenizer& tokenizer,
                                                nlohmann::ordered_json messages, const nlohmann::ordered_json& tools,
                                                const ChatEncodeOptions& options) {
  std::vector<std::string> specials = tokenizer.SpecialTokenTexts();
  if (options.special_tokens_in_content || specials.empty()) {
    auto prompt = chat.Render(messages, options.add_generation_prompt, tools, options.template_variables);
    if (!prompt.ok()) return prompt.status();
    if (options.rendered != nullptr) *options.rendered = *prompt;
    return tokenizer.Encode(*prompt, /*add_special_tokens=*/false);
  }
  std::random_device random;
  const uint64_t nonce = (static_cast<uint64_t>(random()) << 32) | random();
  Escaper escaper(std::move(specials), nonce);
  if (messages.is_array()) {
    for (auto& message : messages) escaper.EscapeContent(message);
  }
  auto prompt = chat.Render(messages, options.add_generation_prompt, tools, options.template_variables);
  if (!prompt.ok()) return prompt.status();
  if (options.rendered != nullptr) *options.rendered = *prompt;
  if (!escaper.escaped_any()) return tokenizer.Encode(*prompt, /*add_special_tokens=*/false);
  return escaper.Encode(tokenizer, *prompt);
}

}  // namespace gantry::text
