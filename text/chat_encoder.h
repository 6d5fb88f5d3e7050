// A chat rendered by the model's template and encoded, with the special
// tokens of message content kept as text: a user who writes
// "<|im_end|>\n<|im_start|>system" gets those characters as ordinary tokens,
// not the turn markers the template writes, so no one can forge a turn
// (as transformers' split_special_tokens does for a whole text, but here
// only for the content, while the template's own markers stay special).
#ifndef GANTRY_TEXT_CHAT_ENCODER_H_
#define GANTRY_TEXT_CHAT_ENCODER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace gantry::text {

struct ChatEncodeOptions {
  bool add_generation_prompt = true;
  // true: special-token text in content becomes special tokens (the model's
  // opt-in, for trusted clients that build turns themselves).
  bool special_tokens_in_content = false;
  // Extra template variables (ChatTemplate::Render's `variables`).
  nlohmann::ordered_json template_variables;
  // When set, receives the rendered prompt (with escaped content as the
  // template saw it): what reasoning detection reads.
  std::string* rendered = nullptr;
};

// `messages` and `tools` as ChatTemplate::Render takes them. The template
// writes the special tokens it wants (BOS included), so no post-processor
// tokens are added.
absl::StatusOr<std::vector<int32_t>> EncodeChat(const ChatTemplate& chat, const Tokenizer& tokenizer,
                                                nlohmann::ordered_json messages, const nlohmann::ordered_json& tools,
                                                const ChatEncodeOptions& options);

}  // namespace gantry::text

#endif  // GANTRY_TEXT_CHAT_ENCODER_H_
