// Reasoning blocks in a chat model's output: <think>...</think> (Qwen3,
// DeepSeek-R1 and models trained like them). ReasoningSplitter separates a
// streamed reply into its reasoning and the rest; ChatOutputParser
// (text/chat_output_parser.h) runs it before the tool-call parser, so markup
// inside reasoning is never a tool call.
#ifndef GANTRY_TEXT_REASONING_PARSER_H_
#define GANTRY_TEXT_REASONING_PARSER_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gantry::text {

enum class ReasoningParserKind {
  kNone,
  kThinkTags,  // <think>...</think>
};

// "qwen3", "deepseek_r1", "think" -> kThinkTags; "none" or "" -> kNone.
// INVALID_ARGUMENT listing the known names otherwise.
absl::StatusOr<ReasoningParserKind> ReasoningParserFromName(absl::string_view name);

// kThinkTags when the chat template writes or reads <think>...</think> blocks.
ReasoningParserKind DetectReasoningParser(absl::string_view chat_template);

// True when `prompt` (the rendered prompt, generation prompt included) ends
// inside an open reasoning block, so the model's output starts in reasoning:
// DeepSeek-R1 and Qwen3-Thinking templates end with "<think>\n". Qwen3 with
// enable_thinking=false ends with a closed, empty block: false.
bool PromptEndsInReasoning(absl::string_view prompt, ReasoningParserKind kind);

// Streams a reply apart into reasoning and the rest. With kThinkTags a reply
// that begins (after whitespace) with <think> is reasoning up to </think>; a
// reply that starts in reasoning (`starts_in_reasoning`) is reasoning up to
// the first </think> (a repeated <think> at its start is dropped). Reasoning
// is kept as generated; newlines right after </think> are dropped (the Qwen3
// template writes "</think>\n\n" and strips them when it reads a reply back).
// A reply that does not begin with <think> has no reasoning: a later <think>
// or </think> in it is ordinary text. Output that ends before </think> is all
// reasoning.
class ReasoningSplitter {
 public:
  ReasoningSplitter(ReasoningParserKind kind, bool starts_in_reasoning);

  // Appends what is settled to `*reasoning` and `*reply`. Holds back at most
  // a marker's length (plus the whitespace before an opening <think>).
  void Feed(absl::string_view text, std::string* reasoning, std::string* reply);
  // End of the reply: releases what was held.
  void Finish(std::string* reasoning, std::string* reply);

 private:
  enum class State {
    kOpening,     // before the first non-whitespace: is it <think>?
    kReasoning,   // inside the block, looking for </think>
    kAfterClose,  // just after </think>: newlines are dropped
    kReply,       // everything is reply text
  };

  State state_;
  bool starts_in_reasoning_;
  std::string held_;
};

}  // namespace gantry::text

#endif  // GANTRY_TEXT_REASONING_PARSER_H_
