#include "adapter/openai_api.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gantry::adapter {

namespace {

using nlohmann::json;

ApiError Invalid(std::string param, std::string message) {
  ApiError e;
  e.http_status = 400;
  e.param = std::move(param);
  e.message = std::move(message);
  return e;
}

// Typed readers: absent or null leaves `out` alone; a wrong type is an error
// naming the field.
std::optional<ApiError> ReadNumber(const json& body, const char* key, std::optional<double>* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return Invalid(key, absl::StrCat("'", key, "' must be a number"));
  *out = it->get<double>();
  return std::nullopt;
}

std::optional<ApiError> ReadInteger(const json& body, const char* key, std::optional<int64_t>* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer()) return Invalid(key, absl::StrCat("'", key, "' must be an integer"));
  *out = it->get<int64_t>();
  return std::nullopt;
}

std::optional<ApiError> ReadBool(const json& body, const char* key, bool* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return Invalid(key, absl::StrCat("'", key, "' must be true or false"));
  *out = it->get<bool>();
  return std::nullopt;
}

// The body is an object with a "model" name; every endpoint starts here.
std::optional<ApiError> ReadModel(const json& body, std::string* model) {
  if (!body.is_object()) return Invalid("", "the request body must be a JSON object");
  auto it = body.find("model");
  if (it == body.end() || !it->is_string() || it->get<std::string>().empty()) {
    return Invalid("model", "'model' is required: a model name from GET /v1/models");
  }
  *model = it->get<std::string>();
  return std::nullopt;
}

std::optional<ApiError> ReadUser(const json& body) {
  if (auto user = body.find("user"); user != body.end() && !user->is_null() && !user->is_string()) {
    return Invalid("user", "'user' must be a string");
  }
  return std::nullopt;
}

// A JSON value's type in words, for messages.
std::string TypeName(const json& value) {
  if (value.is_string()) return "a string";
  if (value.is_number_integer()) return "an integer";
  if (value.is_number()) return "a number";
  if (value.is_boolean()) return "a boolean";
  if (value.is_array()) return "a list";
  if (value.is_object()) return "an object";
  return "null";
}

// A token id (0 to INT32_MAX) at `where`; unsigned JSON integers above
// INT64_MAX would read back negative, so both signednesses are checked.
std::optional<ApiError> ReadTokenId(const json& t, const std::string& where, const std::string& param,
                                    uint32_t* out) {
  if (!t.is_number_integer()) {
    return Invalid(param, absl::StrCat(where, " is ", TypeName(t), "; a token id (an integer from 0 to ", INT32_MAX,
                                       ") was expected"));
  }
  const bool in_range = t.is_number_unsigned() ? t.get<uint64_t>() <= INT32_MAX
                                               : t.get<int64_t>() >= 0 && t.get<int64_t>() <= INT32_MAX;
  if (!in_range) return Invalid(param, absl::StrCat(where, " = ", t.dump(), " is not a token id (0 to ", INT32_MAX, ")"));
  *out = static_cast<uint32_t>(t.get<int64_t>());
  return std::nullopt;
}

// JSON numbers are doubles; a float32 written with the shortest digits that
// read back as the same float keeps vectors half as long as its double's
// 17 digits ("0.1", not "0.10000000149011612").
json ShortFloat(float value) {
  if (!std::isfinite(value)) return nullptr;  // JSON has no NaN; never expected from a normalized encoder
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer) - 1, value);
  if (ec != std::errc()) return static_cast<double>(value);
  *end = '\0';
  return std::strtod(buffer, nullptr);
}

