#include "adapter/openai_api.h"

#include <cstring>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gantry::adapter {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

TEST(OpenAiApiTest, ChatRequestMapsEveryParameter) {
  v1::ChatRequest request;
  ReplyOptions options;
  auto error = ParseChatRequest(json::parse(R"({
    "model": "m", "messages": [{"role": "system", "content": "s"},
                               {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
    "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9, "stop": ["x", "y"], "seed": 3,
    "presence_penalty": 0.1, "frequency_penalty": 0.2, "logprobs": true, "top_logprobs": 4, "n": 1,
    "user": "u", "stream": true, "stream_options": {"include_usage": true}, "some_future_field": {},
    "logit_bias": {"17": -100, "2147483647": 2.5}, "modalities": ["text"]})"),
                                &request, &options);
  ASSERT_FALSE(error) << error->message;
  EXPECT_EQ(request.model(), "m");
  ASSERT_EQ(request.messages_size(), 2);
  ASSERT_EQ(request.messages(1).content_parts_size(), 2);  // the server joins them, refusing non-text parts
  EXPECT_EQ(request.messages(1).content_parts(1).text(), "b");
  EXPECT_FALSE(request.messages(1).has_content());
  const auto& p = request.parameters();
  EXPECT_EQ(p.max_tokens(), 7u);
  EXPECT_FLOAT_EQ(p.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(p.top_p(), 0.9f);
  EXPECT_EQ(p.stop_size(), 2);
  EXPECT_EQ(p.seed(), 3u);
  EXPECT_FLOAT_EQ(p.presence_penalty(), 0.1f);
  EXPECT_FLOAT_EQ(p.frequency_penalty(), 0.2f);
  EXPECT_TRUE(p.logprobs());
  EXPECT_EQ(p.top_logprobs(), 4u);
  EXPECT_TRUE(options.stream);
  EXPECT_TRUE(options.include_usage);
  ASSERT_EQ(p.logit_bias_size(), 2);
  EXPECT_FLOAT_EQ(p.logit_bias().at(17), -100.0f);
  EXPECT_FLOAT_EQ(p.logit_bias().at(2147483647u), 2.5f);
}

TEST(OpenAiApiTest, RefusalsNameTheParameter) {
  struct Case {
    const char* body;
    const char* param;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"messages": [{"role": "user", "content": "x"}]})", "model"},
           {R"({"model": "m", "messages": []})", "messages"},
           {R"({"model": "m", "messages": [{"content": "x"}]})", "messages[0]"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3})", "n"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": {}})", "tools"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "always"})", "tool_choice"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "function"}})", "tool_choice"},
           {R"({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}]})", "messages[0].tool_calls[0]"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "guided_choice": []})", "guided_choice"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "guided_regex": "a", "guided_choice": ["b"]})", "response_format"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": [1]})", "chat_template_kwargs"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}})", "response_format"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0})", "max_tokens"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": 5})", "stop"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", "top_logprobs"},
           // Issue 13: a non-string part type was a 500; negative top_k was ignored.
           {R"({"model": "m", "messages": [{"role": "user", "content": [{"type": 5}]}]})", "messages[0].content[0]"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_k": -5})", "top_k"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": 7}})", "response_format"},
           // Asked-for audio came back as text.
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "modalities": ["text", "audio"]})", "modalities"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "modalities": "text"})", "modalities"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "audio": {"voice": "alloy"}})", "audio"},
           // logit_bias was ignored before: an object of token ids to numbers.
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": [1]})", "logit_bias"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"a": 1}})", "logit_bias"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"-1": 1}})", "logit_bias"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"2147483648": 1}})", "logit_bias"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": "big"}})", "logit_bias"},
       }) {
    v1::ChatRequest request;
    ReplyOptions options;
    auto error = ParseChatRequest(json::parse(c.body), &request, &options);
    ASSERT_TRUE(error) << c.body;
    EXPECT_EQ(error->http_status, 400);
    EXPECT_EQ(error->param, c.param) << c.body;
    EXPECT_EQ(error->ToJson()["error"]["type"], "invalid_request_error");
  }
}

