#include "adapter/openai_api.h"

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

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
    "user": "u", "stream": true, "stream_options": {"include_usage": true}, "some_future_field": {}})"),
                                &request, &options);
  ASSERT_FALSE(error) << error->message;
  EXPECT_EQ(request.model(), "m");
  ASSERT_EQ(request.messages_size(), 2);
  EXPECT_EQ(request.messages(1).content(), "ab");
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
           {R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", "messages[0].content"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3})", "n"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{}]})", "tools"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}})", "response_format"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0})", "max_tokens"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": 5})", "stop"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", "top_logprobs"},
           // Issue 13: a non-string part type was a 500; negative top_k was ignored.
           {R"({"model": "m", "messages": [{"role": "user", "content": [{"type": 5}]}]})", "messages[0].content"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_k": -5})", "top_k"},
           {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": 7}})", "response_format"},
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

}  // namespace
}  // namespace gantry::adapter
