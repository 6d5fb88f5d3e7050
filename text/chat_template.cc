#include "text/chat_template.h"

#include <cctype>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gantry::text {

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(const std::string& source, std::string bos_token,
                                                                   std::string eos_token) {
  std::unique_ptr<ChatTemplate> chat(new ChatTemplate());
  chat->bos_token_ = std::move(bos_token);
  chat->eos_token_ = std::move(eos_token);
  if (!source.empty()) {
    auto parsed = jinja::Template::Parse(source);
    if (!parsed.ok()) return parsed.status();
    chat->template_ = *std::move(parsed);
  }
  return chat;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                                 const nlohmann::ordered_json& tools,
                                                 const nlohmann::ordered_json& variables) const {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages must be a list");
  if (!variables.is_null() && !variables.is_object()) {
    return absl::InvalidArgumentError("template variables must be a JSON object");
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "] needs a string \"role\""));
    }
  }
  if (template_ == nullptr) {
    std::string out;
    for (const auto& m : messages) {
      std::string role = m["role"].get<std::string>();
      if (!role.empty()) role[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(role[0])));
      const auto& content = m.contains("content") ? m["content"] : nlohmann::ordered_json();
      absl::StrAppend(&out, role, ": ", content.is_string() ? content.get<std::string>() : content.dump(), "\n\n");
    }
    if (add_generation_prompt) out += "Assistant:";
    return out;
  }
  nlohmann::ordered_json context = {
      {"messages", messages},
      {"add_generation_prompt", add_generation_prompt},
      {"bos_token", bos_token_},
      {"eos_token", eos_token_},
  };
  if (!tools.is_null()) context["tools"] = tools;
  if (variables.is_object()) {
    for (const auto& [name, value] : variables.items()) {
      if (context.contains(name) || name == "tools") {
        return absl::InvalidArgumentError(absl::StrCat("template variable \"", name, "\" is set by the server"));
      }
      context[name] = value;
    }
  }
  return template_->Render(context);
}

}  // namespace gantry::text
