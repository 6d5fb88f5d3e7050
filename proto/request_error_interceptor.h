// Sends the status a client can act on for a request that does not parse
// (proto/request_traits.h). gRPC's callback handlers drop a failed
// deserialisation's status and finish the call UNIMPLEMENTED with an empty
// message (server_callback_handlers.h, gRPC 1.51): this puts
// DeserializeRequest's INVALID_ARGUMENT back. Sync unary methods parse
// through gRPC's own SerializationTraits<MessageLite> and answer INTERNAL with
// an empty message: this makes that INVALID_ARGUMENT "request is not a valid
// gantry.v1.GetModelRequest message" (the bytes are gone by then, so no
// field is named).
#ifndef GANTRY_PROTO_REQUEST_ERROR_INTERCEPTOR_H_
#define GANTRY_PROTO_REQUEST_ERROR_INTERCEPTOR_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>

namespace gantry::proto {

// For grpc::ServerBuilder::experimental().SetInterceptorCreators.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewRequestErrorInterceptorFactory();

}  // namespace gantry::proto

#endif  // GANTRY_PROTO_REQUEST_ERROR_INTERCEPTOR_H_