// What /v1/chat/completions and /v1/completions share.
std::optional<ApiError> ParseCommon(const json& body, v1::SamplingParameters* p, ReplyOptions* options) {
  if (auto e = ReadModel(body, &options->model)) return e;
  if (auto e = ReadBool(body, "stream", &options->stream)) return e;
  if (auto so = body.find("stream_options"); so != body.end() && !so->is_null()) {
    if (!so->is_object()) return Invalid("stream_options", "'stream_options' must be an object");
    if (auto e = ReadBool(*so, "include_usage", &options->include_usage)) return e;
  }
  std::optional<int64_t> n, max_tokens, max_completion_tokens, seed, top_k;
  if (auto e = ReadInteger(body, "n", &n)) return e;
  if (n && *n != 1) return Invalid("n", "only n = 1 is supported");
  if (auto e = ReadInteger(body, "max_tokens", &max_tokens)) return e;
  if (auto e = ReadInteger(body, "max_completion_tokens", &max_completion_tokens)) return e;
  if (max_completion_tokens) max_tokens = max_completion_tokens;
  if (max_tokens) {
    if (*max_tokens < 1) return Invalid("max_tokens", "'max_tokens' must be at least 1");
    p->set_max_tokens(static_cast<uint32_t>(std::min<int64_t>(*max_tokens, UINT32_MAX)));
  }
  if (auto e = ReadInteger(body, "seed", &seed)) return e;
  if (seed) p->set_seed(static_cast<uint64_t>(*seed));
  struct Float {
    const char* key;
    void (v1::SamplingParameters::*set)(float);
  };
  for (const Float& f : {Float{"temperature", &v1::SamplingParameters::set_temperature},
                         Float{"top_p", &v1::SamplingParameters::set_top_p},
                         Float{"presence_penalty", &v1::SamplingParameters::set_presence_penalty},
                         Float{"frequency_penalty", &v1::SamplingParameters::set_frequency_penalty},
                         // Not OpenAI's, but vLLM's clients send them.
                         Float{"min_p", &v1::SamplingParameters::set_min_p},
                         Float{"repetition_penalty", &v1::SamplingParameters::set_repetition_penalty}}) {
    std::optional<double> value;
    if (auto e = ReadNumber(body, f.key, &value)) return e;
    if (value) (p->*f.set)(static_cast<float>(*value));
  }
  if (auto e = ReadInteger(body, "top_k", &top_k)) return e;
  if (top_k && *top_k < -1) {
    return Invalid("top_k", absl::StrCat("'top_k' must be -1 or 0 (off) or a positive count, got ", *top_k));
  }
  if (top_k && *top_k > 0) p->set_top_k(static_cast<uint32_t>(std::min<int64_t>(*top_k, UINT32_MAX)));
  if (auto bias = body.find("logit_bias"); bias != body.end() && !bias->is_null()) {
    // {"token id": bias}; the server checks the ranges against the model.
    if (!bias->is_object()) return Invalid("logit_bias", "'logit_bias' must be an object mapping token ids to biases");
    for (const auto& [key, value] : bias->items()) {
      int64_t token = -1;
      if (!absl::SimpleAtoi(key, &token) || token < 0 || token > INT32_MAX) {
        return Invalid("logit_bias", absl::StrCat("logit_bias: key \"", key, "\" is not a token id (0 to ", INT32_MAX, ")"));
      }
      if (!value.is_number()) {
        return Invalid("logit_bias", absl::StrCat("logit_bias: the bias of token ", key, " is ", TypeName(value),
                                                  "; a number from -100 to 100 was expected"));
      }
      (*p->mutable_logit_bias())[static_cast<uint32_t>(token)] = static_cast<float>(value.get<double>());
    }
  }
  if (auto stop = body.find("stop"); stop != body.end() && !stop->is_null()) {
    if (stop->is_string()) {
      p->add_stop(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const auto& s : *stop) {
        if (!s.is_string()) return Invalid("stop", "'stop' must be a string or a list of strings");
        p->add_stop(s.get<std::string>());
      }
    } else {
      return Invalid("stop", "'stop' must be a string or a list of strings");
    }
  }
  if (auto e = ReadUser(body)) return e;
  return std::nullopt;
}

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_TOOL_CALLS: return "tool_calls";
    default: return "stop";
  }
}

json UsageJson(const v1::Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens()},
          {"completion_tokens", usage.completion_tokens()},
          {"total_tokens", usage.prompt_tokens() + usage.completion_tokens()},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_prompt_tokens()}}}};
}

json Bytes(const std::string& text) {
  json bytes = json::array();
  for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return bytes;
}

// Chat logprobs entries for the tokens of one response.
void AppendChatLogprobs(const v1::GenerateResponse& response, json* content) {
  for (const auto& lp : response.logprobs()) {
    json top = json::array();
    for (const auto& alt : lp.top_logprobs()) {
      top.push_back({{"token", alt.text()}, {"logprob", alt.logprob()}, {"bytes", Bytes(alt.text())}});
    }
    content->push_back(
        {{"token", lp.text()}, {"logprob", lp.logprob()}, {"bytes", Bytes(lp.text())}, {"top_logprobs", top}});
  }
}

// Completions (legacy) logprobs: parallel lists.
void AppendCompletionLogprobs(const v1::GenerateResponse& response, int64_t* text_offset, json* logprobs) {
  if (logprobs->is_null()) {
    *logprobs = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
                 {"text_offset", json::array()}};
  }
  for (const auto& lp : response.logprobs()) {
    (*logprobs)["tokens"].push_back(lp.text());
    (*logprobs)["token_logprobs"].push_back(lp.logprob());
    json top = json::object();
    for (const auto& alt : lp.top_logprobs()) top[alt.text()] = alt.logprob();
    (*logprobs)["top_logprobs"].push_back(top);
    (*logprobs)["text_offset"].push_back(*text_offset);
    *text_offset += static_cast<int64_t>(lp.text().size());
  }
}

}  // namespace

json ApiError::ToJson() const {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

std::string StatusReason(const grpc::Status& status) {
  google::rpc::Status details;
  if (status.error_details().empty() || !details.ParseFromString(status.error_details())) return "";
  for (const auto& any : details.details()) {
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&info)) return info.reason();
  }
  return "";
}

