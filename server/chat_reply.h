// A chat's generated text made into what its reply carries: content,
// reasoning and tool calls. With tools offered (or a reasoning model) the
// text goes through the model's output parser (text/chat_output_parser.h);
// under a forced tool choice the grammar made the text one JSON value — the
// named tool's arguments, or a list of {"name", "parameters"} calls — which
// becomes the calls, streamed as they form.
#ifndef GANTRY_SERVER_CHAT_REPLY_H_
#define GANTRY_SERVER_CHAT_REPLY_H_

#include <memory>
#include <string>

#include "gantry/v1/gantry.pb.h"
#include "scheduler/request_stream.h"
#include "text/chat_output_parser.h"
#include "text/json_scanner.h"

namespace gantry::server {

class ChatReply {
 public:
  struct Options {
    text::ChatOutputOptions parse;  // for TOOL_CHOICE_AUTO and NONE
    v1::ToolChoice tool_choice = v1::TOOL_CHOICE_AUTO;
    std::string forced_function;  // TOOL_CHOICE_FUNCTION
  };
  explicit ChatReply(Options options);

  // Replaces `out`'s text (filled from `event`) with the reply's content and
  // sets reasoning_text and tool_calls; on the last event, a reply that
  // made calls and stopped by itself finishes with TOOL_CALLS.
  void Shape(const scheduler::StreamEvent& event, v1::GenerateResponse* out);

 private:
  text::ChatDelta Next(const std::string& text, bool last);
  // TOOL_CHOICE_FUNCTION: the text is the arguments.
  text::ChatDelta NextArguments(const std::string& text);
  // TOOL_CHOICE_REQUIRED: each complete list element is one call.
  text::ChatDelta NextListedCalls(const std::string& text);

  Options options_;
  text::ToolCallIdGenerator make_id_;
  std::unique_ptr<text::ChatOutputParser> parser_;  // AUTO and NONE
  bool made_calls_ = false;
  // TOOL_CHOICE_REQUIRED's reading of the list: the element being scanned.
  bool list_open_ = false;
  std::string element_;
  text::JsonScanner scanner_;
  int next_index_ = 0;
};

}  // namespace gantry::server

#endif  // GANTRY_SERVER_CHAT_REPLY_H_
