// LoadModel and the LibTorch implementation of ModelRunner.
#include <torch/torch.h>

#include <map>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/checkpoint.h"
#include "runtime/internal/attention.h"
#include "runtime/internal/forward.h"
#include "runtime/internal/llama_model.h"
#include "runtime/internal/penalty_state.h"
#include "runtime/internal/sampler.h"
#include "runtime/internal/torch_util.h"
#include "runtime/internal/weights.h"
#include "runtime/kv_cache.h"
#include "runtime/model_runner.h"

namespace gantry::runtime {

namespace {

struct Sequence {
  std::vector<int32_t> tokens;  // prompt, then generated
  int64_t num_prompt = 0;
  int64_t num_computed = 0;     // tokens whose keys/values are in the cache
  std::vector<int32_t> block_table;
  SamplingParams sampling;
  int64_t penalty_row = 0;  // its PenaltyState row; 0 without penalties
};

bool HasPenalties(const SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
}

class TorchModelRunner final : public ModelRunner {
 public:
  TorchModelRunner(ModelInfo info, std::unique_ptr<LlamaModel> model, std::unique_ptr<Forward> forward,
                   at::Device device)
      : info_(std::move(info)), model_(std::move(model)), forward_(std::move(forward)), device_(device),
        allocator_(info_.num_blocks), penalties_(info_.config.vocab_size, device) {}

  ~TorchModelRunner() override {
    forward_.reset();
    model_.reset();
    ReleaseCachedDeviceMemory();
  }

  const ModelInfo& info() const override { return info_; }

  // Samples once greedily and once with a temperature and filters, from a
  // throw-away sequence: the sampling kernels load here, not in the first
  // request. The sequence's block is free again afterwards.
  absl::Status WarmUpSampling() {
    SamplingParams filtered;
    filtered.top_k = 40;
    filtered.top_p = 0.9f;
    for (const SamplingParams& params : {SamplingParams{0.0f}, filtered}) {
      auto id = AddSequence({{0}, {}, params});
      if (!id.ok()) return id.status();
      auto step = Step({StepItem{*id, 1}});
      (void)RemoveSequence(*id);
      if (!step.ok()) return step.status();
    }
    return absl::OkStatus();
  }

  absl::StatusOr<SequenceId> AddSequence(SequenceSpec spec) override {
    if (spec.prompt.empty()) return absl::InvalidArgumentError("prompt is empty: at least one token is needed");
    if (auto s = ValidateSamplingParams(spec.sampling, info_.config.vocab_size); !s.ok()) return s;
    Sequence seq;
    seq.num_prompt = static_cast<int64_t>(spec.prompt.size());
    seq.tokens = std::move(spec.prompt);
    seq.tokens.insert(seq.tokens.end(), spec.generated.begin(), spec.generated.end());
    const int64_t vocab = info_.config.vocab_size;
    for (size_t i = 0; i < seq.tokens.size(); ++i) {
      if (seq.tokens[i] < 0 || seq.tokens[i] >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", seq.tokens[i], " at index ", i,
                                                       " is outside the vocabulary [0, ", vocab, ")"));
      }
    }
    if (static_cast<int64_t>(seq.tokens.size()) > info_.max_context) {
      return absl::InvalidArgumentError(absl::StrCat("sequence of ", seq.tokens.size(),
                                                     " tokens exceeds the context of ",
                                                     info_.max_context));
    }
    seq.sampling = spec.sampling;
    if (HasPenalties(seq.sampling)) {
      try {
        seq.penalty_row = penalties_.Add(seq.tokens, seq.num_prompt);
      } catch (const std::exception& e) {
        return absl::ResourceExhaustedError(absl::StrCat("penalty state for a new sequence: ", e.what()));
      }
    }
    SequenceId id = next_id_++;
    sequences_.emplace(id, std::move(seq));
    return id;
  }

