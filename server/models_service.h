// gantry.v1.Models: List, Get, Load, Unload.
#ifndef GANTRY_SERVER_MODELS_SERVICE_H_
#define GANTRY_SERVER_MODELS_SERVICE_H_

#include "gantry/v1/gantry.grpc.pb.h"
#include "scheduler/model_registry.h"

namespace gantry::server {

class ModelsService final : public gantry::v1::Models::Service {
 public:
  explicit ModelsService(scheduler::ModelRegistry* registry) : registry_(registry) {}

  grpc::Status List(grpc::ServerContext*, const v1::ListModelsRequest*, v1::ListModelsResponse* response) override;
  grpc::Status Get(grpc::ServerContext*, const v1::GetModelRequest* request, v1::ModelStatus* response) override;
  grpc::Status Load(grpc::ServerContext*, const v1::LoadModelRequest* request, v1::ModelStatus* response) override;
  grpc::Status Unload(grpc::ServerContext*, const v1::UnloadModelRequest* request, v1::ModelStatus* response) override;

 private:
  scheduler::ModelRegistry* registry_;
};

void ToProto(const scheduler::ModelSnapshot& snapshot, v1::ModelStatus* out);

}  // namespace gantry::server

#endif  // GANTRY_SERVER_MODELS_SERVICE_H_