TEST(OpenAiApiTest, ToolsToolCallsAndResponseFormatsReachTheServer) {
  v1::ChatRequest request;
  ReplyOptions options;
  auto error = ParseChatRequest(json::parse(R"({
    "model": "m", "messages": [
      {"role": "user", "content": "weather?"},
      {"role": "assistant", "content": null,
       "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"city\": \"Oslo\"}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "5 C"}],
    "tools": [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "get"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    "chat_template_kwargs": {"enable_thinking": false}})"),
                                &request, &options);
  ASSERT_FALSE(error) << error->message;
  ASSERT_EQ(request.messages_size(), 3);
  EXPECT_FALSE(request.messages(1).has_content());
  ASSERT_EQ(request.messages(1).tool_calls_size(), 1);
  EXPECT_EQ(request.messages(1).tool_calls(0).id(), "call_1");
  EXPECT_EQ(request.messages(1).tool_calls(0).name(), "get");
  EXPECT_EQ(json::parse(request.messages(1).tool_calls(0).arguments()), json({{"city", "Oslo"}}));
  EXPECT_EQ(request.messages(2).tool_call_id(), "call_1");
  EXPECT_EQ(json::parse(request.tools_json())[0]["function"]["name"], "get");
  EXPECT_EQ(request.tool_choice(), v1::TOOL_CHOICE_FUNCTION);
  EXPECT_EQ(request.tool_choice_function(), "get");
  EXPECT_EQ(json::parse(request.parameters().grammar().json_schema()), json({{"type", "object"}}));
  EXPECT_EQ(json::parse(request.chat_template_kwargs_json()), json({{"enable_thinking", false}}));

  for (const auto& [choice, mode] : std::vector<std::pair<const char*, v1::ToolChoice>>{
           {"none", v1::TOOL_CHOICE_NONE}, {"auto", v1::TOOL_CHOICE_AUTO}, {"required", v1::TOOL_CHOICE_REQUIRED}}) {
    v1::ChatRequest r;
    json body = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}, {"tool_choice", choice},
                 {"response_format", {{"type", "json_object"}}}};
    ASSERT_FALSE(ParseChatRequest(body, &r, &options));
    EXPECT_EQ(r.tool_choice(), mode);
    EXPECT_TRUE(r.parameters().grammar().json_object());
  }
  v1::ChatRequest guided;
  json body = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}, {"guided_choice", {"a", "b"}}};
  ASSERT_FALSE(ParseChatRequest(body, &guided, &options));
  EXPECT_EQ(guided.parameters().grammar().choice().choices_size(), 2);
}