ApiError FromGrpc(const grpc::Status& status) {
  ApiError e;
  e.message = status.error_message();
  auto set = [&e](int http_status, const char* type, const char* code) {
    e.http_status = http_status;
    e.type = type;
    e.code = code;
  };
  constexpr const char* kInvalid = "invalid_request_error";
  // The server's typed reason decides (server/status_util.h); the gRPC code
  // only for errors without one (e.g. from the channel itself).
  const std::string reason = StatusReason(status);
  if (reason == "QUEUE_FULL") {
    set(429, "rate_limit_exceeded", "queue_full");
  } else if (reason == "CONTEXT_LENGTH") {
    set(400, kInvalid, "context_length_exceeded");
  } else if (reason == "KV_CAPACITY") {
    set(400, kInvalid, "kv_capacity_exceeded");
  } else if (reason == "MEMORY_BUDGET" || reason == "DEVICE_MEMORY") {
    set(503, "server_error", "insufficient_memory");
  } else if (reason == "MODEL_LOAD_FAILED") {
    set(503, "server_error", "model_load_failed");
  } else if (reason == "MODEL_NOT_FOUND") {
    set(404, kInvalid, "model_not_found");
  } else if (reason == "SHUTTING_DOWN") {
    set(503, "server_error", "shutting_down");
  } else if (reason == "INVALID_REQUEST") {
    set(400, kInvalid, "");
  } else if (reason == "UNSUPPORTED") {
    set(400, kInvalid, "unsupported");
  } else {
    switch (status.error_code()) {
      case grpc::StatusCode::NOT_FOUND: set(404, kInvalid, ""); break;
      case grpc::StatusCode::INVALID_ARGUMENT:
      case grpc::StatusCode::FAILED_PRECONDITION:
      case grpc::StatusCode::OUT_OF_RANGE: set(400, kInvalid, ""); break;
      // Without a reason it is not the server's refusal but the channel's
      // message size limit: the request is too large.
      case grpc::StatusCode::RESOURCE_EXHAUSTED: set(413, kInvalid, "request_too_large"); break;
      case grpc::StatusCode::UNAVAILABLE: set(503, "server_error", "unavailable"); break;
      case grpc::StatusCode::DEADLINE_EXCEEDED: set(504, "server_error", "timeout"); break;
      case grpc::StatusCode::UNAUTHENTICATED: set(401, kInvalid, "invalid_api_key"); break;
      default: set(500, "server_error", ""); break;
    }
  }
  return e;
}


using ojson = nlohmann::ordered_json;

namespace {

// One message's content (a string, or a list of parts the server checks),
// tool calls, tool_call_id and name.
std::optional<ApiError> ParseChatMessage(const ojson& m, const std::string& where, v1::ChatMessage* out) {
  const ojson content = m.value("content", ojson(nullptr));
  if (content.is_string()) {
    out->set_content(content.get<std::string>());
  } else if (content.is_array()) {
    for (size_t j = 0; j < content.size(); ++j) {
      const ojson& part = content[j];
      const std::string field = absl::StrCat(where, ".content[", j, "]");
      if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
        return Invalid(field, absl::StrCat(field, " needs a 'type' string"));
      }
      v1::ContentPart* out_part = out->add_content_parts();
      out_part->set_type(part["type"].get<std::string>());
      if (part.contains("text") && part["text"].is_string()) out_part->set_text(part["text"].get<std::string>());
    }
  } else if (!content.is_null()) {
    return Invalid(where + ".content", absl::StrCat(where, ".content must be a string or a list of content parts"));
  }
  if (auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null()) {
    if (!calls->is_array()) return Invalid(where + ".tool_calls", absl::StrCat(where, ".tool_calls must be a list"));
    for (size_t j = 0; j < calls->size(); ++j) {
      const ojson& call = (*calls)[j];
      const std::string field = absl::StrCat(where, ".tool_calls[", j, "]");
      const auto function = call.is_object() ? call.find("function") : call.end();
      if (function == call.end() || !function->is_object() || !function->contains("name") ||
          !(*function)["name"].is_string()) {
        return Invalid(field, absl::StrCat(field, " must be {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}"));
      }
      v1::ToolCall* out_call = out->add_tool_calls();
      if (call.contains("id") && call["id"].is_string()) out_call->set_id(call["id"].get<std::string>());
      out_call->set_name((*function)["name"].get<std::string>());
      const ojson arguments = function->value("arguments", ojson(nullptr));
      // OpenAI sends the arguments as JSON text; some clients send the object.
      if (arguments.is_string()) {
        out_call->set_arguments(arguments.get<std::string>());
      } else if (arguments.is_object()) {
        out_call->set_arguments(arguments.dump());
      } else if (!arguments.is_null()) {
        return Invalid(field, absl::StrCat(field, ".function.arguments must be a JSON string"));
      }
    }
  }
  for (const char* key : {"tool_call_id", "name"}) {
    auto value = m.find(key);
    if (value == m.end() || value->is_null()) continue;
    if (!value->is_string()) return Invalid(where + "." + key, absl::StrCat(where, ".", key, " must be a string"));
    if (std::string(key) == "name") {
      out->set_name(value->get<std::string>());
    } else {
      out->set_tool_call_id(value->get<std::string>());
    }
  }
  return std::nullopt;
}

