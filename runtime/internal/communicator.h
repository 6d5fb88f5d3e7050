// Collectives between the ranks of a tensor-parallel model (Megatron-style:
// each rank holds a slice of every layer and the partial results are summed).
// Two implementations behind one interface: an in-process group whose ranks
// are threads on the CPU (CI checks the sharded model against the unsharded
// one with it) and NCCL for the GPUs of one process. Every rank calls the
// same collectives in the same order from its own thread; a call returns
// once every rank has made it.
#ifndef GANTRY_RUNTIME_INTERNAL_COMMUNICATOR_H_
#define GANTRY_RUNTIME_INTERNAL_COMMUNICATOR_H_

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"

namespace gantry::runtime {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: `tensor` (contiguous, the same shape and dtype on every rank)
  // becomes the sum over the ranks. Throws if the group was aborted.
  virtual void AllReduceSum(at::Tensor& tensor) = 0;
  // [size * in.size(0), ...]: every rank's `in` (contiguous, same shape),
  // concatenated along dim 0 in rank order.
  virtual at::Tensor AllGather(const at::Tensor& in) = 0;
  // Wakes every rank blocked in a collective (and fails all later ones):
  // called when a rank fails mid-step, so the others do not wait forever.
  virtual void Abort() = 0;
};

// `size` communicators of one in-process group, rank r at index r. Each sums
// in rank order, so every rank gets bit-identical results.
std::vector<std::unique_ptr<Communicator>> MakeInProcessGroup(int size);

// NCCL communicators for `devices` (CUDA ordinals), rank r on devices[r];
// UNIMPLEMENTED in builds without NCCL or a CUDA LibTorch.
absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> MakeNcclGroup(const std::vector<int>& devices);
bool HaveNccl();

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_COMMUNICATOR_H_