TEST(OpenAiApiTest, RepliesCarryReasoningAndMergedToolCalls) {
  ReplyOptions options;
  options.endpoint = Endpoint::kChat;
  options.model = "m";
  v1::GenerateResponse first, second, last;
  first.set_reasoning_text("think");
  auto* call = first.add_tool_calls();
  call->set_index(0);
  call->set_id("call_a");
  call->set_name("get");
  call->set_arguments("{\"ci");
  second.add_tool_calls()->set_arguments("ty\": 1}");
  second.mutable_tool_calls(0)->set_index(0);
  last.set_finish_reason(v1::FINISH_REASON_TOOL_CALLS);

  ReplyBuilder whole(options);
  for (const auto* r : {&first, &second, &last}) whole.Add(*r);
  json reply = whole.Finish("id", 0);
  const json& message = reply["choices"][0]["message"];
  EXPECT_EQ(reply["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_TRUE(message["content"].is_null());
  EXPECT_EQ(message["reasoning_content"], "think");
  ASSERT_EQ(message["tool_calls"].size(), 1u);
  EXPECT_EQ(message["tool_calls"][0]["id"], "call_a");
  EXPECT_EQ(message["tool_calls"][0]["type"], "function");
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "get");
  EXPECT_EQ(json::parse(message["tool_calls"][0]["function"]["arguments"].get<std::string>()), json({{"city", 1}}));

  ChunkBuilder chunks(options, "id", 0);
  std::vector<json> out;
  for (const auto* r : {&first, &second, &last}) {
    for (json& chunk : chunks.Add(*r)) out.push_back(std::move(chunk));
  }
  ASSERT_EQ(out.size(), 4u);  // role, first deltas, more arguments, finish
  const json& d1 = out[1]["choices"][0]["delta"];
  EXPECT_EQ(d1["reasoning_content"], "think");
  EXPECT_FALSE(d1.contains("content"));
  EXPECT_EQ(d1["tool_calls"][0]["id"], "call_a");
  EXPECT_EQ(d1["tool_calls"][0]["function"]["name"], "get");
  const json& d2 = out[2]["choices"][0]["delta"];
  EXPECT_FALSE(d2["tool_calls"][0].contains("id"));
  EXPECT_EQ(d2["tool_calls"][0]["function"]["arguments"], "ty\": 1}");
  EXPECT_EQ(out[3]["choices"][0]["finish_reason"], "tool_calls");
}

TEST(OpenAiApiTest, TokenIdsOutsideInt32AreRefusedNotTruncated) {
  // Issue 13: 4294967301 became token 5.
  for (const char* body : {R"({"model": "m", "prompt": [1, 4294967301]})", R"({"model": "m", "prompt": [1, -2]})",
                           R"({"model": "m", "prompt": [1, 18446744073709551615]})"}) {
    v1::GenerateRequest request;
    ReplyOptions options;
    auto error = ParseCompletionRequest(json::parse(body), &request, &options);
    ASSERT_TRUE(error) << body;
    EXPECT_EQ(error->param, "prompt");
    EXPECT_THAT(error->message, ::testing::HasSubstr("prompt[1]")) << body;
  }
  v1::GenerateRequest request;
  ReplyOptions options;
  ASSERT_FALSE(ParseCompletionRequest(json::parse(R"({"model": "m", "prompt": [0, 2147483647]})"), &request, &options));
  EXPECT_EQ(request.token_ids().ids(1), 2147483647u);
  // top_k -1 is vLLM's "off".
  ASSERT_FALSE(ParseCompletionRequest(json::parse(R"({"model": "m", "prompt": "x", "top_k": -1})"), &request, &options));
  EXPECT_FALSE(request.parameters().has_top_k());
}

TEST(OpenAiApiTest, CompletionPrompts) {
  v1::GenerateRequest request;
  ReplyOptions options;
  ASSERT_FALSE(ParseCompletionRequest(json::parse(R"({"model": "m", "prompt": [1, 2, 3], "logprobs": 2})"), &request,
                                      &options));
  EXPECT_EQ(request.token_ids().ids_size(), 3);
  EXPECT_EQ(options.top_logprobs, 2);
  auto error = ParseCompletionRequest(json::parse(R"({"model": "m", "prompt": ["a", "b"]})"), &request, &options);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->param, "prompt");
  error = ParseCompletionRequest(json::parse(R"({"model": "m", "prompt": "a", "echo": true})"), &request, &options);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->param, "echo");
}

// A status as the server sends it: the reason in a google.rpc.ErrorInfo.
grpc::Status WithReason(grpc::StatusCode code, const std::string& reason, const std::string& message) {
  google::rpc::ErrorInfo info;
  info.set_reason(reason);
  info.set_domain("gantry.dev");
  google::rpc::Status details;
  details.set_code(static_cast<int>(code));
  details.set_message(message);
  details.add_details()->PackFrom(info);
  return grpc::Status(code, message, details.SerializeAsString());
}

