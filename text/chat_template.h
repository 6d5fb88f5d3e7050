// A model's chat template: its own Jinja `chat_template`, or, for a model
// without one, Gantry's plain format:
//
//   {Role}: {content}\n\n     for each message ("System", "User", "Assistant",
//                             or the role name capitalised), then
//   Assistant:                when add_generation_prompt is set.
#ifndef GANTRY_TEXT_CHAT_TEMPLATE_H_
#define GANTRY_TEXT_CHAT_TEMPLATE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "text/jinja.h"

namespace gantry::text {

class ChatTemplate {
 public:
  // An empty `source` gives the plain format. Errors name the construct and line.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(const std::string& source, std::string bos_token,
                                                              std::string eos_token);

  // `messages`: a list of objects with "role" and "content" (and whatever else
  // the template reads, e.g. tool_calls). `tools`: null or a list of tool
  // schemas. `variables`: null or an object of extra template variables
  // (chat_template_kwargs, e.g. enable_thinking); they may not replace the
  // ones above. Errors: INVALID_ARGUMENT naming what is wrong.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                     const nlohmann::ordered_json& tools = nullptr,
                                     const nlohmann::ordered_json& variables = nullptr) const;

  bool is_plain() const { return template_ == nullptr; }

 private:
  ChatTemplate() = default;
  std::unique_ptr<jinja::Template> template_;
  std::string bos_token_, eos_token_;
};

}  // namespace gantry::text

#endif  // GANTRY_TEXT_CHAT_TEMPLATE_H_
