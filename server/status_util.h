// absl::Status -> grpc::Status at the server's edge. Every refusal carries
// its reason (scheduler/error_reason.h) as a google.rpc.ErrorInfo in the
// status details, so grpcurl shows it and clients branch on it, never on
// the message.
#ifndef GANTRY_SERVER_STATUS_UTIL_H_
#define GANTRY_SERVER_STATUS_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "scheduler/error_reason.h"

namespace gantry::server {

inline grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  google::rpc::ErrorInfo info;
  info.set_reason(ReasonOrCode(status));
  info.set_domain(std::string(kErrorDomain));
  google::rpc::Status details;
  details.set_code(static_cast<int>(status.code()));
  details.set_message(std::string(status.message()));
  details.add_details()->PackFrom(info);
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()),
                      details.SerializeAsString());
}

// Why the client side ended a call: its deadline, or a cancellation
// (`otherwise` says which kind). The client's own timer usually fires a
// little before the server's copy of the deadline passes, so an end within
// 250 ms of it is the deadline.
inline absl::Status EndedByClient(const grpc::ServerContextBase& context, const char* otherwise) {
  const bool expired = context.deadline() <= std::chrono::system_clock::now() + std::chrono::milliseconds(250);
  return expired ? absl::DeadlineExceededError("deadline exceeded") : absl::CancelledError(otherwise);
}

}  // namespace gantry::server

#endif  // GANTRY_SERVER_STATUS_UTIL_H_
