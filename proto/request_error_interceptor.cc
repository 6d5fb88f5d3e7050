#include "proto/request_error_interceptor.h"

#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "google/protobuf/descriptor.h"
#include "proto/request_traits.h"

namespace gantry::proto {
namespace {

using grpc::experimental::InterceptionHookPoints;

// For a request gRPC parsed itself: sync unary methods parse through
// SerializationTraits<MessageLite> (the generated code's choice), which
// DeserializeRequest cannot specialise, so only the type can be named.
std::optional<grpc::Status> NotValidMessage(const char* method) {
  if (method == nullptr || method[0] != '/') return std::nullopt;
  // "/gantry.v1.Models/Get" -> "gantry.v1.Models.Get"
  const std::string name = absl::StrReplaceAll(method + 1, {{"/", "."}});
  const google::protobuf::MethodDescriptor* descriptor =
      google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(name);
  if (descriptor == nullptr) return std::nullopt;
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat("request is not a valid ", descriptor->input_type()->full_name(), " message"));
}

// What gRPC sends for a request that does not parse: its callback handlers
// UNIMPLEMENTED, its protobuf parsing INTERNAL (with proto3's empty
// InitializationErrorString), both without a message.
bool IsGrpcParseFailure(const grpc::Status& status) {
  return status.error_message().empty() &&
         (status.error_code() == grpc::StatusCode::UNIMPLEMENTED || status.error_code() == grpc::StatusCode::INTERNAL);
}

class RequestErrorInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit RequestErrorInterceptor(const char* method) : method_(method) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      // The server has just deserialised the request, on this thread; a
      // null message is one that failed.
      std::optional<grpc::Status> error = internal::TakeRequestError();
      if (methods->GetRecvMessage() == nullptr) {
        failed_ = true;
        error_ = std::move(error);
      }
    }
    if (failed_ && methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      if (!error_ && IsGrpcParseFailure(methods->GetSendStatus())) error_ = NotValidMessage(method_);
      if (error_) methods->ModifySendStatus(*error_);
    }
    methods->Proceed();
  }

 private:
  const char* const method_;
  bool failed_ = false;
  std::optional<grpc::Status> error_;
};

class RequestErrorInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    // Only these have the server parse their request before the handler runs;
    // the others read theirs in the handler, which sees a failure itself.
    using Type = grpc::experimental::ServerRpcInfo::Type;
    if (info->type() != Type::UNARY && info->type() != Type::SERVER_STREAMING) return nullptr;
    return new RequestErrorInterceptor(info->method());
  }
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewRequestErrorInterceptorFactory() {
  return std::make_unique<RequestErrorInterceptorFactory>();
}

}  // namespace gantry::proto
