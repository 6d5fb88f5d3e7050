// Generated text (the input) split into reasoning, content and tool calls by
// every parser, fed whole and in chunks whose sizes the input's first bytes
// choose. Checked: no crash, no hang, no sanitizer finding. (Equal results
// for every cut hold for well-formed output, which chat_output_parser_test
// checks at every token boundary; after a malformed call they may differ,
// see the parser's header.)
#include <cstdint>
#include <string>

#include "text/chat_output_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  using gantry::text::ToolParserKind;
  const std::string text(reinterpret_cast<const char*>(data) + 2, size - 2);
  const size_t chunk = 1 + data[0] % 16;
  for (ToolParserKind kind : {ToolParserKind::kNone, ToolParserKind::kHermes, ToolParserKind::kLlama3Json,
                              ToolParserKind::kMistral, ToolParserKind::kDeepSeekV3}) {
    gantry::text::ChatOutputOptions options;
    options.tool_parser = kind;
    options.reasoning_parser = data[1] % 2 ? gantry::text::ReasoningParserKind::kThinkTags
                                           : gantry::text::ReasoningParserKind::kNone;
    options.starts_in_reasoning = data[1] % 4 == 3;
    int next_id = 0;
    options.tool_call_id_generator = [&next_id] { return "call_" + std::to_string(next_id++); };
    gantry::text::ChatOutputParser whole(options), pieces(options);
    next_id = 0;
    (void)whole.Feed(text);
    (void)whole.Finish();
    next_id = 0;
    for (size_t i = 0; i < text.size(); i += chunk) (void)pieces.Feed(text.substr(i, chunk));
    (void)pieces.Finish();
  }
  return 0;
}