// "tools" and "tool_choice": none, auto, required, or {"type": "function",
// "function": {"name"}}.
std::optional<ApiError> ParseTools(const ojson& body, v1::ChatRequest* request) {
  if (auto tools = body.find("tools"); tools != body.end() && !tools->is_null()) {
    if (!tools->is_array()) return Invalid("tools", "'tools' must be a list of tools");
    if (!tools->empty()) request->set_tools_json(tools->dump());
  }
  auto choice = body.find("tool_choice");
  if (choice == body.end() || choice->is_null()) return std::nullopt;
  if (choice->is_string()) {
    const std::string mode = choice->get<std::string>();
    if (mode == "none") {
      request->set_tool_choice(v1::TOOL_CHOICE_NONE);
    } else if (mode == "auto") {
      request->set_tool_choice(v1::TOOL_CHOICE_AUTO);
    } else if (mode == "required") {
      request->set_tool_choice(v1::TOOL_CHOICE_REQUIRED);
    } else {
      return Invalid("tool_choice", absl::StrCat("'tool_choice' \"", mode, "\" is not none, auto or required"));
    }
    return std::nullopt;
  }
  const auto function = choice->is_object() ? choice->find("function") : choice->end();
  if (function == choice->end() || !function->is_object() || !function->contains("name") ||
      !(*function)["name"].is_string()) {
    return Invalid("tool_choice",
                   "'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}");
  }
  request->set_tool_choice(v1::TOOL_CHOICE_FUNCTION);
  request->set_tool_choice_function((*function)["name"].get<std::string>());
  return std::nullopt;
}

// "response_format" (text, json_object, json_schema) and vLLM's guided_json,
// guided_regex and guided_choice.
std::optional<ApiError> ParseGrammar(const ojson& body, v1::Grammar* grammar) {
  int set = 0;
  if (auto format = body.find("response_format"); format != body.end() && !format->is_null()) {
    const std::string type = format->is_object() && format->contains("type") && (*format)["type"].is_string()
                                 ? (*format)["type"].get<std::string>()
                                 : "";
    if (type == "json_object") {
      grammar->set_json_object(true);
      ++set;
    } else if (type == "json_schema") {
      const ojson spec = format->value("json_schema", ojson(nullptr));
      if (!spec.is_object() || !spec.contains("schema") || !spec["schema"].is_object()) {
        return Invalid("response_format", "response_format json_schema needs {\"json_schema\": {\"schema\": {...}}}");
      }
      grammar->set_json_schema(spec["schema"].dump());
      ++set;
    } else if (type != "text") {
      return Invalid("response_format", "'response_format' type must be text, json_object or json_schema");
    }
  }
  if (auto schema = body.find("guided_json"); schema != body.end() && !schema->is_null()) {
    grammar->set_json_schema(schema->is_string() ? schema->get<std::string>() : schema->dump());
    ++set;
  }
  if (auto regex = body.find("guided_regex"); regex != body.end() && !regex->is_null()) {
    if (!regex->is_string()) return Invalid("guided_regex", "'guided_regex' must be a string");
    grammar->set_regex(regex->get<std::string>());
    ++set;
  }
  if (auto choice = body.find("guided_choice"); choice != body.end() && !choice->is_null()) {
    if (!choice->is_array() || choice->empty() ||
        !std::all_of(choice->begin(), choice->end(), [](const ojson& c) { return c.is_string(); })) {
      return Invalid("guided_choice", "'guided_choice' must be a non-empty list of strings");
    }
    for (const ojson& c : *choice) grammar->mutable_choice()->add_choices(c.get<std::string>());
    ++set;
  }
  if (set > 1) {
    return Invalid("response_format", "use one of response_format, guided_json, guided_regex and guided_choice");
  }
  return std::nullopt;
}

}  // namespace

