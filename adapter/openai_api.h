// OpenAI's HTTP API shapes, translated to and from Gantry's gRPC messages.
// No I/O here: the gateway does the HTTP and the gRPC calls.
//
// Requests: /v1/chat/completions and /v1/completions bodies become a
// ChatRequest or GenerateRequest plus the options that shape the reply
// (stream, usage, logprobs); /v1/embeddings an EmbedRequest; /v1/rerank (and
// /rerank, Jina's and Cohere's shape) a RerankRequest. Unknown fields are
// ignored, as OpenAI's clients send many; fields Gantry cannot honour yet
// (tools, non-text response_format, n > 1, echo, suffix, best_of > 1) are
// refused by name.
// Replies: chat.completion / text_completion objects, their streamed chunks,
// embedding lists, rerank results, model objects, and errors as
// {"error": {"message", "type", "param", "code"}}.
#ifndef GANTRY_ADAPTER_OPENAI_API_H_
#define GANTRY_ADAPTER_OPENAI_API_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "gantry/v1/gantry.pb.h"

namespace gantry::adapter {

struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" = null
  std::string code;   // "" = null
  nlohmann::json ToJson() const;
};

// HTTP status and OpenAI error type for a gRPC error from the server.
// The google.rpc.ErrorInfo reason in the status details ("" when none).
std::string StatusReason(const grpc::Status& status);
// The OpenAI-style error for a gRPC status, chosen by its reason.
ApiError FromGrpc(const grpc::Status& status);

enum class Endpoint { kChat, kCompletions };

// How the reply is shaped.
struct ReplyOptions {
  Endpoint endpoint = Endpoint::kChat;
  std::string model;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;
  int top_logprobs = 0;
};

// Parses a /v1/chat/completions body.
// `body` keeps its key order: schemas (response_format, tool parameters)
// reach the model and the grammar with their properties in the client's order.
std::optional<ApiError> ParseChatRequest(const nlohmann::ordered_json& body, v1::ChatRequest* request,
                                         ReplyOptions* options);
// Parses a /v1/completions body.
std::optional<ApiError> ParseCompletionRequest(const nlohmann::json& body, v1::GenerateRequest* request,
                                               ReplyOptions* options);

// "chatcmpl-..." or "cmpl-..." with 24 random hex digits.
std::string NewCompletionId(Endpoint endpoint);

// Collects a whole (non-streamed) reply.
class ReplyBuilder {
 public:
  explicit ReplyBuilder(const ReplyOptions& options);
  void Add(const v1::GenerateResponse& response);
  nlohmann::json Finish(const std::string& id, int64_t created) const;

 private:
  ReplyOptions options_;
  std::string text_;
  std::string reasoning_;
  nlohmann::json tool_calls_ = nlohmann::json::array();  // OpenAI's message.tool_calls, merged by index
  nlohmann::json logprobs_;  // chat: content list; completions: tokens/token_logprobs/top_logprobs/text_offset
  std::string finish_reason_;
  v1::Usage usage_;
};

// The streamed chunks of one reply, as SSE "data: ..." payloads.
class ChunkBuilder {
 public:
  ChunkBuilder(const ReplyOptions& options, std::string id, int64_t created);
  // Chunks for one gRPC response (the first call also yields the chat role chunk).
  std::vector<nlohmann::json> Add(const v1::GenerateResponse& response);
  // The usage chunk (include_usage), once the last response is in.
  std::optional<nlohmann::json> UsageChunk() const;

 private:
  nlohmann::json Chunk(nlohmann::json choice) const;

  ReplyOptions options_;
  std::string id_;
  int64_t created_;
  bool sent_role_ = false;
  int64_t text_offset_ = 0;
  std::optional<v1::Usage> usage_;
};

// The /v1/models entry of a model: OpenAI's fields, its task ("generate",
// "embed", "rerank") and, once loaded, its max_context.
nlohmann::json ModelObject(const v1::ModelStatus& model);

// The model name of GET /v1/models/{model}: `encoded` is the path after
// "/v1/models/", percent-decoded (SDKs encode "/" in names such as
// "Qwen/Qwen3-8B"). An error names a bad escape or an empty name.
std::optional<ApiError> ModelNameFromPath(const std::string& encoded, std::string* name);

// /v1/embeddings: how the reply is shaped.
struct EmbeddingOptions {
  std::string model;
  bool base64 = false;  // encoding_format "base64": little-endian float32, as OpenAI's
};

// Parses a /v1/embeddings body: "input" is a string, a list of strings, a
// list of token ids or a list of such lists (at most kMaxEmbeddingInputs,
// none empty); "encoding_format", "dimensions", "user"; Gantry's
// "truncate", "normalize" and "prompt_name".
inline constexpr size_t kMaxEmbeddingInputs = 2048;  // OpenAI's limit, and the server's
std::optional<ApiError> ParseEmbeddingRequest(const nlohmann::json& body, v1::EmbedRequest* request,
                                              EmbeddingOptions* options);
// {"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage"}.
nlohmann::json RenderEmbeddings(const v1::EmbedResponse& response, const EmbeddingOptions& options);
// The bytes of `values` as little-endian float32, base64-encoded.
std::string Float32Base64(const google::protobuf::RepeatedField<float>& values);

// /v1/rerank: how the reply is shaped.
struct RerankOptions {
  std::string model;
  bool return_documents = false;
};

// Parses a /v1/rerank body: "query", "documents" (strings or {"text": ...}
// objects), "top_n" (0 or absent: all), "return_documents", "truncate",
// "instruction" (causal-LM rerankers).
std::optional<ApiError> ParseRerankRequest(const nlohmann::json& body, v1::RerankRequest* request,
                                           RerankOptions* options);
// {"id", "model", "results": [{"index", "relevance_score", "document"?: {"text"}}], "usage"}:
// Jina's reply (Cohere's without "meta"), best first.
nlohmann::json RenderRerank(const v1::RerankResponse& response, const RerankOptions& options, const std::string& id);
// "rerank-" with 24 random hex digits.
std::string NewRerankId();

}  // namespace gantry::adapter

#endif  // GANTRY_ADAPTER_OPENAI_API_H_
