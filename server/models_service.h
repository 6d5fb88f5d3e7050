// gantry.v1.Models: List, Get, Load, Unload.
#ifndef GANTRY_SERVER_MODELS_SERVICE_H_
#define GANTRY_SERVER_MODELS_SERVICE_H_

#include "gantry/v1/gantry.grpc.pb.h"
#include "scheduler/model_registry.h"
#include "server/auth.h"

namespace gantry::server {

class ModelsService final : public gantry::v1::Models::Service {
 public:
  // `auth` (may be null: no authentication): reading states needs an API
  // token, Load and Unload an admin token.
  explicit ModelsService(scheduler::ModelRegistry* registry, const Authorizer* auth = nullptr)
      : registry_(registry), auth_(auth) {}

  grpc::Status List(grpc::ServerContext*, const v1::ListModelsRequest*, v1::ListModelsResponse* response) override;
  grpc::Status Get(grpc::ServerContext*, const v1::GetModelRequest* request, v1::ModelStatus* response) override;
  grpc::Status Load(grpc::ServerContext*, const v1::LoadModelRequest* request, v1::ModelStatus* response) override;
  grpc::Status Unload(grpc::ServerContext*, const v1::UnloadModelRequest* request, v1::ModelStatus* response) override;

 private:
  absl::Status Authorize(const grpc::ServerContext* context, Access access, const char* what) const {
    return auth_ ? auth_->Check(*context, access, what) : absl::OkStatus();
  }

  scheduler::ModelRegistry* registry_;
  const Authorizer* auth_;
};

void ToProto(const scheduler::ModelSnapshot& snapshot, v1::ModelStatus* out);

}  // namespace gantry::server

#endif  // GANTRY_SERVER_MODELS_SERVICE_H_