std::optional<ApiError> ParseChatRequest(const ojson& body, v1::ChatRequest* request, ReplyOptions* options) {
  options->endpoint = Endpoint::kChat;
  if (auto e = ParseCommon(body, request->mutable_parameters(), options)) return e;
  request->set_model(options->model);
  auto messages = body.find("messages");
  if (messages == body.end() || !messages->is_array() || messages->empty()) {
    return Invalid("messages", "'messages' must be a non-empty list");
  }
  for (size_t i = 0; i < messages->size(); ++i) {
    const ojson& m = (*messages)[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return Invalid(where, absl::StrCat(where, " needs a 'role' string"));
    }
    v1::ChatMessage* out = request->add_messages();
    out->set_role(m["role"].get<std::string>());
    if (auto e = ParseChatMessage(m, where, out)) return e;
  }
  // Audio replies would otherwise come back as text without a word.
  if (auto modalities = body.find("modalities"); modalities != body.end() && !modalities->is_null()) {
    if (!modalities->is_array()) return Invalid("modalities", "'modalities' must be a list such as [\"text\"]");
    for (const auto& m : *modalities) {
      if (!m.is_string() || m.get<std::string>() != "text") {
        return Invalid("modalities", absl::StrCat("only \"text\" output is supported, not ", m.dump()));
      }
    }
  }
  if (auto audio = body.find("audio"); audio != body.end() && !audio->is_null()) {
    return Invalid("audio", "audio output is not supported");
  }
  if (auto e = ParseTools(body, request)) return e;
  if (auto e = ParseGrammar(body, request->mutable_parameters()->mutable_grammar())) return e;
  if (auto kwargs = body.find("chat_template_kwargs"); kwargs != body.end() && !kwargs->is_null()) {
    if (!kwargs->is_object()) return Invalid("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    request->set_chat_template_kwargs_json(kwargs->dump());
  }
  if (auto e = ReadBool(body, "logprobs", &options->logprobs)) return e;
  std::optional<int64_t> top;
  if (auto e = ReadInteger(body, "top_logprobs", &top)) return e;
  if (top) {
    if (*top < 0 || *top > 20) return Invalid("top_logprobs", "'top_logprobs' must be between 0 and 20");
    if (!options->logprobs) return Invalid("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    options->top_logprobs = static_cast<int>(*top);
  }
  request->mutable_parameters()->set_logprobs(options->logprobs);
  request->mutable_parameters()->set_top_logprobs(static_cast<uint32_t>(options->top_logprobs));
  return std::nullopt;
}

std::optional<ApiError> ParseCompletionRequest(const json& body, v1::GenerateRequest* request,
                                               ReplyOptions* options) {
  options->endpoint = Endpoint::kCompletions;
  if (auto e = ParseCommon(body, request->mutable_parameters(), options)) return e;
  request->set_model(options->model);
  auto prompt = body.find("prompt");
  if (prompt == body.end() || prompt->is_null()) return Invalid("prompt", "'prompt' is required");
  if (prompt->is_string()) {
    request->set_text(prompt->get<std::string>());
  } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
    request->set_text((*prompt)[0].get<std::string>());
  } else if (prompt->is_array() && !prompt->empty() &&
             std::all_of(prompt->begin(), prompt->end(), [](const json& t) { return t.is_number_integer(); })) {
    for (size_t i = 0; i < prompt->size(); ++i) {
      uint32_t id = 0;
      if (auto e = ReadTokenId((*prompt)[i], absl::StrCat("prompt[", i, "]"), "prompt", &id)) return e;
      request->mutable_token_ids()->add_ids(id);
    }
  } else {
    return Invalid("prompt", "'prompt' must be a string, a list of one string, or a list of token ids");
  }
  bool echo = false;
  if (auto e = ReadBool(body, "echo", &echo)) return e;
  if (echo) return Invalid("echo", "'echo' is not supported");
  if (auto suffix = body.find("suffix"); suffix != body.end() && !suffix->is_null()) {
    return Invalid("suffix", "'suffix' is not supported");
  }
  std::optional<int64_t> best_of, logprobs;
  if (auto e = ReadInteger(body, "best_of", &best_of)) return e;
  if (best_of && *best_of != 1) return Invalid("best_of", "only best_of = 1 is supported");
  if (auto e = ReadInteger(body, "logprobs", &logprobs)) return e;
  if (logprobs) {
    if (*logprobs < 0 || *logprobs > 20) return Invalid("logprobs", "'logprobs' must be between 0 and 20");
    options->logprobs = true;
    options->top_logprobs = static_cast<int>(*logprobs);
  }
  request->mutable_parameters()->set_logprobs(options->logprobs);
  request->mutable_parameters()->set_top_logprobs(static_cast<uint32_t>(options->top_logprobs));
  return std::nullopt;
}

std::string NewCompletionId(Endpoint endpoint) {
  thread_local absl::BitGen gen;
  return absl::StrFormat("%s%012x%012x", endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-",
                         absl::Uniform<uint64_t>(gen, 0, 1ull << 48), absl::Uniform<uint64_t>(gen, 0, 1ull << 48));
}

ReplyBuilder::ReplyBuilder(const ReplyOptions& options) : options_(options) {
  if (options_.endpoint == Endpoint::kChat) logprobs_ = json::array();
}

namespace {

// OpenAI's tool_calls delta entries for a response's deltas.
json ToolCallDeltasJson(const v1::GenerateResponse& response) {
  json calls = json::array();
  for (const v1::ToolCallDelta& d : response.tool_calls()) {
    json call = {{"index", d.index()}};
    if (!d.id().empty()) call["id"] = d.id();
    if (!d.name().empty()) {
      call["type"] = "function";
      call["function"] = {{"name", d.name()}, {"arguments", d.arguments()}};
    } else {
      call["function"] = {{"arguments", d.arguments()}};
    }
    calls.push_back(std::move(call));
  }
  return calls;
}

}  // namespace

void ReplyBuilder::Add(const v1::GenerateResponse& response) {
  text_ += response.text();
  reasoning_ += response.reasoning_text();
  for (const v1::ToolCallDelta& d : response.tool_calls()) {
    while (tool_calls_.size() <= d.index()) {
      tool_calls_.push_back({{"id", ""}, {"type", "function"}, {"function", {{"name", ""}, {"arguments", ""}}}});
    }
    json& call = tool_calls_[d.index()];
    if (!d.id().empty()) call["id"] = d.id();
    if (!d.name().empty()) call["function"]["name"] = d.name();
    call["function"]["arguments"] = call["function"]["arguments"].get<std::string>() + d.arguments();
  }
  if (options_.logprobs) {
    if (options_.endpoint == Endpoint::kChat) {
      AppendChatLogprobs(response, &logprobs_);
    } else {
      int64_t offset = static_cast<int64_t>(text_.size() - response.text().size());
      AppendCompletionLogprobs(response, &offset, &logprobs_);
    }
  }
  if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    finish_reason_ = FinishReasonName(response.finish_reason());
    usage_ = response.usage();
  }
}

