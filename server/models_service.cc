#include "server/models_service.h"

#include "server/status_util.h"

namespace gantry::server {

void ToProto(const scheduler::ModelSnapshot& s, v1::ModelStatus* out) {
  out->set_name(s.spec.name);
  switch (s.state) {
    case scheduler::ModelState::kUnloaded: out->set_state(v1::MODEL_STATE_UNLOADED); break;
    case scheduler::ModelState::kLoading: out->set_state(v1::MODEL_STATE_LOADING); break;
    case scheduler::ModelState::kReady: out->set_state(v1::MODEL_STATE_READY); break;
    case scheduler::ModelState::kUnloading: out->set_state(v1::MODEL_STATE_UNLOADING); break;
    case scheduler::ModelState::kFailed: out->set_state(v1::MODEL_STATE_FAILED); break;
  }
  out->set_error(s.error);
  out->set_path(s.spec.path);
  out->set_resident(s.spec.resident);
  out->set_cost_bytes(s.cost_bytes);
  out->set_idle_timeout_seconds(absl::ToDoubleSeconds(s.spec.idle_timeout));
  out->set_weights_at(s.weights_at);
  out->set_task(s.task);
  if (s.info) {
    for (const std::string& device : s.info->devices) out->add_devices(device);
    out->set_dtype(s.info->dtype);
    out->set_weight_bytes(s.info->weight_bytes);
    out->set_kv_cache_bytes(s.info->kv_cache_bytes);
    out->set_max_context(static_cast<uint32_t>(s.info->max_context));
  } else {
    if (s.devices.empty()) out->add_devices(s.device);
    for (const std::string& device : s.devices) out->add_devices(device);
    out->set_dtype(s.spec.dtype);
  }
  out->set_kv_blocks_total(s.stats.blocks_total);
  out->set_kv_blocks_free(s.stats.blocks_free);
  out->set_requests_running(static_cast<uint32_t>(s.stats.running));
  out->set_requests_waiting(static_cast<uint32_t>(s.stats.waiting));
  if (s.last_used) {
    const int64_t nanos = absl::ToUnixNanos(*s.last_used);
    out->mutable_last_used()->set_seconds(nanos / 1000000000);
    out->mutable_last_used()->set_nanos(static_cast<int32_t>(nanos % 1000000000));
  }
}

grpc::Status ModelsService::List(grpc::ServerContext* context, const v1::ListModelsRequest*,
                                 v1::ListModelsResponse* response) {
  if (auto s = Authorize(context, Access::kUse, "Models.List"); !s.ok()) return ToGrpc(s);
  for (const auto& snapshot : registry_->List()) ToProto(snapshot, response->add_models());
  for (const auto& [device, use] : registry_->BudgetUse()) {
    v1::DeviceBudget* budget = response->add_budgets();
    budget->set_device(device);
    budget->set_used_bytes(use.first);
    budget->set_total_bytes(use.second);
  }
  return grpc::Status::OK;
}

grpc::Status ModelsService::Get(grpc::ServerContext* context, const v1::GetModelRequest* request,
                                v1::ModelStatus* response) {
  if (auto s = Authorize(context, Access::kUse, "Models.Get"); !s.ok()) return ToGrpc(s);
  auto snapshot = registry_->Get(request->name());
  if (!snapshot.ok()) return ToGrpc(snapshot.status());
  ToProto(*snapshot, response);
  return grpc::Status::OK;
}

grpc::Status ModelsService::Load(grpc::ServerContext* context, const v1::LoadModelRequest* request,
                                 v1::ModelStatus* response) {
  if (auto s = Authorize(context, Access::kAdmin, "Models.Load"); !s.ok()) return ToGrpc(s);
  const bool wait = !request->has_wait() || request->wait();
  if (auto s = wait ? registry_->Load(request->name()) : registry_->StartLoad(request->name()); !s.ok()) {
    return ToGrpc(s);
  }
  ToProto(*registry_->Get(request->name()), response);
  return grpc::Status::OK;
}

grpc::Status ModelsService::Unload(grpc::ServerContext* context, const v1::UnloadModelRequest* request,
                                   v1::ModelStatus* response) {
  if (auto s = Authorize(context, Access::kAdmin, "Models.Unload"); !s.ok()) return ToGrpc(s);
  if (auto s = registry_->Unload(request->name(), request->force()); !s.ok()) return ToGrpc(s);
  ToProto(*registry_->Get(request->name()), response);
  return grpc::Status::OK;
}

}  // namespace gantry::server
