// The checks a gRPC generation request passes where it enters, before any
// model is involved: model name, parameters into a GenerationRequest (caps
// on stop strings and ids), prompt presence, chat messages and tools_json.
// Torch- and gRPC-free apart from the messages, so the fuzz targets
// (tests/fuzz) run them on arbitrary protobuf bytes.
#ifndef GANTRY_SERVER_REQUEST_CHECKS_H_
#define GANTRY_SERVER_REQUEST_CHECKS_H_

#include <string>

#include "absl/status/status.h"
#include "gantry/v1/gantry.pb.h"
#include "nlohmann/json.hpp"
#include "scheduler/model_engine.h"
#include "server/chat_request.h"

namespace gantry::server {

absl::Status CheckModelName(const std::string& model);
// SamplingParameters -> GenerationRequest fields; ranges are checked by the
// engine's Submit (runtime::ValidateSamplingParams names field and range).
absl::Status ApplyParameters(const v1::SamplingParameters& p, scheduler::GenerationRequest* request);
absl::Status CheckGenerate(const v1::GenerateRequest& request, scheduler::GenerationRequest* generation);
// `setup` receives the messages, tools and grammar as chat_request.h reads them.
absl::Status CheckChat(const v1::ChatRequest& request, scheduler::GenerationRequest* generation, ChatSetup* setup);

// Embed: a model, 1 to kMaxEmbedInputs inputs, each with text or non-empty
// token ids (ids below 2^31). Rerank: a model, a query, 1 to
// kMaxRerankDocuments documents. Errors name the field and index.
inline constexpr int kMaxEmbedInputs = 2048;
inline constexpr int kMaxRerankDocuments = 1024;
absl::Status CheckEmbed(const v1::EmbedRequest& request);
absl::Status CheckRerank(const v1::RerankRequest& request);

}  // namespace gantry::server

#endif  // GANTRY_SERVER_REQUEST_CHECKS_H_
