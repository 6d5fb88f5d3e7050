#include "text/chat_output_parser.h"

#include <utility>

namespace gantry::text {

ChatOutputParser::ChatOutputParser(ChatOutputOptions options)
    : reasoning_splitter_(options.reasoning_parser, options.starts_in_reasoning),
      tools_(options.tool_parser, std::move(options.tool_call_id_generator)) {}

ChatDelta ChatOutputParser::Feed(absl::string_view text) { return Next(text, /*finish=*/false); }

ChatDelta ChatOutputParser::Finish() { return Next({}, /*finish=*/true); }

ChatDelta ChatOutputParser::Next(absl::string_view text, bool finish) {
  ChatDelta delta;
  std::string reply;
  ToolCallParser::Output out;
  if (finish) {
    reasoning_splitter_.Finish(&delta.reasoning, &reply);
    tools_.Feed(reply, &out);
    tools_.Finish(&out);
  } else {
    reasoning_splitter_.Feed(text, &delta.reasoning, &reply);
    tools_.Feed(reply, &out);
  }
  reasoning_ += delta.reasoning;
  content_ += out.whole_content;
  delta.content = std::move(out.content);
  delta.tool_calls = std::move(out.tool_calls);
  return delta;
}

}  // namespace gantry::text
