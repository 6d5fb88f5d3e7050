// An OpenAI HTTP body, as the adapter parses it: JSON (depth-limited) into a
// Chat, a Completion, an Embedding and a Rerank request.
#include <cstdint>
#include <string>

#include "adapter/openai_api.h"
#include "text/json_limits.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto body = gantry::text::ParseJsonLimited<nlohmann::json>(
      std::string(reinterpret_cast<const char*>(data), size), "the request body");
  if (!body.ok()) return 0;
  gantry::v1::ChatRequest chat;
  gantry::adapter::ReplyOptions chat_options;
  (void)gantry::adapter::ParseChatRequest(*body, &chat, &chat_options);
  gantry::v1::GenerateRequest completion;
  gantry::adapter::ReplyOptions completion_options;
  (void)gantry::adapter::ParseCompletionRequest(*body, &completion, &completion_options);
  gantry::v1::EmbedRequest embed;
  gantry::adapter::EmbeddingOptions embed_options;
  (void)gantry::adapter::ParseEmbeddingRequest(*body, &embed, &embed_options);
  gantry::v1::RerankRequest rerank;
  gantry::adapter::RerankOptions rerank_options;
  (void)gantry::adapter::ParseRerankRequest(*body, &rerank, &rerank_options);
  return 0;
}
