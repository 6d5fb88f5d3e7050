#include "runtime/internal/communicator.h"

#include <condition_variable>
#include <mutex>
#include <stdexcept>

#ifdef GANTRY_WITH_NCCL
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "runtime/internal/torch_util.h"
#include "runtime/nccl/nccl_group.h"
#endif

namespace gantry::runtime {
namespace {

// The state the ranks of an in-process group share: a reusable barrier and
// one slot per rank for the tensor it contributes.
class InProcessGroup {
 public:
  explicit InProcessGroup(int size) : size_(size), slots_(size) {}

  int size() const { return size_; }
  void Post(int rank, const at::Tensor& tensor) { slots_[rank] = tensor; }
  const at::Tensor& Slot(int rank) const { return slots_[rank]; }

  // Returns once all ranks have arrived; throws once the group is aborted.
  void Barrier() {
    std::unique_lock<std::mutex> lock(mu_);
    if (aborted_) throw std::runtime_error("the tensor-parallel group was aborted after a rank failed");
    const uint64_t generation = generation_;
    if (++arrived_ == size_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != generation || aborted_; });
    if (generation_ == generation) throw std::runtime_error("the tensor-parallel group was aborted after a rank failed");
  }

  void Abort() {
    std::lock_guard<std::mutex> lock(mu_);
    aborted_ = true;
    cv_.notify_all();
  }

 private:
  const int size_;
  std::vector<at::Tensor> slots_;  // written by its own rank before a barrier, read by all after it
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
};

class InProcessCommunicator final : public Communicator {
 public:
  InProcessCommunicator(std::shared_ptr<InProcessGroup> group, int rank) : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }

  void AllReduceSum(at::Tensor& tensor) override {
    group_->Post(rank_, tensor);
    group_->Barrier();
    at::Tensor sum = group_->Slot(0).clone();
    for (int r = 1; r < size(); ++r) sum.add_(group_->Slot(r));
    group_->Barrier();  // every rank has read every slot before any is overwritten
    tensor.copy_(sum);
  }

  at::Tensor AllGather(const at::Tensor& in) override {
    group_->Post(rank_, in);
    group_->Barrier();
    std::vector<at::Tensor> parts;
    for (int r = 0; r < size(); ++r) parts.push_back(group_->Slot(r));
    at::Tensor out = at::cat(parts, 0);
    group_->Barrier();
    return out;
  }

  void Abort() override { group_->Abort(); }

 private:
  std::shared_ptr<InProcessGroup> group_;
  const int rank_;
};

#ifdef GANTRY_WITH_NCCL
nccl::DataType NcclType(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return nccl::DataType::kFloat32;
    case at::kHalf: return nccl::DataType::kFloat16;
    case at::kBFloat16: return nccl::DataType::kBFloat16;
    default: throw std::invalid_argument("NCCL collectives take float32, float16 or bfloat16 tensors");
  }
}

// Enqueues on the rank's current CUDA stream, so a graph captured on that
// stream records the collective.
class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<nccl::NcclGroup> group, int rank) : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }

  void AllReduceSum(at::Tensor& tensor) override {
    ThrowIfError(group_->AllReduceSum(rank_, tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                               NcclType(tensor.scalar_type()), Stream()));
  }

  at::Tensor AllGather(const at::Tensor& in) override {
    std::vector<int64_t> shape = in.sizes().vec();
    shape[0] *= size();
    at::Tensor out = at::empty(shape, in.options());
    ThrowIfError(group_->AllGather(rank_, in.data_ptr(), out.data_ptr(), static_cast<size_t>(in.numel()),
                            NcclType(in.scalar_type()), Stream()));
    return out;
  }

  void Abort() override { group_->Abort(); }

 private:
  CUstream_st* Stream() const { return c10::cuda::getCurrentCUDAStream(group_->device(rank_)).stream(); }

  std::shared_ptr<nccl::NcclGroup> group_;
  const int rank_;
};
#endif

}  // namespace

std::vector<std::unique_ptr<Communicator>> MakeInProcessGroup(int size) {
  auto group = std::make_shared<InProcessGroup>(size);
  std::vector<std::unique_ptr<Communicator>> ranks;
  for (int r = 0; r < size; ++r) ranks.push_back(std::make_unique<InProcessCommunicator>(group, r));
  return ranks;
}

#ifdef GANTRY_WITH_NCCL
bool HaveNccl() { return true; }

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> MakeNcclGroup(const std::vector<int>& devices) {
  auto group = nccl::NcclGroup::Create(devices);
  if (!group.ok()) return group.status();
  std::shared_ptr<nccl::NcclGroup> shared = *std::move(group);
  std::vector<std::unique_ptr<Communicator>> ranks;
  for (int r = 0; r < shared->size(); ++r) ranks.push_back(std::make_unique<NcclCommunicator>(shared, r));
  return ranks;
}
#else
bool HaveNccl() { return false; }

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> MakeNcclGroup(const std::vector<int>&) {
  return absl::UnimplementedError("this build has no NCCL (it needs a CUDA LibTorch and NCCL's library)");
}
#endif

}  // namespace gantry::runtime
