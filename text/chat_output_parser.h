// Splits a chat model's generated text, as it streams, into reasoning,
// content and tool calls: what an OpenAI-compatible reply carries as
// reasoning_content, content and tool_calls. Torch-free.
//
//   ChatOutputOptions options;
//   options.tool_parser = DetectToolParser(tokenizer.chat_template());
//   options.reasoning_parser = DetectReasoningParser(tokenizer.chat_template());
//   options.starts_in_reasoning = PromptEndsInReasoning(prompt, options.reasoning_parser);
//   ChatOutputParser parser(options);
//   for (each generated text chunk) send(parser.Feed(chunk));
//   send(parser.Finish());   // finish_reason "tool_calls" when parser.has_tool_calls()
//
// The text must include the special tokens' texts the model emitted
// ([TOOL_CALLS], <|python_tag|>, DeepSeek's markers): decode with
// skip_special_tokens=false while a tool parser is on. Turn the tool parser
// on only for requests that offer tools: with kLlama3Json a reply that
// starts with a JSON object naming a function is a call.
#ifndef GANTRY_TEXT_CHAT_OUTPUT_PARSER_H_
#define GANTRY_TEXT_CHAT_OUTPUT_PARSER_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "text/reasoning_parser.h"
#include "text/tool_call_parser.h"

namespace gantry::text {

struct ChatDelta {
  std::string content;    // for message.content
  std::string reasoning;  // for reasoning_content
  // A call's first delta carries index, id and name (type "function" is
  // implied) and the arguments so far; later ones the index and more
  // arguments. Concatenating a call's fragments gives its arguments.
  std::vector<ToolCallDelta> tool_calls;
  bool empty() const { return content.empty() && reasoning.empty() && tool_calls.empty(); }
};

struct ChatOutputOptions {
  ToolParserKind tool_parser = ToolParserKind::kNone;  // kNone: tool-call markup stays content
  ReasoningParserKind reasoning_parser = ReasoningParserKind::kNone;
  bool starts_in_reasoning = false;  // see PromptEndsInReasoning
  // Makes call ids; empty: RandomToolCallId(tool_parser).
  ToolCallIdGenerator tool_call_id_generator;
};

class ChatOutputParser {
 public:
  explicit ChatOutputParser(ChatOutputOptions options);

  // `text`: the next chunk of generated text, whole UTF-8 characters. Returns
  // what can be released now. Text that may still be the start of a marker
  // is held back, at most the longest marker; a tool call's name and the
  // JSON around its arguments wait until complete, while its arguments
  // stream as they are generated. Reasoning never goes into content, and
  // markup inside reasoning is not a tool call.
  ChatDelta Feed(absl::string_view text);
  // End of generation: releases what was held. A call whose JSON is
  // incomplete or invalid becomes content (its raw text) if none of it was
  // streamed yet; one that breaks after its first delta went out (cut off
  // by max_tokens, say) cannot be taken back from the stream, but is left
  // out of tool_calls() and its raw text is in content().
  ChatDelta Finish();

  // Everything so far, whole (for replies that are not streamed).
  const std::string& content() const { return content_; }
  const std::string& reasoning() const { return reasoning_; }
  const std::vector<ToolCall>& tool_calls() const { return tools_.calls(); }
  // The reply's finish_reason becomes "tool_calls".
  bool has_tool_calls() const { return !tools_.calls().empty(); }

 private:
  ChatDelta Next(absl::string_view text, bool finish);

  ReasoningSplitter reasoning_splitter_;
  ToolCallParser tools_;
  std::string content_, reasoning_;
};

}  // namespace gantry::text

#endif  // GANTRY_TEXT_CHAT_OUTPUT_PARSER_H_
