#include "server/chat_reply.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "nlohmann/json.hpp"

namespace gantry::server {

ChatReply::ChatReply(Options options) : options_(std::move(options)) {
  make_id_ = options_.parse.tool_call_id_generator;
  if (!make_id_) {
    const text::ToolParserKind kind = options_.parse.tool_parser;
    make_id_ = [kind] { return text::RandomToolCallId(kind); };
  }
  if (options_.tool_choice != v1::TOOL_CHOICE_REQUIRED && options_.tool_choice != v1::TOOL_CHOICE_FUNCTION) {
    parser_ = std::make_unique<text::ChatOutputParser>(options_.parse);
  }
}

text::ChatDelta ChatReply::NextArguments(const std::string& text) {
  text::ChatDelta delta;
  if (text.empty()) return delta;
  text::ToolCallDelta call;
  if (!made_calls_) {
    call.id = make_id_();
    call.name = options_.forced_function;
    made_calls_ = true;
  }
  call.arguments = text;
  delta.tool_calls.push_back(std::move(call));
  return delta;
}

text::ChatDelta ChatReply::NextListedCalls(const std::string& text) {
  text::ChatDelta delta;
  for (char c : text) {
    if (!list_open_) {
      list_open_ = c == '[';
      continue;
    }
    if (element_.empty()) {
      // Between elements: the grammar allows only spaces, commas and the end.
      if (c == ' ' || c == ',' || c == ']' || absl::ascii_isspace(static_cast<unsigned char>(c))) continue;
      scanner_.Reset();
    }
    element_ += c;
    if (scanner_.Feed(c) != text::JsonScanner::Result::kDone) continue;
    auto element = nlohmann::ordered_json::parse(element_, nullptr, /*allow_exceptions=*/false);
    element_.clear();
    if (!element.is_object() || !element.contains("name") || !element["name"].is_string()) continue;
    text::ToolCallDelta call;
    call.index = next_index_++;
    call.id = make_id_();
    call.name = element["name"].get<std::string>();
    call.arguments = element.contains("parameters") ? element["parameters"].dump() : "{}";
    delta.tool_calls.push_back(std::move(call));
    made_calls_ = true;
  }
  return delta;
}

text::ChatDelta ChatReply::Next(const std::string& text, bool last) {
  switch (options_.tool_choice) {
    case v1::TOOL_CHOICE_FUNCTION:
      return NextArguments(text);
    case v1::TOOL_CHOICE_REQUIRED:
      return NextListedCalls(text);
    default: {
      text::ChatDelta delta = parser_->Feed(text);
      if (last) {
        text::ChatDelta rest = parser_->Finish();
        delta.content += rest.content;
        delta.reasoning += rest.reasoning;
        for (auto& call : rest.tool_calls) delta.tool_calls.push_back(std::move(call));
      }
      made_calls_ = parser_->has_tool_calls();
      return delta;
    }
  }
}

void ChatReply::Shape(const scheduler::StreamEvent& event, v1::GenerateResponse* out) {
  const bool last = event.last();
  text::ChatDelta delta = Next(event.text, last);
  out->set_text(std::move(delta.content));
  out->set_reasoning_text(std::move(delta.reasoning));
  for (text::ToolCallDelta& call : delta.tool_calls) {
    v1::ToolCallDelta* d = out->add_tool_calls();
    d->set_index(static_cast<uint32_t>(call.index));
    d->set_id(std::move(call.id));
    d->set_name(std::move(call.name));
    d->set_arguments(std::move(call.arguments));
  }
  if (last && event.reason == scheduler::FinishReason::kStop && made_calls_) {
    out->set_finish_reason(v1::FINISH_REASON_TOOL_CALLS);
  }
}

}  // namespace gantry::server
