// A Chat request read for the chat template and for the reply: its messages
// as templates take them (content, content parts, tool calls, tool results),
// the tools offered, the template's extra variables, and, for a forced tool
// choice, the grammar that forces the call. Needs no model: refusals come
// before any load.
#ifndef GANTRY_SERVER_CHAT_REQUEST_H_
#define GANTRY_SERVER_CHAT_REQUEST_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "gantry/v1/gantry.pb.h"
#include "nlohmann/json.hpp"
#include "text/guided/grammar.h"

namespace gantry::server {

struct ChatSetup {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;            // null: none shown to the model
  nlohmann::ordered_json template_kwargs;  // null or an object
  v1::ToolChoice tool_choice = v1::TOOL_CHOICE_AUTO;
  std::string forced_function;  // TOOL_CHOICE_FUNCTION: the tool's name
  // TOOL_CHOICE_REQUIRED: a JSON list of {"name", "parameters"} objects, one
  // of the tools each; TOOL_CHOICE_FUNCTION: the tool's parameters; else the
  // request's own grammar (SamplingParameters.grammar), if any.
  std::optional<guided::GrammarSpec> grammar;
};

// INVALID_ARGUMENT naming the field for a message without a role, content
// both whole and in parts, a part that is not text, tool-call arguments that
// are not a JSON object, tools that are not a list of functions, a tool
// choice that names no given tool (or needs tools and has none), template
// variables that are not a JSON object, or a grammar beside a forced tool
// choice.
absl::StatusOr<ChatSetup> ReadChatSetup(const v1::ChatRequest& request);

// SamplingParameters.grammar as a spec; nullopt when unset. INVALID_ARGUMENT
// for an empty schema, regex or choice list.
absl::StatusOr<std::optional<guided::GrammarSpec>> GrammarSpecOf(const v1::Grammar& grammar);

}  // namespace gantry::server

#endif  // GANTRY_SERVER_CHAT_REQUEST_H_
