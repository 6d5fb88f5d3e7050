#include "runtime/nccl/nccl_group.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <set>

#include "absl/strings/str_cat.h"

namespace gantry::nccl {

struct NcclGroup::Comms {
  std::vector<ncclComm_t> comms;
  std::atomic<bool> aborted{false};
};

namespace {

ncclDataType_t ToNccl(DataType type) {
  switch (type) {
    case DataType::kFloat32: return ncclFloat32;
    case DataType::kFloat16: return ncclFloat16;
    case DataType::kBFloat16: return ncclBfloat16;
  }
  return ncclFloat32;
}

absl::Status Checked(const char* what, ncclResult_t result) {
  if (result == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("NCCL ", what, " failed: ", ncclGetErrorString(result)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclGroup>> NcclGroup::Create(const std::vector<int>& devices) {
  if (devices.empty()) return absl::InvalidArgumentError("an NCCL group needs at least one device");
  int present = 0;
  if (cudaGetDeviceCount(&present) != cudaSuccess) {
    (void)cudaGetLastError();
    present = 0;
  }
  std::set<int> distinct;
  for (int d : devices) {
    if (d < 0 || d >= present) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor parallelism needs GPU ", d, ", but this machine has ", present, " GPU(s)"));
    }
    if (!distinct.insert(d).second) return absl::InvalidArgumentError(absl::StrCat("GPU ", d, " is listed twice"));
  }
  std::unique_ptr<NcclGroup> group(new NcclGroup());
  group->devices_ = devices;
  group->comms_ = std::make_unique<Comms>();
  group->comms_->comms.resize(devices.size());
  if (auto s = Checked("ncclCommInitAll", ncclCommInitAll(group->comms_->comms.data(), static_cast<int>(devices.size()),
                                                          devices.data()));
      !s.ok()) {
    group->comms_->comms.clear();
    return s;
  }
  return group;
}

NcclGroup::~NcclGroup() {
  if (!comms_) return;
  for (ncclComm_t comm : comms_->comms) {
    if (comm == nullptr) continue;
    if (comms_->aborted.load()) continue;  // ncclCommAbort already freed it
    (void)ncclCommDestroy(comm);
  }
}

absl::Status NcclGroup::AllReduceSum(int rank, void* data, size_t count, DataType type, CUstream_st* stream) {
  if (comms_->aborted.load()) return absl::AbortedError("the NCCL group was aborted after a rank failed");
  return Checked("all-reduce", ncclAllReduce(data, data, count, ToNccl(type), ncclSum, comms_->comms[rank], stream));
}

absl::Status NcclGroup::AllGather(int rank, const void* in, void* out, size_t count, DataType type,
                                  CUstream_st* stream) {
  if (comms_->aborted.load()) return absl::AbortedError("the NCCL group was aborted after a rank failed");
  return Checked("all-gather", ncclAllGather(in, out, count, ToNccl(type), comms_->comms[rank], stream));
}

void NcclGroup::Abort() {
  if (comms_->aborted.exchange(true)) return;
  for (ncclComm_t comm : comms_->comms) {
    if (comm != nullptr) (void)ncclCommAbort(comm);
  }
}

}  // namespace gantry::nccl