  absl::Status RemoveSequence(SequenceId id) override {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) return UnknownSequence(id);
    allocator_.Free(&it->second.block_table);
    if (it->second.penalty_row > 0) penalties_.Remove(it->second.penalty_row);
    sequences_.erase(it);
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> NumTokens(SequenceId id) const override {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) return UnknownSequence(id);
    return static_cast<int64_t>(it->second.tokens.size());
  }

  absl::StatusOr<int64_t> NumComputed(SequenceId id) const override {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) return UnknownSequence(id);
    return it->second.num_computed;
  }

  int64_t FreeBlocks() const override { return allocator_.num_free(); }

  absl::StatusOr<int64_t> BlocksNeeded(SequenceId id, int64_t num_tokens) const override {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) return UnknownSequence(id);
    const Sequence& seq = it->second;
    return std::max<int64_t>(0, BlocksForTokens(seq.num_computed + num_tokens, info_.block_size) -
                                    static_cast<int64_t>(seq.block_table.size()));
  }

  absl::StatusOr<StepResult> Step(absl::Span<const StepItem> items) override {
    if (items.empty()) return StepResult{};
    // Validate everything before touching any state.
    std::set<SequenceId> seen;
    int64_t blocks_needed = 0, total_tokens = 0;
    for (const StepItem& item : items) {
      auto it = sequences_.find(item.id);
      if (it == sequences_.end()) return UnknownSequence(item.id);
      if (!seen.insert(item.id).second) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", item.id, " is listed twice in one step"));
      }
      const Sequence& seq = it->second;
      const int64_t pending = static_cast<int64_t>(seq.tokens.size()) - seq.num_computed;
      if (item.num_tokens < 1 || item.num_tokens > pending) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", item.id, ": num_tokens ",
                                                       item.num_tokens, " must be in [1, ", pending,
                                                       "] (tokens not yet computed)"));
      }
      if (seq.num_computed + item.num_tokens > info_.max_context) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", item.id, ": ",
                                                       seq.num_computed + item.num_tokens,
                                                       " tokens exceed the context of ", info_.max_context));
      }
      blocks_needed += *BlocksNeeded(item.id, item.num_tokens);
      total_tokens += item.num_tokens;
    }
    if (blocks_needed > allocator_.num_free()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "KV cache: this step of ", items.size(), " sequences and ", total_tokens, " tokens needs ",
          blocks_needed, " more blocks, ", allocator_.num_free(), " of ", info_.num_blocks, " free"));
    }
    for (const StepItem& item : items) {
      Sequence& seq = sequences_.at(item.id);
      // Cannot fail: the total was checked above.
      (void)allocator_.Allocate(*BlocksNeeded(item.id, item.num_tokens), &seq.block_table);
    }

    try {
      return RunStep(items, total_tokens);
    } catch (const std::exception& e) {
      if (IsOutOfMemory(e)) {
        ReleaseCachedDeviceMemory();
        return absl::ResourceExhaustedError(absl::StrCat(
            "out of device memory running a step of ", items.size(), " sequences and ", total_tokens,
            " tokens on ", info_.device, "; retry with fewer tokens"));
      }
      return absl::InternalError(absl::StrCat("forward step failed: ", e.what()));
    }
  }

 private:
  static absl::Status UnknownSequence(SequenceId id) {
    return absl::NotFoundError(absl::StrCat("no sequence with id ", id));
  }

  absl::StatusOr<StepResult> RunStep(absl::Span<const StepItem> items, int64_t total_tokens) {
    c10::InferenceMode guard;
    ForwardBatch batch;
    std::vector<int64_t> sample_rows;  // rows of the logits that sample, in item order
    std::vector<SamplerRow> sampler_rows;
    std::vector<int> row_of_item(items.size(), -1);
    batch.token_ids.reserve(total_tokens);
    for (size_t i = 0; i < items.size(); ++i) {
      const Sequence& seq = sequences_.at(items[i].id);
      batch.sequences.push_back({seq.num_computed, items[i].num_tokens, &seq.block_table});
      for (int64_t t = 0; t < items[i].num_tokens; ++t) batch.token_ids.push_back(seq.tokens[seq.num_computed + t]);
      const bool reaches_end =
          seq.num_computed + items[i].num_tokens == static_cast<int64_t>(seq.tokens.size());
      if (reaches_end || items[i].return_logits) {
        row_of_item[i] = static_cast<int>(batch.logit_rows.size());
        batch.logit_rows.push_back(static_cast<int64_t>(batch.token_ids.size()) - 1);
      }
      if (reaches_end) {
        sample_rows.push_back(row_of_item[i]);
        sampler_rows.push_back({&seq.sampling, static_cast<int64_t>(seq.tokens.size()), seq.penalty_row});
      }
    }
    Sampler sampler(sampler_rows, info_.config.vocab_size, device_, &penalties_);
    batch.extra = &sampler.host_params();
    ForwardOutput output = forward_->Run(batch);
    sampler.Bind(output.extra);
    at::Tensor& logits = output.logits;  // [rows, vocab]

    std::vector<SampledToken> sampled;
    if (!sample_rows.empty()) {
      at::Tensor sample_logits = sample_rows.size() == batch.logit_rows.size()
                                     ? logits
                                     : logits.index_select(0, Upload(sample_rows, device_));
      sampled = sampler.Sample(sample_logits);
    }
    at::Tensor host_logits;
    bool any_logits = false;
    for (const StepItem& item : items) any_logits |= item.return_logits;
    if (any_logits) host_logits = logits.to(at::kCPU).contiguous();

    // Commit: nothing above changed a sequence.
    StepResult result;
    size_t next_sample = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      Sequence& seq = sequences_.at(items[i].id);
      SequenceStepResult out;
      out.id = items[i].id;
      seq.num_computed += items[i].num_tokens;
      if (seq.num_computed == static_cast<int64_t>(seq.tokens.size())) {
        SampledToken& token = sampled[next_sample++];
        out.sampled = true;
        out.token = token.token;
        out.logprob = token.logprob;
        out.top_logprobs = std::move(token.top_logprobs);
        seq.tokens.push_back(token.token);
      }
      if (items[i].return_logits) {
        const float* row = host_logits.data_ptr<float>() + row_of_item[i] * host_logits.size(1);
        out.logits.assign(row, row + host_logits.size(1));
      }
      result.sequences.push_back(std::move(out));
    }
    return result;
  }

  ModelInfo info_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Forward> forward_;  // runs model_'s forward passes
  at::Device device_;
  BlockAllocator allocator_;
  PenaltyState penalties_;
  std::map<SequenceId, Sequence> sequences_;
  SequenceId next_id_ = 1;
};

