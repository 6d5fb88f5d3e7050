// A chat template (the input) parsed and rendered over a fixed conversation.
#include <cstdint>
#include <string>

#include "text/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  auto chat = gantry::text::ChatTemplate::Create(source, "<s>", "</s>");
  if (!chat.ok()) return 0;
  static const nlohmann::ordered_json messages = nlohmann::ordered_json::parse(
      R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|im_start|> there"},
          {"role": "assistant", "content": "<think>x</think>Hello", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
          {"role": "tool", "content": "42"}])");
  static const nlohmann::ordered_json tools = nlohmann::ordered_json::parse(
      R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])");
  (void)(*chat)->Render(messages, true, tools);
  return 0;
}
