#include "server/chat_request.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "text/json_limits.h"

namespace gantry::server {
namespace {

using Json = nlohmann::ordered_json;

absl::StatusOr<Json> MessageJson(const v1::ChatMessage& m, int i) {
  const std::string where = absl::StrCat("messages[", i, "]");
  if (m.role().empty()) return absl::InvalidArgumentError(absl::StrCat(where, " needs a role"));
  Json out = {{"role", m.role()}};
  if (m.has_content() && m.content_parts_size() > 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, " has both content and content_parts"));
  }
  if (m.content_parts_size() > 0) {
    std::vector<std::string> texts;
    for (int j = 0; j < m.content_parts_size(); ++j) {
      const v1::ContentPart& part = m.content_parts(j);
      if (part.type() != "text") {
        return absl::InvalidArgumentError(absl::StrCat(where, ".content_parts[", j, "] has type \"", part.type(),
                                                       "\"; only \"text\" parts are supported"));
      }
      texts.push_back(part.text());
    }
    out["content"] = absl::StrJoin(texts, "\n");  // as vLLM joins text parts
  } else {
    out["content"] = m.has_content() ? Json(m.content()) : Json(nullptr);
  }
  if (m.tool_calls_size() > 0) {
    Json calls = Json::array();
    for (int j = 0; j < m.tool_calls_size(); ++j) {
      const v1::ToolCall& call = m.tool_calls(j);
      const std::string field = absl::StrCat(where, ".tool_calls[", j, "]");
      if (call.name().empty()) return absl::InvalidArgumentError(absl::StrCat(field, ".name is empty"));
      // Templates read the arguments as a mapping (transformers' convention).
      Json arguments = Json::object();
      if (!call.arguments().empty()) {
        auto parsed = text::ParseJsonLimited<Json>(call.arguments(), absl::StrCat(field, ".arguments"));
        if (!parsed.ok()) return parsed.status();
        arguments = *std::move(parsed);
        if (!arguments.is_object()) {
          return absl::InvalidArgumentError(absl::StrCat(field, ".arguments must be a JSON object"));
        }
      }
      calls.push_back({{"id", call.id()},
                       {"type", "function"},
                       {"function", {{"name", call.name()}, {"arguments", std::move(arguments)}}}});
    }
    out["tool_calls"] = std::move(calls);
  }
  if (!m.tool_call_id().empty()) out["tool_call_id"] = m.tool_call_id();
  if (!m.name().empty()) out["name"] = m.name();
  return out;
}

// The function of each tool (OpenAI's {"type": "function", "function": {...}}).
absl::Status CheckTools(const Json& tools) {
  if (!tools.is_array()) return absl::InvalidArgumentError("tools_json must be a JSON list of tool schemas");
  for (size_t i = 0; i < tools.size(); ++i) {
    const Json& tool = tools[i];
    const auto function = tool.is_object() ? tool.find("function") : tool.end();
    const bool typed_function = !tool.is_object() || !tool.contains("type") ||
                                (tool["type"].is_string() && tool["type"] == "function");
    if (!tool.is_object() || !typed_function || function == tool.end() ||
        !function->is_object() || !function->contains("name") || !(*function)["name"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tools_json[", i, "] must be {\"type\": \"function\", \"function\": {\"name\": ...}}"));
    }
    if (function->contains("parameters") && !(*function)["parameters"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("tools_json[", i, "].function.parameters must be a JSON Schema object"));
    }
  }
  return absl::OkStatus();
}

Json ParametersOf(const Json& tool) {
  const Json& function = tool["function"];
  return function.contains("parameters") ? function["parameters"] : Json{{"type", "object"}};
}

guided::GrammarSpec SchemaSpec(const Json& schema) {
  guided::GrammarSpec spec;
  spec.kind = guided::GrammarSpec::Kind::kJsonSchema;
  spec.json_schema = schema.dump();
  return spec;
}

}  // namespace