json ReplyBuilder::Finish(const std::string& id, int64_t created) const {
  json choice = {{"index", 0}, {"finish_reason", finish_reason_.empty() ? json(nullptr) : json(finish_reason_)}};
  json logprobs = nullptr;
  if (options_.logprobs) {
    logprobs = options_.endpoint == Endpoint::kChat ? json{{"content", logprobs_}} : logprobs_;
  }
  choice["logprobs"] = logprobs;
  const bool chat = options_.endpoint == Endpoint::kChat;
  if (chat) {
    json message = {{"role", "assistant"}, {"content", text_}};
    if (!tool_calls_.empty()) {
      if (text_.empty()) message["content"] = nullptr;  // as OpenAI's replies that only call tools
      message["tool_calls"] = tool_calls_;
    }
    if (!reasoning_.empty()) message["reasoning_content"] = reasoning_;
    choice["message"] = std::move(message);
  } else {
    choice["text"] = text_;
  }
  return {{"id", id},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", options_.model},
          {"system_fingerprint", nullptr},
          {"choices", json::array({choice})},
          {"usage", UsageJson(usage_)}};
}

ChunkBuilder::ChunkBuilder(const ReplyOptions& options, std::string id, int64_t created)
    : options_(options), id_(std::move(id)), created_(created) {}