TEST(OpenAiApiTest, ReasonsBecomeHttpStatuses) {
  auto http = [](grpc::StatusCode code, const char* reason) {
    return FromGrpc(WithReason(code, reason, "any words")).http_status;
  };
  EXPECT_EQ(http(grpc::StatusCode::NOT_FOUND, "MODEL_NOT_FOUND"), 404);
  EXPECT_EQ(http(grpc::StatusCode::INVALID_ARGUMENT, "INVALID_REQUEST"), 400);
  EXPECT_EQ(http(grpc::StatusCode::INVALID_ARGUMENT, "CONTEXT_LENGTH"), 400);
  EXPECT_EQ(http(grpc::StatusCode::RESOURCE_EXHAUSTED, "QUEUE_FULL"), 429);
  EXPECT_EQ(http(grpc::StatusCode::RESOURCE_EXHAUSTED, "KV_CAPACITY"), 400);
  EXPECT_EQ(http(grpc::StatusCode::RESOURCE_EXHAUSTED, "MEMORY_BUDGET"), 503);
  EXPECT_EQ(http(grpc::StatusCode::UNAVAILABLE, "MODEL_LOAD_FAILED"), 503);
  EXPECT_EQ(http(grpc::StatusCode::UNAVAILABLE, "SHUTTING_DOWN"), 503);
  const ApiError queue = FromGrpc(WithReason(grpc::StatusCode::RESOURCE_EXHAUSTED, "QUEUE_FULL", "x"));
  EXPECT_EQ(queue.type, "rate_limit_exceeded");
  EXPECT_EQ(queue.code, "queue_full");
  EXPECT_EQ(FromGrpc(WithReason(grpc::StatusCode::INVALID_ARGUMENT, "CONTEXT_LENGTH", "x")).code,
            "context_length_exceeded");
  EXPECT_EQ(StatusReason(WithReason(grpc::StatusCode::INTERNAL, "SOMETHING", "x")), "SOMETHING");
}

