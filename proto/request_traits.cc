#include "proto/request_traits.h"

#include <grpcpp/support/slice.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "proto/wire_utf8.h"

namespace gantry::proto {
namespace {

// Set by a failed DeserializeRequest, cleared by the next one; taken by
// RequestErrorInterceptor, since gRPC's callback handlers drop the status.
// gRPC deserialises a call's request and runs its server interceptors' first
// hook on one thread, one right after the other.
thread_local std::optional<grpc::Status> last_request_error;

grpc::Status ParseError(const grpc::ByteBuffer& buffer, const google::protobuf::Descriptor& message) {
  grpc::Slice bytes;
  if (buffer.DumpToSingleSlice(&bytes).ok()) {
    const absl::string_view wire(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
    if (std::optional<InvalidUtf8Field> field = FindInvalidUtf8Field(message, wire)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("request field ", field->path, " is not valid UTF-8 (byte ", field->byte, ")"));
    }
  }
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat("request is not a valid ", message.full_name(), " message"));
}

// As grpc::GenericDeserialize, up to the status of a failed parse.
grpc::Status Parse(grpc::ByteBuffer* buffer, google::protobuf::Message* request) {
  if (buffer == nullptr) return grpc::Status(grpc::StatusCode::INTERNAL, "No payload");
  bool parsed;
  {
    grpc::ProtoBufferReader reader(buffer);
    if (!reader.status().ok()) return reader.status();
    parsed = request->ParseFromZeroCopyStream(&reader);
  }
  grpc::Status status = parsed ? grpc::Status::OK : ParseError(*buffer, *request->GetDescriptor());
  buffer->Clear();
  return status;
}

}  // namespace

grpc::Status DeserializeRequest(grpc::ByteBuffer* buffer, google::protobuf::Message* request) {
  grpc::Status status = Parse(buffer, request);
  if (status.ok()) {
    last_request_error.reset();
  } else {
    last_request_error = status;
  }
  return status;
}

namespace internal {

std::optional<grpc::Status> TakeRequestError() { return std::exchange(last_request_error, std::nullopt); }

}  // namespace internal
}  // namespace gantry::proto