json ChunkBuilder::Chunk(json choice) const {
  const bool chat = options_.endpoint == Endpoint::kChat;
  json chunk = {{"id", id_},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created_},
                {"model", options_.model},
                {"system_fingerprint", nullptr},
                {"choices", choice.is_null() ? json::array() : json::array({choice})}};
  // With include_usage every chunk carries "usage": null but the last.
  if (options_.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

std::vector<json> ChunkBuilder::Add(const v1::GenerateResponse& response) {
  std::vector<json> chunks;
  const bool chat = options_.endpoint == Endpoint::kChat;
  if (chat && !sent_role_) {
    chunks.push_back(Chunk({{"index", 0},
                            {"delta", {{"role", "assistant"}, {"content", ""}}},
                            {"logprobs", nullptr},
                            {"finish_reason", nullptr}}));
    sent_role_ = true;
  }
  const bool last = response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
  const bool chat_extras = chat && (!response.reasoning_text().empty() || response.tool_calls_size() > 0);
  if (!response.text().empty() || chat_extras || (options_.logprobs && response.logprobs_size() > 0)) {
    json logprobs = nullptr;
    if (options_.logprobs) {
      if (chat) {
        json content = json::array();
        AppendChatLogprobs(response, &content);
        logprobs = {{"content", content}};
      } else {
        AppendCompletionLogprobs(response, &text_offset_, &logprobs);
      }
    }
    json choice = {{"index", 0}, {"logprobs", logprobs}, {"finish_reason", nullptr}};
    if (chat) {
      json delta = json::object();
      if (!response.text().empty() || !chat_extras) delta["content"] = response.text();
      if (!response.reasoning_text().empty()) delta["reasoning_content"] = response.reasoning_text();
      if (response.tool_calls_size() > 0) delta["tool_calls"] = ToolCallDeltasJson(response);
      choice["delta"] = std::move(delta);
    } else {
      choice["text"] = response.text();
    }
    chunks.push_back(Chunk(choice));
  }
  if (last) {
    // finish_reason comes on its own chunk with an empty delta, as OpenAI's.
    json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", FinishReasonName(response.finish_reason())}};
    if (chat) {
      choice["delta"] = json::object();
    } else {
      choice["text"] = "";
    }
    chunks.push_back(Chunk(choice));
    usage_ = response.usage();
  }
  return chunks;
}

std::optional<json> ChunkBuilder::UsageChunk() const {
  if (!options_.include_usage || !usage_) return std::nullopt;
  json chunk = Chunk(nullptr);
  chunk["usage"] = UsageJson(*usage_);
  return chunk;
}

std::optional<ApiError> ModelNameFromPath(const std::string& encoded, std::string* name) {
  // Percent-decoding by hand: neither Abseil nor the HTTP server decodes
  // paths, and Boost.URL is not among the packages we build against.
  name->clear();
  for (size_t i = 0; i < encoded.size(); ++i) {
    if (encoded[i] != '%') {
      name->push_back(encoded[i]);
      continue;
    }
    if (i + 2 >= encoded.size() || !absl::ascii_isxdigit(encoded[i + 1]) || !absl::ascii_isxdigit(encoded[i + 2])) {
      return Invalid("model", absl::StrCat("the model name in the path has a bad %-escape at byte ", i));
    }
    int value = 0;
    for (int d = 1; d <= 2; ++d) {
      const char c = encoded[i + d];
      value = value * 16 + (absl::ascii_isdigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10);
    }
    name->push_back(static_cast<char>(value));
    i += 2;
  }
  if (name->empty()) return Invalid("model", "the path names no model: GET /v1/models/{model}");
  return std::nullopt;
}

json ModelObject(const v1::ModelStatus& m) {
  json model = {{"id", m.name()}, {"object", "model"}, {"created", 0}, {"owned_by", "gantry"}};
  // Clients (and Dify's operators) choose the endpoint by it: "generate"
  // for chat and completions, "embed" for /v1/embeddings, "rerank" for /v1/rerank.
  if (!m.task().empty()) model["task"] = m.task();
  if (m.max_context() > 0) model["max_context"] = m.max_context();  // known once loaded
  return model;
}

namespace {

constexpr const char* kInputShapes =
    "a string, a list of strings, a list of token ids, or a list of token-id lists";

// One element of a list "input": a non-empty string or a non-empty list of token ids.
std::optional<ApiError> ParseEmbeddingInput(const json& item, size_t i, v1::EmbedInput* out) {
  const std::string where = absl::StrCat("input[", i, "]");
  if (item.is_string()) {
    if (item.get_ref<const std::string&>().empty()) {
      return Invalid(where, absl::StrCat(where, " is an empty string; every input needs some text"));
    }
    out->set_text(item.get<std::string>());
    return std::nullopt;
  }
  if (item.is_array()) {
    if (item.empty()) return Invalid(where, absl::StrCat(where, " is an empty list of token ids"));
    for (size_t j = 0; j < item.size(); ++j) {
      uint32_t id = 0;
      if (auto e = ReadTokenId(item[j], absl::StrCat(where, "[", j, "]"), where, &id)) return e;
      out->mutable_token_ids()->add_ids(id);
    }
    return std::nullopt;
  }
  return Invalid(where, absl::StrCat(where, " is ", TypeName(item), "; 'input' must be ", kInputShapes));
}

}  // namespace

std::optional<ApiError> ParseEmbeddingRequest(const json& body, v1::EmbedRequest* request, EmbeddingOptions* options) {
  if (auto e = ReadModel(body, &options->model)) return e;
  request->set_model(options->model);
  auto input = body.find("input");
  if (input == body.end() || input->is_null()) {
    return Invalid("input", absl::StrCat("'input' is required: ", kInputShapes));
  }
  if (input->is_string()) {
    if (input->get_ref<const std::string&>().empty()) {
      return Invalid("input", "'input' is an empty string; it needs some text");
    }
    request->add_inputs()->set_text(input->get<std::string>());
  } else if (input->is_array()) {
    if (input->empty()) return Invalid("input", "'input' is an empty list: at least one input is needed");
    if ((*input)[0].is_number()) {
      // A flat list of numbers is one input of token ids.
      v1::TokenIds* ids = request->add_inputs()->mutable_token_ids();
      for (size_t j = 0; j < input->size(); ++j) {
        const std::string where = absl::StrCat("input[", j, "]");
        uint32_t id = 0;
        if (auto e = ReadTokenId((*input)[j], where, where, &id)) return e;
        ids->add_ids(id);
      }
    } else {
      if (input->size() > kMaxEmbeddingInputs) {
        return Invalid("input", absl::StrCat("'input' has ", input->size(), " entries; at most ", kMaxEmbeddingInputs,
                                             " per request"));
      }
      for (size_t i = 0; i < input->size(); ++i) {
        if (auto e = ParseEmbeddingInput((*input)[i], i, request->add_inputs())) return e;
      }
    }
  } else {
    return Invalid("input", absl::StrCat("'input' is ", TypeName(*input), "; it must be ", kInputShapes));
  }

  if (auto format = body.find("encoding_format"); format != body.end() && !format->is_null()) {
    const bool known = format->is_string() && (*format == "float" || *format == "base64");
    if (!known) {
      return Invalid("encoding_format",
                     absl::StrCat("'encoding_format' must be \"float\" or \"base64\", got ", format->dump()));
    }
    options->base64 = *format == "base64";
  }
  std::optional<int64_t> dimensions;
  if (auto e = ReadInteger(body, "dimensions", &dimensions)) return e;
  if (dimensions) {
    if (*dimensions < 1 || *dimensions > INT32_MAX) {
      return Invalid("dimensions", absl::StrCat("'dimensions' must be at least 1 (and at most the model's), got ",
                                                *dimensions));
    }
    request->set_dimensions(static_cast<uint32_t>(*dimensions));
  }
  if (auto e = ReadUser(body)) return e;
  // Gantry's own: vLLM and TEI clients send "truncate" and "normalize" too.
  bool truncate = false;
  if (auto e = ReadBool(body, "truncate", &truncate)) return e;
  request->set_truncate(truncate);
  if (auto it = body.find("normalize"); it != body.end() && !it->is_null()) {
    bool normalize = true;  // unset: as the model's folder says
    if (auto e = ReadBool(body, "normalize", &normalize)) return e;
    request->set_normalize(normalize);
  }
  if (auto name = body.find("prompt_name"); name != body.end() && !name->is_null()) {
    if (!name->is_string()) return Invalid("prompt_name", "'prompt_name' must be a string");
    request->set_prompt_name(name->get<std::string>());
  }
  return std::nullopt;
}

std::string Float32Base64(const google::protobuf::RepeatedField<float>& values) {
  std::string bytes(values.size() * 4, '\0');
  for (int i = 0; i < values.size(); ++i) {
    uint32_t bits;
    const float value = values.Get(i);
    std::memcpy(&bits, &value, 4);
    // Little-endian whatever the host: what OpenAI's clients decode.
    for (int b = 0; b < 4; ++b) bytes[i * 4 + b] = static_cast<char>((bits >> (8 * b)) & 0xff);
  }
  return absl::Base64Escape(bytes);
}

json RenderEmbeddings(const v1::EmbedResponse& response, const EmbeddingOptions& options) {
  json data = json::array();
  for (int i = 0; i < response.embeddings_size(); ++i) {
    const auto& values = response.embeddings(i).values();
    json embedding;
    if (options.base64) {
      embedding = Float32Base64(values);
    } else {
      embedding = json::array();
      embedding.get_ref<json::array_t&>().reserve(values.size());
      for (float v : values) embedding.push_back(ShortFloat(v));
    }
    data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", std::move(embedding)}});
  }
  const uint32_t tokens = response.usage().prompt_tokens();
  return {{"object", "list"},
          {"data", std::move(data)},
          {"model", options.model},
          {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}};
}

std::optional<ApiError> ParseRerankRequest(const json& body, v1::RerankRequest* request, RerankOptions* options) {
  if (auto e = ReadModel(body, &options->model)) return e;
  request->set_model(options->model);
  auto query = body.find("query");
  if (query == body.end() || query->is_null()) return Invalid("query", "'query' is required: the text to rank by");
  if (!query->is_string()) return Invalid("query", absl::StrCat("'query' is ", TypeName(*query), "; it must be a string"));
  if (query->get_ref<const std::string&>().empty()) return Invalid("query", "'query' is an empty string");
  request->set_query(query->get<std::string>());

  auto documents = body.find("documents");
  if (documents == body.end() || documents->is_null()) {
    return Invalid("documents", "'documents' is required: a list of strings or {\"text\": ...} objects");
  }
  if (!documents->is_array()) {
    return Invalid("documents", absl::StrCat("'documents' is ", TypeName(*documents),
                                             "; it must be a list of strings or {\"text\": ...} objects"));
  }
  if (documents->empty()) return Invalid("documents", "'documents' is an empty list: at least one is needed");
  for (size_t i = 0; i < documents->size(); ++i) {
    const json& doc = (*documents)[i];
    const std::string where = absl::StrCat("documents[", i, "]");
    if (doc.is_string()) {
      request->add_documents(doc.get<std::string>());
    } else if (doc.is_object() && doc.contains("text") && doc["text"].is_string()) {
      // Cohere's and Jina's structured form; only its text is ranked.
      request->add_documents(doc["text"].get<std::string>());
    } else {
      return Invalid(where, absl::StrCat(where, " is ", TypeName(doc),
                                         doc.is_object() ? " without a \"text\" string" : "",
                                         "; every document must be a string or {\"text\": \"...\"}"));
    }
  }

  std::optional<int64_t> top_n;
  if (auto e = ReadInteger(body, "top_n", &top_n)) return e;
  if (top_n) {
    // 0 is "all", as vLLM's; Dify sends the number of documents.
    if (*top_n < 0) return Invalid("top_n", absl::StrCat("'top_n' must be 0 (all) or more, got ", *top_n));
    request->set_top_n(static_cast<uint32_t>(std::min<int64_t>(*top_n, UINT32_MAX)));
  }
  if (auto e = ReadBool(body, "return_documents", &options->return_documents)) return e;
  request->set_return_documents(options->return_documents);
  bool truncate = false;
  if (auto e = ReadBool(body, "truncate", &truncate)) return e;
  request->set_truncate(truncate);
  // Gantry's own, for causal-LM rerankers (Qwen3-Reranker): the task the
  // documents are judged for.
  if (auto instruction = body.find("instruction"); instruction != body.end() && !instruction->is_null()) {
    if (!instruction->is_string()) return Invalid("instruction", "'instruction' must be a string");
    request->set_instruction(instruction->get<std::string>());
  }
  if (auto e = ReadUser(body)) return e;
  return std::nullopt;
}

json RenderRerank(const v1::RerankResponse& response, const RerankOptions& options, const std::string& id) {
  json results = json::array();
  for (const v1::RerankResult& r : response.results()) {
    json result = {{"index", r.index()}, {"relevance_score", ShortFloat(r.relevance_score())}};
    if (options.return_documents) result["document"] = {{"text", r.document()}};
    results.push_back(std::move(result));
  }
  const uint32_t tokens = response.usage().prompt_tokens();
  return {{"id", id},
          {"model", options.model},
          {"results", std::move(results)},
          {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}};
}

std::string NewRerankId() {
  thread_local absl::BitGen gen;
  return absl::StrFormat("rerank-%012x%012x", absl::Uniform<uint64_t>(gen, 0, 1ull << 48),
                         absl::Uniform<uint64_t>(gen, 0, 1ull << 48));
}

}  // namespace gantry::adapter
