// gRPC requests as they arrive (protobuf bytes), through the checks the
// server runs before any model is involved.
#include <cstdint>

#include "server/request_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gantry::v1::GenerateRequest generate;
  if (generate.ParseFromArray(data, static_cast<int>(size))) {
    gantry::scheduler::GenerationRequest request;
    (void)gantry::server::CheckGenerate(generate, &request);
  }
  gantry::v1::ChatRequest chat;
  if (chat.ParseFromArray(data, static_cast<int>(size))) {
    gantry::scheduler::GenerationRequest request;
    nlohmann::ordered_json tools;
    (void)gantry::server::CheckChat(chat, &request, &tools);
  }
  return 0;
}
