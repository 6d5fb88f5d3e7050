// absl::Status <-> grpc::Status at the server's edge.
#ifndef GANTRY_SERVER_STATUS_UTIL_H_
#define GANTRY_SERVER_STATUS_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"

namespace gantry::server {

inline grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace gantry::server

#endif  // GANTRY_SERVER_STATUS_UTIL_H_
