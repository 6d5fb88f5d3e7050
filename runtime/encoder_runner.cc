#include "runtime/encoder_runner.h"

#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/internal/encoder_model.h"
#include "runtime/internal/torch_util.h"
#include "runtime/internal/staged_upload_sink.h"
#ifdef GANTRY_WITH_LT_GEMM
#include "runtime/cuda/lt_gemm.h"
#endif

namespace gantry::runtime {
namespace {

class TorchEncoderRunner final : public EncoderRunner {
 public:
  TorchEncoderRunner(EncoderInfo info, std::unique_ptr<EncoderModel> model, at::Device device,
                     int64_t group_overhead_tokens)
      : info_(std::move(info)), model_(std::move(model)), device_(device),
        group_overhead_tokens_(group_overhead_tokens) {}

  const EncoderInfo& info() const override { return info_; }

  absl::StatusOr<std::vector<std::vector<float>>> Encode(absl::Span<const EncoderInput> batch) override {
    if (batch.empty()) return std::vector<std::vector<float>>();
    const EncoderConfig& config = info_.config;
    std::vector<int64_t> input_lengths(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      absl::Status status = CheckEncoderInput(batch[i], i, {info_.max_tokens, config.vocab_size, config.type_vocab_size});
      if (absl::IsOutOfRange(status)) return absl::InvalidArgumentError(status.message());
      if (!status.ok()) return status;
      input_lengths[i] = static_cast<int64_t>(batch[i].tokens.size());
    }
    std::vector<std::vector<float>> result(batch.size());
    for (const std::vector<size_t>& group : GroupInputsByLength(input_lengths, group_overhead_tokens_)) {
      if (absl::Status s = ForwardGroup(batch, group, &result); !s.ok()) return s;
    }
    return result;
  }

 private:
  // One padded forward of batch[group...] (group: input indices, shortest
  // first), its rows written to (*result)[index].
  absl::Status ForwardGroup(absl::Span<const EncoderInput> batch, const std::vector<size_t>& group,
                            std::vector<std::vector<float>>* result) {
    const int64_t rows = static_cast<int64_t>(group.size());
    const int64_t length = static_cast<int64_t>(batch[group.back()].tokens.size());
    std::vector<int64_t> ids(rows * length, info_.config.pad_token_id), types(rows * length, 0), lengths(rows);
    bool padded = false;
    for (int64_t r = 0; r < rows; ++r) {
      const EncoderInput& input = batch[group[r]];
      std::copy(input.tokens.begin(), input.tokens.end(), ids.begin() + r * length);
      std::copy(input.token_types.begin(), input.token_types.end(), types.begin() + r * length);
      lengths[r] = static_cast<int64_t>(input.tokens.size());
      padded = padded || lengths[r] < length;
    }
    try {
      c10::InferenceMode guard;
      at::DeviceGuard device_guard(device_);
      at::Tensor out = model_->Forward(Upload(ids, device_).view({rows, length}),
                                       Upload(types, device_).view({rows, length}), Upload(lengths, device_), padded)
                           .to(at::kCPU)
                           .contiguous();
      const float* data = out.data_ptr<float>();
      const int64_t width = out.size(1);
      for (int64_t r = 0; r < rows; ++r) (*result)[group[r]].assign(data + r * width, data + (r + 1) * width);
      return absl::OkStatus();
    } catch (const std::exception& e) {
      if (IsOutOfMemory(e)) {
        ReleaseCachedDeviceMemory();
        return absl::ResourceExhaustedError(absl::StrCat("out of memory encoding ", rows, " inputs of up to ",
                                                         length, " tokens on ", device_.str()));
      }
      return absl::InternalError(absl::StrCat("encoding failed: ", ErrorText(e)));
    }
  }

  EncoderInfo info_;
  std::unique_ptr<EncoderModel> model_;
  at::Device device_;
  const int64_t group_overhead_tokens_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EncoderRunner>> LoadEncoder(const EncoderLoadOptions& options) {
  auto config = LoadEncoderConfig(options.model_dir);
  if (!config.ok()) return config.status();
  auto device = ParseDevice(options.device);
  if (!device.ok()) return device.status();
  auto dtype = ResolveModelDtype(options.dtype, config->dtype, *device);
  if (!dtype.ok()) return dtype.status();
  auto checkpoint = Checkpoint::Open(options.model_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  EncoderInfo info;
  info.config = *config;
  info.device = device->str();
  info.dtype = ScalarTypeName(*dtype);
  info.max_tokens = config->max_tokens();
  info.output_size = config->output_size();
  info.execution = "torch, padded batches grouped by length";
  if (options.last_layer_output_rows_only && OutputReadsOneRow(*config, options.pooling)) {
    absl::StrAppend(&info.execution, ", the last layer at the rows the output reads");
  }
  const int64_t group_overhead_tokens =
      options.group_overhead_tokens > 0 ? options.group_overhead_tokens : device->is_cuda() ? 2048 : 64;
  EncoderCudaPaths cuda;
  if (device->is_cuda()) {
#ifdef GANTRY_WITH_CUDA_KERNELS
    cuda.kernels = options.cuda_kernels;
#endif
    cuda.gelu_epilogue = options.cuda_gelu_epilogue && *dtype != at::kFloat && config->hidden_act != "relu";
    if (cuda.kernels) {
      absl::StrAppend(&info.execution, ", embeddings + LayerNorm and residual add + LayerNorm in one kernel each");
    }
    if (cuda.gelu_epilogue) absl::StrAppend(&info.execution, ", GELU in cuBLASLt's epilogue");
  }
  try {
    c10::InferenceMode guard;
    at::DeviceGuard device_guard(*device);
#ifdef GANTRY_WITH_LT_GEMM
    if (device->is_cuda() && options.cuda_lt_gemm && *dtype != at::kFloat) {
      auto gemm = cuda::LtGemm::Create(kEncoderLtGemmWorkspaceBytes);  // on the device the guard made current
      if (!gemm.ok()) return gemm.status();
      cuda.lt_gemm = std::shared_ptr<cuda::LtGemm>(*std::move(gemm));
      absl::StrAppend(&info.execution, ", products through cuBLASLt tuned per shape");
      cuda.residual_epilogue = options.cuda_residual_epilogue;
      if (cuda.residual_epilogue) absl::StrAppend(&info.execution, ", residual adds in cuBLASLt's epilogue");
    }
#endif
    auto sink = StagedUploadSinkFor(*device, options.cuda_staged_upload);
    if (!sink.ok()) return sink.status();
    auto weights = LoadEncoderWeights(**checkpoint, *config, *device, *dtype, sink->get());
    if (!weights.ok()) return weights.status();
    info.weight_bytes = weights->device_bytes;
    auto model = std::make_unique<EncoderModel>(*config, *std::move(weights), options.pooling, options.normalize,
                                                 cuda, options.last_layer_output_rows_only);
    return std::unique_ptr<EncoderRunner>(
        std::make_unique<TorchEncoderRunner>(std::move(info), std::move(model), *device, group_overhead_tokens));
  } catch (const std::exception& e) {
    if (IsOutOfMemory(e)) {
      ReleaseCachedDeviceMemory();
      return absl::ResourceExhaustedError(
          absl::StrCat("out of memory loading ", options.model_dir, " onto ", device->str(), ": ", ErrorText(e)));
    }
    return absl::InternalError(absl::StrCat("loading ", options.model_dir, " failed: ", ErrorText(e)));
  }
}

}  // namespace gantry::runtime