absl::StatusOr<std::optional<guided::GrammarSpec>> GrammarSpecOf(const v1::Grammar& grammar) {
  guided::GrammarSpec spec;
  switch (grammar.kind_case()) {
    case v1::Grammar::KIND_NOT_SET:
      return std::nullopt;
    case v1::Grammar::kJsonSchema:
      if (grammar.json_schema().empty()) return absl::InvalidArgumentError("grammar.json_schema is empty");
      spec.kind = guided::GrammarSpec::Kind::kJsonSchema;
      spec.json_schema = grammar.json_schema();
      break;
    case v1::Grammar::kJsonObject:
      if (!grammar.json_object()) return std::nullopt;
      spec.kind = guided::GrammarSpec::Kind::kAnyJson;
      break;
    case v1::Grammar::kRegex:
      if (grammar.regex().empty()) return absl::InvalidArgumentError("grammar.regex is empty");
      spec.kind = guided::GrammarSpec::Kind::kRegex;
      spec.regex = grammar.regex();
      break;
    case v1::Grammar::kChoice:
      if (grammar.choice().choices().empty()) return absl::InvalidArgumentError("grammar.choice lists no choices");
      spec.kind = guided::GrammarSpec::Kind::kChoice;
      spec.choices.assign(grammar.choice().choices().begin(), grammar.choice().choices().end());
      break;
  }
  return spec;
}

absl::StatusOr<ChatSetup> ReadChatSetup(const v1::ChatRequest& request) {
  ChatSetup setup;
  if (request.messages().empty()) return absl::InvalidArgumentError("messages must not be empty");
  for (int i = 0; i < request.messages_size(); ++i) {
    auto message = MessageJson(request.messages(i), i);
    if (!message.ok()) return message.status();
    setup.messages.push_back(*std::move(message));
  }
  Json tools = Json::array();
  if (!request.tools_json().empty()) {
    auto parsed = text::ParseJsonLimited<Json>(request.tools_json(), "tools_json");
    if (!parsed.ok()) return parsed.status();
    tools = *std::move(parsed);
    if (auto s = CheckTools(tools); !s.ok()) return s;
  }
  if (!request.chat_template_kwargs_json().empty()) {
    auto parsed = text::ParseJsonLimited<Json>(request.chat_template_kwargs_json(), "chat_template_kwargs_json");
    if (!parsed.ok()) return parsed.status();
    if (!parsed->is_object()) return absl::InvalidArgumentError("chat_template_kwargs_json must be a JSON object");
    setup.template_kwargs = *std::move(parsed);
  }
  auto own_grammar = GrammarSpecOf(request.parameters().grammar());
  if (!own_grammar.ok()) return own_grammar.status();
  setup.grammar = *std::move(own_grammar);

  setup.tool_choice = request.tool_choice();
  if (!request.tool_choice_function().empty() && setup.tool_choice != v1::TOOL_CHOICE_FUNCTION) {
    return absl::InvalidArgumentError("tool_choice_function is set but tool_choice is not TOOL_CHOICE_FUNCTION");
  }
  const bool forced = setup.tool_choice == v1::TOOL_CHOICE_REQUIRED || setup.tool_choice == v1::TOOL_CHOICE_FUNCTION;
  if (forced && tools.empty()) {
    return absl::InvalidArgumentError("tool_choice requires a tool call, but tools_json offers no tools");
  }
  if (forced && setup.grammar) {
    return absl::InvalidArgumentError(
        "a grammar (response_format) cannot be combined with a tool_choice that forces a call");
  }
  if (setup.tool_choice == v1::TOOL_CHOICE_FUNCTION) {
    std::vector<std::string> names;
    for (const Json& tool : tools) {
      const std::string name = tool["function"]["name"].get<std::string>();
      if (name == request.tool_choice_function()) {
        setup.forced_function = name;
        setup.grammar = SchemaSpec(ParametersOf(tool));
      }
      names.push_back(absl::StrCat("\"", name, "\""));
    }
    if (setup.forced_function.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tool_choice_function \"", request.tool_choice_function(),
                                                     "\" is not among the tools (", absl::StrJoin(names, ", "), ")"));
    }
  } else if (setup.tool_choice == v1::TOOL_CHOICE_REQUIRED) {
    // One or more calls, each naming a tool and following its parameters.
    Json any_of = Json::array();
    for (const Json& tool : tools) {
      any_of.push_back({{"type", "object"},
                        {"properties", {{"name", {{"const", tool["function"]["name"]}}}, {"parameters", ParametersOf(tool)}}},
                        {"required", {"name", "parameters"}}});
    }
    setup.grammar = SchemaSpec({{"type", "array"}, {"minItems", 1}, {"items", {{"anyOf", std::move(any_of)}}}});
  }
  if (setup.tool_choice != v1::TOOL_CHOICE_NONE && !tools.empty()) setup.tools = std::move(tools);
  return setup;
}

}  // namespace gantry::server
