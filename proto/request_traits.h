// gRPC's serialisation of the request messages of Gantry's services, with a
// status a client can act on when a request does not parse (e.g. a proto3
// string holding invalid UTF-8): INVALID_ARGUMENT naming the field and the
// byte, where gRPC's own says INTERNAL with an empty message.
//
// gRPC calls these where a handler is instantiated on the request type: the
// callback API (which then drops the status: the interceptor in
// request_error_interceptor.h sends it) and sync server-streaming methods.
// Sync unary handlers and unary client calls are generated on MessageLite,
// so they never come here.
//
// The generated gantry/v1/gantry.grpc.pb.h includes this header
// (grpc_cpp_plugin's additional_header_includes, proto/CMakeLists.txt), so
// every translation unit that instantiates the services' handlers or stubs
// sees these specialisations before it uses them, as C++ requires of
// explicit specialisations.
#ifndef GANTRY_PROTO_REQUEST_TRAITS_H_
#define GANTRY_PROTO_REQUEST_TRAITS_H_

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

#include <optional>

#include "gantry/v1/gantry.pb.h"

// The request message of every method of the services in gantry.proto, one
// line each (request_traits_test fails while one is missing). A line may come
// before its message does: the types are declared below, and a
// specialisation nothing uses needs no definition.
#define GANTRY_REQUEST_MESSAGES(X) \
  X(GenerateRequest)               \
  X(ChatRequest)                   \
  X(TokenizeRequest)               \
  X(DetokenizeRequest)             \
  X(EmbedRequest)                  \
  X(RerankRequest)                 \
  X(ListModelsRequest)             \
  X(GetModelRequest)               \
  X(LoadModelRequest)              \
  X(UnloadModelRequest)

namespace gantry::v1 {
#define GANTRY_DECLARE_REQUEST(Request) class Request;
GANTRY_REQUEST_MESSAGES(GANTRY_DECLARE_REQUEST)
#undef GANTRY_DECLARE_REQUEST
}  // namespace gantry::v1

namespace gantry::proto {

// Parses `buffer` into `request` as gRPC does, then clears `buffer`. When
// parsing fails: INVALID_ARGUMENT "request field messages[2].content is not
// valid UTF-8 (byte 17)" (the byte counted from 0 within the field's value),
// or "request is not a valid gantry.v1.ChatRequest message".
grpc::Status DeserializeRequest(grpc::ByteBuffer* buffer, google::protobuf::Message* request);

// grpc::SerializationTraits for one request type: gRPC's own serialisation,
// DeserializeRequest.
template <class Request>
class RequestSerializationTraits {
 public:
  static grpc::Status Serialize(const grpc::protobuf::MessageLite& request, grpc::ByteBuffer* buffer,
                                bool* own_buffer) {
    return grpc::GenericSerialize<grpc::ProtoBufferWriter, Request>(request, buffer, own_buffer);
  }
  static grpc::Status Deserialize(grpc::ByteBuffer* buffer, Request* request) {
    return DeserializeRequest(buffer, request);
  }
};

namespace internal {
// The status of the last DeserializeRequest on this thread if it failed, once.
// For the interceptor in proto/request_error_interceptor.h.
std::optional<grpc::Status> TakeRequestError();
}  // namespace internal

}  // namespace gantry::proto

namespace grpc {
#define GANTRY_REQUEST_TRAITS(Request)             \
  template <>                                      \
  class SerializationTraits<::gantry::v1::Request> \
      : public ::gantry::proto::RequestSerializationTraits<::gantry::v1::Request> {};
GANTRY_REQUEST_MESSAGES(GANTRY_REQUEST_TRAITS)
#undef GANTRY_REQUEST_TRAITS
}  // namespace grpc

#endif  // GANTRY_PROTO_REQUEST_TRAITS_H_
