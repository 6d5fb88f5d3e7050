// The LibTorch forward path: attention metadata as padded groups
// (attention.cc) and LlamaModel::Forward built from ATen operators. Used on
// the CPU, and on CUDA in builds without Gantry's kernels.
#include "runtime/internal/forward.h"
#include "runtime/internal/torch_util.h"

#include <stdexcept>
#include <vector>

namespace gantry::runtime {
namespace {

class TorchForward final : public Forward {
 public:
  TorchForward(LlamaModel* model, int64_t block_size) : model_(model), block_size_(block_size) {}

  ForwardOutput Run(const ForwardBatch& batch) override {
    const at::Device device = model_->device();
    AttentionBatch attention =
        BuildAttentionBatch(batch.sequences, block_size_, model_->config().sliding_window, device);
    at::Tensor ids = Upload(batch.token_ids, device);
    FillPendingTokens(batch, ids);
    at::Tensor rows = Upload(batch.logit_rows, device);
    return {model_->Forward(ids, attention, rows), at::Tensor()};
  }

  std::string Describe() const override { return "torch"; }

 private:
  LlamaModel* model_;
  int64_t block_size_;
};

}  // namespace

void FillPendingTokens(const ForwardBatch& batch, at::Tensor ids) {
  const int64_t n = static_cast<int64_t>(batch.pending_rows.size());
  if (n == 0) return;
  if (static_cast<int64_t>(batch.pending_source_rows.size()) != n || !batch.pending_source.defined()) {
    throw std::invalid_argument("run-ahead tokens without their source");
  }
  std::vector<int64_t> index(batch.pending_rows);
  index.insert(index.end(), batch.pending_source_rows.begin(), batch.pending_source_rows.end());
  const at::Tensor both = Upload(index, ids.device());  // [2 n]: destination rows, then source rows
  const at::Tensor values = batch.pending_source.index_select(0, both.narrow(0, n, n));
  ids.index_copy_(0, both.narrow(0, 0, n), values.to(ids.scalar_type()));
}

std::unique_ptr<Forward> MakeTorchForward(LlamaModel* model, int64_t block_size) {
  return std::make_unique<TorchForward>(model, block_size);
}

}  // namespace gantry::runtime