absl::StatusOr<at::ScalarType> ResolveDtype(const LoadOptions& options, const ModelConfig& config,
                                            const at::Device& device) {
  std::string name = options.dtype.empty() ? config.dtype : options.dtype;
  if (options.dtype.empty() && device.is_cpu() && name == "float16") name = "float32";
  auto type = ParseScalarType(name);
  if (!type.ok()) return type.status();
  if (device.is_cpu() && *type == at::kHalf) {
    return absl::InvalidArgumentError(
        "dtype float16 is not supported on the CPU; use float32 or bfloat16");
  }
  return type;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRunner>> LoadModel(const LoadOptions& options) {
  auto config = LoadModelConfig(options.model_dir);
  if (!config.ok()) return config.status();
  auto device = ParseDevice(options.device);
  if (!device.ok()) return device.status();
  auto dtype = ResolveDtype(options, *config, *device);
  if (!dtype.ok()) return dtype.status();
  if (options.block_size < 1 || options.block_size > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size must be in [1, 1024], got ", options.block_size));
  }
  if (options.max_context < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_context must be >= 0 (0 = the model's), got ", options.max_context));
  }

  ModelInfo info;
  info.config = *config;
  info.device = device->str();
  info.dtype = ScalarTypeName(*dtype);
  info.block_size = options.block_size;
  info.max_context = options.max_context > 0 ? options.max_context : config->max_position_embeddings;
  const uint64_t element = static_cast<uint64_t>(c10::elementSize(*dtype));
  const uint64_t block_bytes = static_cast<uint64_t>(config->num_layers) * 2 * options.block_size *
                               config->num_kv_heads * config->head_dim * element;
  info.num_blocks = static_cast<int64_t>(options.kv_cache_bytes / block_bytes);
  if (info.num_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv_cache_bytes ", options.kv_cache_bytes,
                                                   " holds no block; one block of ", options.block_size,
                                                   " tokens takes ", block_bytes, " bytes"));
  }

  auto checkpoint = Checkpoint::Open(options.model_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  try {
    c10::InferenceMode guard;
    auto weights = LoadWeights(**checkpoint, *config, *device, *dtype);
    if (!weights.ok()) return weights.status();
    info.weight_bytes = weights->device_bytes;
    auto model = std::make_unique<LlamaModel>(*config, *std::move(weights), *device, *dtype,
                                              info.num_blocks, options.block_size);
    info.kv_cache_bytes = model->kv_cache_bytes();
    std::unique_ptr<Forward> forward;
    if (device->is_cuda() && options.cuda_kernels && HaveCudaKernels()) {
      CudaForwardOptions cuda_options;
      cuda_options.block_size = options.block_size;
      cuda_options.max_context = info.max_context;
      cuda_options.max_graph_batch = std::max<int64_t>(0, options.cuda_graph_max_batch);
      cuda_options.warm_step_tokens = std::min<int64_t>(options.warm_step_tokens, info.max_context);
      cuda_options.skinny_gemm = options.cuda_skinny_gemm;
      auto cuda_forward = MakeCudaForward(model.get(), cuda_options);
      if (!cuda_forward.ok()) return cuda_forward.status();
      forward = *std::move(cuda_forward);
    } else {
      forward = MakeTorchForward(model.get(), options.block_size);
    }
    info.execution = forward->Describe();
    auto runner = std::make_unique<TorchModelRunner>(std::move(info), std::move(model), std::move(forward), *device);
    if (device->is_cuda()) {
      if (auto status = runner->WarmUpSampling(); !status.ok()) return status;
    }
    return std::unique_ptr<ModelRunner>(std::move(runner));
  } catch (const std::exception& e) {
    if (IsOutOfMemory(e)) {
      ReleaseCachedDeviceMemory();
      return absl::ResourceExhaustedError(absl::StrCat("out of memory loading ", options.model_dir,
                                                       " onto ", device->str(), ": ", e.what()));
    }
    return absl::InternalError(absl::StrCat("loading ", options.model_dir, " failed: ", e.what()));
  }
}

}  // namespace gantry::runtime
