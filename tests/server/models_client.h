// Models.Load and Models.Unload as the integration tests call them.
#ifndef GANTRY_TESTS_SERVER_MODELS_CLIENT_H_
#define GANTRY_TESTS_SERVER_MODELS_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "gantry/v1/gantry.grpc.pb.h"

namespace gantry::testing {

inline grpc::Status LoadModel(v1::Models::Stub& models, const std::string& name, v1::ModelStatus* status) {
  grpc::ClientContext context;
  v1::LoadModelRequest request;
  request.set_name(name);
  return models.Load(&context, request, status);
}

inline grpc::Status UnloadModel(v1::Models::Stub& models, const std::string& name, v1::ModelStatus* status) {
  grpc::ClientContext context;
  v1::UnloadModelRequest request;
  request.set_name(name);
  return models.Unload(&context, request, status);
}

}  // namespace gantry::testing

#endif  // GANTRY_TESTS_SERVER_MODELS_CLIENT_H_
