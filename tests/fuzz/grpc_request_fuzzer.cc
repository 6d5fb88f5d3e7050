// gRPC requests as they arrive (protobuf bytes), through the checks the
// server runs before any model is involved, and through the walk that names
// the invalid UTF-8 field of one that does not parse (proto/wire_utf8.h).
#include <cstdint>
#include <cstdlib>

#include "proto/wire_utf8.h"
#include "server/request_checks.h"

namespace {

// The walk must never name a field in bytes protobuf accepts.
void Walk(const google::protobuf::Descriptor& message, bool parses, const uint8_t* data, size_t size) {
  const auto field =
      gantry::proto::FindInvalidUtf8Field(message, absl::string_view(reinterpret_cast<const char*>(data), size));
  if (parses && field.has_value()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gantry::v1::GenerateRequest generate;
  const bool generate_parses = generate.ParseFromArray(data, static_cast<int>(size));
  if (generate_parses) {
    gantry::scheduler::GenerationRequest request;
    (void)gantry::server::CheckGenerate(generate, &request);
  }
  Walk(*gantry::v1::GenerateRequest::descriptor(), generate_parses, data, size);
  gantry::v1::ChatRequest chat;
  const bool chat_parses = chat.ParseFromArray(data, static_cast<int>(size));
  if (chat_parses) {
    gantry::scheduler::GenerationRequest request;
    gantry::server::ChatSetup setup;
    (void)gantry::server::CheckChat(chat, &request, &setup);
  }
  Walk(*gantry::v1::ChatRequest::descriptor(), chat_parses, data, size);
  return 0;
}