TEST(OpenAiApiTest, WithoutAReasonTheCodeDecidesNeverTheMessage) {
  auto http = [](grpc::StatusCode code, const char* message) { return FromGrpc(grpc::Status(code, message)).http_status; };
  // Words that once decided the status mean nothing now.
  EXPECT_EQ(http(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue of model m is full (4 waiting requests)"), 413);
  // Reasonless RESOURCE_EXHAUSTED is the channel's message size limit (issue
  // 13: it was a 503 "insufficient_memory").
  EXPECT_EQ(http(grpc::StatusCode::RESOURCE_EXHAUSTED, "Sent message larger than max (5000000 vs. 4194304)"), 413);
  EXPECT_EQ(http(grpc::StatusCode::NOT_FOUND, "x"), 404);
  EXPECT_EQ(http(grpc::StatusCode::INVALID_ARGUMENT, "temperature"), 400);
  EXPECT_EQ(http(grpc::StatusCode::UNAVAILABLE, "connection refused"), 503);
  EXPECT_EQ(http(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline"), 504);
  EXPECT_EQ(http(grpc::StatusCode::INTERNAL, "boom"), 500);
  EXPECT_EQ(StatusReason(grpc::Status(grpc::StatusCode::INTERNAL, "boom", "not a proto")), "");
}

TEST(OpenAiApiTest, ChunksCarryRoleFirstAndFinishReasonLast) {
  ReplyOptions options;
  options.model = "m";
  options.include_usage = true;
  ChunkBuilder chunks(options, "chatcmpl-1", 100);
  v1::GenerateResponse a;
  a.set_text("Hel");
  auto first = chunks.Add(a);
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first[1]["choices"][0]["delta"]["content"], "Hel");
  EXPECT_TRUE(first[1]["usage"].is_null());
  v1::GenerateResponse b;
  b.set_text("lo");
  b.set_finish_reason(v1::FINISH_REASON_LENGTH);
  b.mutable_usage()->set_prompt_tokens(3);
  b.mutable_usage()->set_completion_tokens(2);
  auto last = chunks.Add(b);
  ASSERT_EQ(last.size(), 2u);
  EXPECT_EQ(last[1]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(last[1]["choices"][0]["delta"], json::object());
  auto usage = chunks.UsageChunk();
  ASSERT_TRUE(usage);
  EXPECT_EQ((*usage)["choices"], json::array());
  EXPECT_EQ((*usage)["usage"]["total_tokens"], 5);
}

TEST(OpenAiApiTest, UnsupportedIsABadRequestWithTheServersWords) {
  // The server names the model and what it serves; the client needs both.
  const ApiError e = FromGrpc(WithReason(grpc::StatusCode::FAILED_PRECONDITION, "UNSUPPORTED",
                                         "model demo-embed serves embed, not text generation"));
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.type, "invalid_request_error");
  EXPECT_EQ(e.code, "unsupported");
  EXPECT_EQ(e.message, "model demo-embed serves embed, not text generation");
}

TEST(OpenAiApiTest, ModelNamesInPathsArePercentDecoded) {
  std::string name;
  EXPECT_FALSE(ModelNameFromPath("demo", &name));
  EXPECT_EQ(name, "demo");
  EXPECT_FALSE(ModelNameFromPath("Qwen%2FQwen3-8B", &name));
  EXPECT_EQ(name, "Qwen/Qwen3-8B");
  EXPECT_FALSE(ModelNameFromPath("a%2fb%20c", &name));
  EXPECT_EQ(name, "a/b c");
  for (const char* bad : {"%", "x%2", "%zz", "%2G", ""}) {
    auto error = ModelNameFromPath(bad, &name);
    ASSERT_TRUE(error) << bad;
    EXPECT_EQ(error->http_status, 400);
    EXPECT_EQ(error->param, "model");
  }
}

TEST(OpenAiApiTest, ModelObjectsCarryTheirTask) {
  v1::ModelStatus m;
  m.set_name("demo-embed");
  m.set_task("embed");
  m.set_max_context(512);
  EXPECT_EQ(ModelObject(m), json::parse(R"({"id": "demo-embed", "object": "model", "created": 0,
                                            "owned_by": "gantry", "task": "embed", "max_context": 512})"));
  v1::ModelStatus unread;  // a folder that could not be read: no task, no context yet
  unread.set_name("broken");
  EXPECT_FALSE(ModelObject(unread).contains("task"));
  EXPECT_FALSE(ModelObject(unread).contains("max_context"));
}

TEST(OpenAiApiTest, EmbeddingInputsInEveryShape) {
  struct Case {
    const char* input;
    std::vector<std::string> texts;              // per input; "" = token ids
    std::vector<std::vector<uint32_t>> tokens;   // per input; {} = text
  };
  for (const Case& c : std::vector<Case>{
           {R"("one")", {"one"}, {{}}},
           {R"(["a", "b c"])", {"a", "b c"}, {{}, {}}},
           {R"([5, 0, 2147483647])", {""}, {{5, 0, 2147483647}}},
           {R"([[1, 2], [3]])", {"", ""}, {{1, 2}, {3}}},
           {R"(["a", [7]])", {"a", ""}, {{}, {7}}},
       }) {
    v1::EmbedRequest request;
    EmbeddingOptions options;
    auto error = ParseEmbeddingRequest(json::parse(absl::StrCat(R"({"model": "e", "input": )", c.input, "}")),
                                       &request, &options);
    ASSERT_FALSE(error) << c.input << ": " << error->message;
    EXPECT_EQ(request.model(), "e");
    ASSERT_EQ(request.inputs_size(), static_cast<int>(c.texts.size())) << c.input;
    for (int i = 0; i < request.inputs_size(); ++i) {
      const v1::EmbedInput& in = request.inputs(i);
      if (!c.texts[i].empty()) {
        EXPECT_EQ(in.text(), c.texts[i]) << c.input;
      } else {
        ASSERT_TRUE(in.has_token_ids()) << c.input;
        EXPECT_THAT(in.token_ids().ids(), ::testing::ElementsAreArray(c.tokens[i])) << c.input;
      }
    }
    EXPECT_FALSE(options.base64);
    EXPECT_FALSE(request.has_normalize());  // the model's folder decides
    EXPECT_EQ(request.dimensions(), 0u);
  }
}

TEST(OpenAiApiTest, EmbeddingOptionsAndGantrysExtensions) {
  v1::EmbedRequest request;
  EmbeddingOptions options;
  ASSERT_FALSE(ParseEmbeddingRequest(json::parse(R"({"model": "e", "input": "x", "encoding_format": "base64",
      "dimensions": 32, "user": "u", "truncate": true, "normalize": false, "prompt_name": "query", "extra": 1})"),
                                     &request, &options));
  EXPECT_TRUE(options.base64);
  EXPECT_EQ(options.model, "e");
  EXPECT_EQ(request.dimensions(), 32u);
  EXPECT_TRUE(request.truncate());
  ASSERT_TRUE(request.has_normalize());
  EXPECT_FALSE(request.normalize());
  EXPECT_EQ(request.prompt_name(), "query");
  // null is "not given", as the SDKs send it.
  request.Clear();
  options = {};
  ASSERT_FALSE(ParseEmbeddingRequest(json::parse(R"({"model": "e", "input": "x", "encoding_format": null,
      "dimensions": null, "normalize": null, "prompt_name": null, "user": null})"), &request, &options));
  EXPECT_FALSE(options.base64);
  EXPECT_FALSE(request.has_normalize());
}

TEST(OpenAiApiTest, EachBadEmbeddingInputIsItsOwnBadRequest) {
  struct Case {
    std::string body;
    const char* param;
    const char* says;
  };
  std::string many = R"({"model": "e", "input": [)";
  for (int i = 0; i < 2049; ++i) many += i ? R"(, "x")" : R"("x")";
  many += "]}";
  for (const Case& c : std::vector<Case>{
           {R"([1, 2])", "", "JSON object"},
           {R"({"input": "x"})", "model", "'model' is required"},
           {R"({"model": "e"})", "input", "'input' is required"},
           {R"({"model": "e", "input": null})", "input", "'input' is required"},
           {R"({"model": "e", "input": ""})", "input", "empty string"},
           {R"({"model": "e", "input": []})", "input", "empty list"},
           {R"({"model": "e", "input": 5})", "input", "'input' is an integer"},
           {R"({"model": "e", "input": {"text": "x"}})", "input", "'input' is an object"},
           {R"({"model": "e", "input": ["a", "", "b"]})", "input[1]", "input[1] is an empty string"},
           {R"({"model": "e", "input": ["a", "b", 5]})", "input[2]", "input[2] is an integer"},
           {R"({"model": "e", "input": ["a", null]})", "input[1]", "input[1] is null"},
           {R"({"model": "e", "input": ["a", true]})", "input[1]", "input[1] is a boolean"},
           {R"({"model": "e", "input": [[1, 2], []]})", "input[1]", "input[1] is an empty list"},
           {R"({"model": "e", "input": [[1, -2]]})", "input[0]", "input[0][1] = -2 is not a token id"},
           {R"({"model": "e", "input": [[1, "2"]]})", "input[0]", "input[0][1] is a string"},
           {R"({"model": "e", "input": [1, 2, "x"]})", "input[2]", "input[2] is a string"},
           {R"({"model": "e", "input": [1, 2.5]})", "input[1]", "input[1] is a number"},
           {R"({"model": "e", "input": [1, 4294967301]})", "input[1]", "input[1] = 4294967301 is not a token id"},
           {R"({"model": "e", "input": [18446744073709551615]})", "input[0]", "is not a token id"},
           {many, "input", "'input' has 2049 entries; at most 2048"},
           {R"({"model": "e", "input": "x", "encoding_format": "int8"})", "encoding_format", R"(got "int8")"},
           {R"({"model": "e", "input": "x", "encoding_format": 5})", "encoding_format", "\"float\" or \"base64\""},
           {R"({"model": "e", "input": "x", "dimensions": 0})", "dimensions", "at least 1"},
           {R"({"model": "e", "input": "x", "dimensions": -3})", "dimensions", "got -3"},
           {R"({"model": "e", "input": "x", "dimensions": "64"})", "dimensions", "must be an integer"},
           {R"({"model": "e", "input": "x", "dimensions": 1.5})", "dimensions", "must be an integer"},
           {R"({"model": "e", "input": "x", "user": 5})", "user", "must be a string"},
           {R"({"model": "e", "input": "x", "truncate": "yes"})", "truncate", "true or false"},
           {R"({"model": "e", "input": "x", "normalize": 1})", "normalize", "true or false"},
           {R"({"model": "e", "input": "x", "prompt_name": 3})", "prompt_name", "must be a string"},
       }) {
    v1::EmbedRequest request;
    EmbeddingOptions options;
    auto error = ParseEmbeddingRequest(json::parse(c.body), &request, &options);
    ASSERT_TRUE(error) << c.body;
    EXPECT_EQ(error->http_status, 400) << c.body;
    EXPECT_EQ(error->param, c.param) << c.body;
    EXPECT_THAT(error->message, HasSubstr(c.says)) << c.body;
    EXPECT_EQ(error->ToJson()["error"]["type"], "invalid_request_error");
  }
}

v1::EmbedResponse Embeddings(const std::vector<std::vector<float>>& vectors, uint32_t tokens) {
  v1::EmbedResponse response;
  for (const auto& v : vectors) response.add_embeddings()->mutable_values()->Add(v.begin(), v.end());
  response.mutable_usage()->set_prompt_tokens(tokens);
  return response;
}

TEST(OpenAiApiTest, EmbeddingsAsFloats) {
  EmbeddingOptions options;
  options.model = "e";
  const json reply = RenderEmbeddings(Embeddings({{0.1f, -2.5f, 1e-7f}, {0.6f, 0.8f, 0.0f}}, 9), options);
  EXPECT_EQ(reply["object"], "list");
  EXPECT_EQ(reply["model"], "e");
  EXPECT_EQ(reply["usage"], json::parse(R"({"prompt_tokens": 9, "total_tokens": 9})"));
  ASSERT_EQ(reply["data"].size(), 2u);
  EXPECT_EQ(reply["data"][1]["object"], "embedding");
  EXPECT_EQ(reply["data"][1]["index"], 1);
  const json& first = reply["data"][0]["embedding"];
  ASSERT_EQ(first.size(), 3u);
  // Each number reads back as the very float, written short.
  EXPECT_EQ(static_cast<float>(first[0].get<double>()), 0.1f);
  EXPECT_EQ(static_cast<float>(first[2].get<double>()), 1e-7f);
  EXPECT_EQ(first.dump(), "[0.1,-2.5,1e-07]");
}

TEST(OpenAiApiTest, EmbeddingsAsBase64RoundTrip) {
  const std::vector<float> values = {0.1f, -2.5f, 0.0f, -0.0f, 1e-40f /* subnormal */, 3.4e38f, -1.0f / 3.0f};
  EmbeddingOptions options;
  options.model = "e";
  options.base64 = true;
  const json reply = RenderEmbeddings(Embeddings({values, {1.0f}}, 4), options);
  ASSERT_TRUE(reply["data"][0]["embedding"].is_string());
  std::string bytes;
  ASSERT_TRUE(absl::Base64Unescape(reply["data"][0]["embedding"].get<std::string>(), &bytes));
  ASSERT_EQ(bytes.size(), values.size() * 4);
  for (size_t i = 0; i < values.size(); ++i) {
    // Little-endian float32, whatever the host: what numpy's frombuffer and
    // the SDKs' Float32Array read.
    uint32_t bits = 0;
    for (int b = 3; b >= 0; --b) bits = (bits << 8) | static_cast<unsigned char>(bytes[i * 4 + b]);
    float value;
    std::memcpy(&value, &bits, 4);
    uint32_t want;
    std::memcpy(&want, &values[i], 4);
    EXPECT_EQ(bits, want) << i << ": " << value;
  }
  // 1.0f is 00 00 80 3f.
  EXPECT_EQ(reply["data"][1]["embedding"], "AACAPw==");
}

TEST(OpenAiApiTest, RerankRequests) {
  v1::RerankRequest request;
  RerankOptions options;
  ASSERT_FALSE(ParseRerankRequest(json::parse(R"({"model": "r", "query": "q", "documents": ["a", {"text": "b"}, ""],
      "top_n": 2, "return_documents": true, "truncate": true, "max_tokens_per_doc": 512,
      "instruction": "Find the capital"})"), &request, &options));
  EXPECT_EQ(request.instruction(), "Find the capital");
  EXPECT_EQ(request.model(), "r");
  EXPECT_EQ(request.query(), "q");
  EXPECT_THAT(request.documents(), ::testing::ElementsAre("a", "b", ""));
  EXPECT_EQ(request.top_n(), 2u);
  EXPECT_TRUE(request.return_documents());
  EXPECT_TRUE(options.return_documents);
  EXPECT_TRUE(request.truncate());
  // Dify's shape: top_n is the number of documents; 0 is all, as vLLM's.
  request.Clear();
  options = {};
  ASSERT_FALSE(ParseRerankRequest(json::parse(R"({"model": "r", "query": "q", "documents": ["a"], "top_n": 0})"),
                                  &request, &options));
  EXPECT_EQ(request.top_n(), 0u);
  EXPECT_FALSE(request.return_documents());  // default: indices and scores only
}

TEST(OpenAiApiTest, EachBadRerankInputIsItsOwnBadRequest) {
  struct Case {
    const char* body;
    const char* param;
    const char* says;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"query": "q", "documents": ["a"]})", "model", "'model' is required"},
           {R"({"model": "r", "documents": ["a"]})", "query", "'query' is required"},
           {R"({"model": "r", "query": "", "documents": ["a"]})", "query", "empty string"},
           {R"({"model": "r", "query": ["q"], "documents": ["a"]})", "query", "'query' is a list"},
           {R"({"model": "r", "query": "q"})", "documents", "'documents' is required"},
           {R"({"model": "r", "query": "q", "documents": []})", "documents", "empty list"},
           {R"({"model": "r", "query": "q", "documents": "a"})", "documents", "'documents' is a string"},
           {R"({"model": "r", "query": "q", "documents": ["a", 1]})", "documents[1]", "documents[1] is an integer"},
           {R"({"model": "r", "query": "q", "documents": [{"title": "a"}]})", "documents[0]", "without a \"text\""},
           {R"({"model": "r", "query": "q", "documents": ["a", "b", {"text": 5}]})", "documents[2]", "documents[2]"},
           {R"({"model": "r", "query": "q", "documents": ["a"], "top_n": -1})", "top_n", "got -1"},
           {R"({"model": "r", "query": "q", "documents": ["a"], "top_n": "3"})", "top_n", "must be an integer"},
           {R"({"model": "r", "query": "q", "documents": ["a"], "return_documents": "yes"})", "return_documents",
            "true or false"},
           {R"({"model": "r", "query": "q", "documents": ["a"], "truncate": 1})", "truncate", "true or false"},
           {R"({"model": "r", "query": "q", "documents": ["a"], "instruction": 2})", "instruction", "must be a string"},
       }) {
    v1::RerankRequest request;
    RerankOptions options;
    auto error = ParseRerankRequest(json::parse(c.body), &request, &options);
    ASSERT_TRUE(error) << c.body;
    EXPECT_EQ(error->http_status, 400) << c.body;
    EXPECT_EQ(error->param, c.param) << c.body;
    EXPECT_THAT(error->message, HasSubstr(c.says)) << c.body;
  }
}

TEST(OpenAiApiTest, RerankReplies) {
  v1::RerankResponse response;
  for (auto [index, score, doc] : std::vector<std::tuple<uint32_t, float, const char*>>{{2, 0.75f, "c"}, {0, 0.25f, "a"}}) {
    v1::RerankResult* r = response.add_results();
    r->set_index(index);
    r->set_relevance_score(score);
    r->set_logit(1.0f);
    r->set_document(doc);
  }
  response.mutable_usage()->set_prompt_tokens(30);
  RerankOptions options;
  options.model = "r";
  options.return_documents = true;
  EXPECT_EQ(RenderRerank(response, options, "rerank-1"), json::parse(R"({"id": "rerank-1", "model": "r",
      "results": [{"index": 2, "relevance_score": 0.75, "document": {"text": "c"}},
                  {"index": 0, "relevance_score": 0.25, "document": {"text": "a"}}],
      "usage": {"prompt_tokens": 30, "total_tokens": 30}})"));
  options.return_documents = false;
  const json bare = RenderRerank(response, options, "rerank-1");
  EXPECT_FALSE(bare["results"][0].contains("document"));
  EXPECT_THAT(NewRerankId(), ::testing::MatchesRegex("rerank-[0-9a-f]{24}"));
}

}  // namespace
}  // namespace gantry::adapter
