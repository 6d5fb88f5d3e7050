// NCCL communicators for the GPUs of one process (tensor parallelism): one
// communicator per rank, made together with ncclCommInitAll at model load and
// destroyed at unload. Torch-free, behind a pointer-and-count interface like
// runtime/cuda/kernels.h, so CI compiles and links it wherever NCCL's header
// and library are (CUDA's toolkit carries them) without a CUDA LibTorch.
// Each rank's calls come from that rank's own thread, enqueued on the given
// stream, so they can be captured in that rank's CUDA graphs.
#ifndef GANTRY_RUNTIME_NCCL_NCCL_GROUP_H_
#define GANTRY_RUNTIME_NCCL_NCCL_GROUP_H_

#include <cstddef>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace gantry::nccl {

enum class DataType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

class NcclGroup {
 public:
  // One rank per entry of `devices` (CUDA ordinals, distinct), in that order.
  static absl::StatusOr<std::unique_ptr<NcclGroup>> Create(const std::vector<int>& devices);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int size() const { return static_cast<int>(devices_.size()); }
  int device(int rank) const { return devices_[rank]; }

  // In place: data [count] on rank's device becomes the sum over all ranks.
  absl::Status AllReduceSum(int rank, void* data, size_t count, DataType type, CUstream_st* stream);
  // out [size * count] on rank's device: every rank's `in` [count], in rank order.
  absl::Status AllGather(int rank, const void* in, void* out, size_t count, DataType type, CUstream_st* stream);
  // Ends every pending and future operation with an error (a rank failed
  // mid-step, so the others would wait for it forever).
  void Abort();

 private:
  NcclGroup() = default;
  struct Comms;
  std::vector<int> devices_;
  std::unique_ptr<Comms> comms_;
};

}  // namespace gantry::nccl

#endif  // GANTRY_RUNTIME_NCCL_NCCL_GROUP_H_
