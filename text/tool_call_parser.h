// Tool calls in a chat model's output, streamed: the formats of Hermes and
// Qwen2.5/Qwen3 (<tool_call>{...}</tool_call>), Llama 3.1/3.2 JSON, Mistral
// ([TOOL_CALLS][...] and [TOOL_CALLS]name[ARGS]{...}) and DeepSeek-V3
// (<｜tool▁calls▁begin｜>...). ToolCallParser takes the reply text (after
// any reasoning, see text/reasoning_parser.h) and releases content and tool
// call deltas as soon as they are settled; ChatOutputParser
// (text/chat_output_parser.h) is the combined API.
#ifndef GANTRY_TEXT_TOOL_CALL_PARSER_H_
#define GANTRY_TEXT_TOOL_CALL_PARSER_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "text/json_scanner.h"

namespace gantry::text {

enum class ToolParserKind {
  kNone,
  // <tool_call>{"name": .., "arguments": {..}}</tool_call>: Hermes, Qwen2.5, Qwen3.
  kHermes,
  // {"name": .., "parameters": {..}} at the start of the reply, possibly
  // after <|python_tag|>; several separated by ';'. Llama 3.1/3.2/3.3.
  kLlama3Json,
  // [TOOL_CALLS][{"name": .., "arguments": {..}}, ...] and the newer
  // [TOOL_CALLS]name[ARGS]{..} (optionally name[CALL_ID]id[ARGS]{..}).
  kMistral,
  // <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{..}\n```<｜tool▁call▁end｜>
  // ...<｜tool▁calls▁end｜>, and DeepSeek-V3.1's
  // <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{..}<｜tool▁call▁end｜>.
  kDeepSeekV3,
};

// Names as a model config gives them: "hermes", "qwen", "qwen2_5", "qwen3"
// -> kHermes; "llama3_json", "llama3", "llama" -> kLlama3Json; "mistral";
// "deepseek_v3"; "none" or "" -> kNone. INVALID_ARGUMENT listing the known
// names otherwise.
absl::StatusOr<ToolParserKind> ToolParserFromName(absl::string_view name);

// The format a chat template renders tool calls in (kNone when it renders
// none that is known).
ToolParserKind DetectToolParser(absl::string_view chat_template);

struct ToolCallDelta {
  int index = 0;          // the call's position among this reply's calls, from 0
  std::string id;         // on the call's first delta only
  std::string name;       // on the call's first delta only
  std::string arguments;  // a fragment of the arguments' JSON object text
};

struct ToolCall {
  std::string id, name;
  std::string arguments;  // JSON object text
};

// Makes the id of each call. The default (empty function) gives "call_" and
// 24 random alphanumerics, or for kMistral 9 random alphanumerics: Mistral's
// templates refuse other ids when the calls come back in the history.
using ToolCallIdGenerator = std::function<std::string()>;
std::string RandomToolCallId(ToolParserKind kind);

class ToolCallParser {
 public:
  struct Output {
    std::string content;        // streamed content
    std::vector<ToolCallDelta> tool_calls;
    // The content of the whole reply: `content`, plus the raw text of a call
    // that broke after it had been streamed (not in calls()).
    std::string whole_content;
  };

  ToolCallParser(ToolParserKind kind, ToolCallIdGenerator id_generator);

  // Appends to `*out` what `text` settles. Text that may still begin a
  // marker waits (at most a marker's length); so do a call's name and the
  // JSON around its arguments until they are complete. Arguments stream as
  // they arrive once the name is known.
  void Feed(absl::string_view text, Output* out);
  // End of the reply. A call that is incomplete or unparsable before any of
  // it was streamed becomes content (its raw text).
  void Finish(Output* out);

  // The complete calls so far.
  const std::vector<ToolCall>& calls() const { return calls_; }

 private:
  enum class State;
  enum class Step;
  enum class ObjectState;

  void Run(Output* out);
  Step StepOnce(Output* out);
  // The input ended in a state that waits for more.
  Step EndOfInput(Output* out);

  Step Content(Output* out);
  // Llama, at the start and after a call.
  Step LlamaStart(Output* out);
  Step BetweenCalls(Output* out);
  Step ObjectStep(Output* out);
  Step ArgumentsStart(Output* out);
  Step Arguments(Output* out);
  Step AfterCall(Output* out);
  Step MistralStart();
  Step MistralName(Output* out);
  Step MistralListNext();
  Step DeepSeekSection(Output* out);
  Step DeepSeekType(Output* out);
  Step DeepSeekName(Output* out);
  Step DeepSeekFence(Output* out);
  Step DeepSeekAfterArgs();

  absl::string_view Rest() const { return absl::string_view(buf_).substr(pos_); }
  // Moves the cursor over `n` bytes of the call's markup (kept in raw_).
  void Consume(size_t n);
  void SkipWhitespace();
  void EmitContent(Output* out, absl::string_view text);
  void ResetCall();
  // A call starts with a marker of `marker_length` bytes at the cursor.
  void StartCall(size_t marker_length, State state);
  // The arguments value comes next; `after`: the state once it is read.
  void StartArguments(State after);
  void MaybeCommit(Output* out);
  void SendArguments(Output* out);
  Step CompleteCall(Output* out, State after);
  // The markup is not a valid call: its text becomes content.
  Step Invalid(Output* out);

  ToolParserKind kind_;
  ToolCallIdGenerator id_generator_;
  State state_;
  std::string buf_;  // input not yet consumed, from pos_
  size_t pos_ = 0;
  bool eof_ = false;

  // The call being read.
  std::string raw_;           // markup consumed since the last settled point
  size_t marker_length_ = 0;  // raw_'s leading marker: content if the call is abandoned
  ObjectState object_state_;
  bool in_list_ = false;  // Mistral: inside [TOOL_CALLS][...]
  std::string key_, name_, label_;
  std::string arguments_;  // the arguments' text read so far
  bool have_arguments_ = false;
  bool committed_ = false;  // the call's first delta went out
  size_t arguments_sent_ = 0;
  std::string id_;
  State after_arguments_;
  bool fence_closed_ = false;
  JsonScanner scanner_;

  int next_index_ = 0;
  std::vector<ToolCall> calls_;
};

}  // namespace gantry::text

#endif  // GANTRY_TEXT_TOOL_CALL_PARSER_H_
