// The LibTorch forward path: attention metadata as padded groups
// (attention.cc) and LlamaModel::Forward built from ATen operators. Used on
// the CPU, and on CUDA in builds without Gantry's kernels.
#include "runtime/internal/forward.h"
#include "runtime/internal/torch_util.h"

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
    at::Tensor rows = Upload(batch.logit_rows, device);
    return {model_->Forward(ids, attention, rows), at::Tensor()};
  }

  std::string Describe() const override { return "torch"; }

 private:
  LlamaModel* model_;
  int64_t block_size_;
};

}  // namespace

std::unique_ptr<Forward> MakeTorchForward(LlamaModel* model, int64_t block_size) {
  return std::make_unique<TorchForward>(model, block_size);
}

}  // namespace gantry::runtime
