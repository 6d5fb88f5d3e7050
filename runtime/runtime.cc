// LoadModel and the LibTorch implementation of ModelRunner.
#include <torch/torch.h>

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/checkpoint.h"
#include "runtime/cuda/kernels.h"  // kDecodeGemvMaxL2PrefetchUnits (a constant: no CUDA needed)
#include "runtime/host_tier_memory.h"
#include "runtime/internal/attention.h"
#include "runtime/internal/communicator.h"
#include "runtime/internal/forward.h"
#include "runtime/internal/llama_model.h"
#include "runtime/internal/penalty_state.h"
#include "runtime/internal/rank_worker.h"
#include "runtime/internal/sampler.h"
#include "runtime/internal/staged_upload_sink.h"
#include "runtime/internal/torch_util.h"
#include "runtime/internal/weights.h"
#include "runtime/model_runner.h"

namespace gantry::runtime {

namespace {

bool HasPenalties(const SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
}

// One tensor-parallel rank (the whole model when there is one): its shard of
// the model, its forward path and its end of the communicator. Members are
// destroyed in reverse order: the forward before the model, the model before
// the communicator it points to.
struct Rank {
  at::Device device{at::kCPU};
  std::unique_ptr<Communicator> communicator;  // nullptr with one rank
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Forward> forward;
};

// Each rank's weights on the CPU, pinned when they came from a GPU (so the
// copy back is a DMA at PCIe speed). Tied lm_head stays a view of the
// embeddings, as on the device.
class TorchHostWeights final : public HostWeights {
 public:
  at::ScalarType dtype = at::kFloat;
  std::vector<ModelWeights> ranks;
  uint64_t total_bytes = 0;
  uint64_t bytes() const override { return total_bytes; }
};

// `copy` applied to every tensor of `w` (undefined ones stay undefined); a
// lm_head that views the embeddings views the copy's.
ModelWeights MapWeights(const ModelWeights& w, const std::function<at::Tensor(const at::Tensor&)>& copy) {
  auto map = [&](const at::Tensor& t) { return t.defined() ? copy(t) : at::Tensor(); };
  ModelWeights out;
  out.embed_tokens = map(w.embed_tokens);
  out.final_norm = map(w.final_norm);
  const bool tied = w.lm_head.is_alias_of(w.embed_tokens);
  if (tied) {
    const int64_t row_bytes = w.embed_tokens.stride(0) * w.embed_tokens.element_size();
    const int64_t offset = (static_cast<const uint8_t*>(w.lm_head.data_ptr()) -
                            static_cast<const uint8_t*>(w.embed_tokens.data_ptr())) / row_bytes;
    out.lm_head = out.embed_tokens.narrow(0, offset, w.lm_head.size(0));
  } else {
    out.lm_head = map(w.lm_head);
  }
  for (const LayerWeights& l : w.layers) {
    LayerWeights c;
    c.input_norm = map(l.input_norm);
    c.qkv_proj = map(l.qkv_proj);
    c.qkv_bias = map(l.qkv_bias);
    c.q_norm = map(l.q_norm);
    c.k_norm = map(l.k_norm);
    c.o_proj = map(l.o_proj);
    c.o_bias = map(l.o_bias);
    c.post_norm = map(l.post_norm);
    c.gate_up_proj = map(l.gate_up_proj);
    c.gate_up_bias = map(l.gate_up_bias);
    c.down_proj = map(l.down_proj);
    c.down_bias = map(l.down_bias);
    out.layers.push_back(std::move(c));
  }
  out.device_bytes = w.device_bytes;
  return out;
}

class TorchModelRunner final : public ModelRunner {
 public:
  // ranks[0] samples; the others run on worker threads of their own.
  TorchModelRunner(ModelInfo info, std::vector<Rank> ranks)
      : info_(std::move(info)), ranks_(std::move(ranks)), device_(ranks_[0].device),
        penalties_(info_.config.vocab_size, device_) {
    for (size_t r = 1; r < ranks_.size(); ++r) workers_.push_back(std::make_unique<RankWorker>());
  }

  ~TorchModelRunner() override {
    workers_.clear();
    ranks_.clear();
    ReleaseCachedDeviceMemory();
  }

  const ModelInfo& info() const override { return info_; }
  void AddSetupSeconds(double seconds) { info_.setup_seconds += seconds; }

  // Samples once greedily and once with a temperature and filters, from a
  // throw-away sequence in block 0: the sampling kernels load here, not in
  // the first request.
  absl::Status WarmUpSampling() {
    SamplingParams filtered;
    filtered.top_k = 40;
    filtered.top_p = 0.9f;
    const std::vector<int32_t> tokens = {0};
    const std::vector<int32_t> table = {0};
    for (const SamplingParams& params : {SamplingParams{0.0f}, filtered}) {
      StepSequence seq;
      seq.tokens = tokens;
      seq.num_prompt = 1;
      seq.block_table = table;
      seq.sampling = &params;
      auto step = Step({seq});
      if (!step.ok()) return step.status();
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::shared_ptr<const HostWeights>> CopyWeightsToHost() const override {
    try {
      c10::InferenceMode guard;
      auto host = std::make_shared<TorchHostWeights>();
      host->dtype = ranks_[0].model->dtype();
      HostArena* arena = HostTierArena();
      for (const Rank& rank : ranks_) {
        const bool pin = rank.device.is_cuda();
        host->ranks.push_back(MapWeights(rank.model->weights(), [&](const at::Tensor& t) {
          // The reserved arena where it has room (no fresh pages to fault in
          // and pin), else new memory.
          const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
          void* block = arena != nullptr && (arena->pinned() || !pin) ? arena->Allocate(bytes) : nullptr;
          at::Tensor h = block != nullptr
                             ? at::from_blob(block, t.sizes(), [arena](void* p) { arena->Free(p); },
                                             t.options().device(at::kCPU))
                             : at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(pin));
          h.copy_(t);
          return h;
        }));
        host->total_bytes += rank.model->weights().device_bytes;
      }
      return std::shared_ptr<const HostWeights>(std::move(host));
    } catch (const std::exception& e) {
      return absl::ResourceExhaustedError(absl::StrCat("copying the weights to host memory failed: ", ErrorText(e)));
    }
  }

  void ReleaseSequence(SequenceId id) override {
    auto it = penalty_rows_.find(id);
    if (it == penalty_rows_.end()) return;
    penalties_.Remove(it->second);
    penalty_rows_.erase(it);
  }

  absl::StatusOr<StepResult> Step(absl::Span<const StepSequence> batch) override {
    // Collect returns the oldest launched step: it would not be this one.
    if (!in_flight_.empty()) return absl::FailedPreconditionError("Step while a launched step is not collected");
    if (absl::Status launched = Launch(batch); !launched.ok()) return launched;
    return Collect();
  }

  // Tensor-parallel ranks other than 0 take their token ids from the host,
  // so they cannot run ahead of a step whose tokens are only on rank 0.
  int MaxStepsInFlight() const override { return ranks_.size() == 1 ? 2 : 1; }

  absl::Status Launch(absl::Span<const StepSequence> batch) override {
    if (static_cast<int>(in_flight_.size()) >= MaxStepsInFlight()) {
      return absl::FailedPreconditionError(
          absl::StrCat("Launch while ", in_flight_.size(), " launched step(s) are not collected"));
    }
    const auto entered = std::chrono::steady_clock::now();
    // Check everything before touching any state. The request was validated
    // where it entered (the engine); these checks guard the device's memory
    // against a malformed step.
    std::set<SequenceId> seen;
    int64_t total_tokens = 0;
    for (const StepSequence& seq : batch) {
      if (auto status = CheckStepSequence(seq); !status.ok()) return status;
      if (!seen.insert(seq.id).second) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.id, " is listed twice in one step"));
      }
      total_tokens += seq.num_tokens;
    }
    try {
      LaunchedStep step = Enqueue(batch, total_tokens);
      step.entered = entered;
      in_flight_.push_back(std::move(step));
      return absl::OkStatus();
    } catch (const std::exception& e) {
      return StepError(e, static_cast<int64_t>(batch.size()), total_tokens);
    }
  }

  absl::StatusOr<StepResult> Collect() override {
    if (in_flight_.empty()) return absl::FailedPreconditionError("Collect without a launched step");
    LaunchedStep step = std::move(in_flight_.front());
    in_flight_.pop_front();
    try {
      return Finish(step);
    } catch (const std::exception& e) {
      return StepError(e, static_cast<int64_t>(step.items.size()), step.total_tokens);
    }
  }

 private:
  absl::Status CheckStepSequence(const StepSequence& seq) const {
    const int64_t known = static_cast<int64_t>(seq.tokens.size());
    if (seq.num_computed < 0 || seq.num_tokens < 1 || seq.num_computed + seq.num_tokens > known) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.id, ": num_computed ", seq.num_computed,
                                                     " + num_tokens ", seq.num_tokens, " must be within its ",
                                                     known, " tokens, with num_tokens >= 1"));
    }
    if (seq.num_prompt < 1 || seq.num_prompt > known) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.id, ": num_prompt ", seq.num_prompt,
                                                     " must be in [1, ", known, "]"));
    }
    const int64_t end = seq.num_computed + seq.num_tokens;
    if (end > info_.max_context) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.id, ": ", end,
                                                     " tokens exceed the context of ", info_.max_context));
    }
    const int64_t blocks = (end + info_.block_size - 1) / info_.block_size;
    if (static_cast<int64_t>(seq.block_table.size()) < blocks) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.id, ": block table of ",
                                                     seq.block_table.size(), " blocks cannot hold ", end,
                                                     " tokens (", blocks, " blocks of ", info_.block_size, ")"));
    }
    for (int64_t j = 0; j < blocks; ++j) {
      if (seq.block_table[j] < 0 || seq.block_table[j] >= info_.num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.id, ": block id ", seq.block_table[j],
                                                       " at index ", j, " is outside the pool [0, ",
                                                       info_.num_blocks, ")"));
      }
    }
    if (seq.last_token_pending) {
      const LaunchedStep* before = in_flight_.empty() ? nullptr : &in_flight_.back();
      if (end != known || before == nullptr || before->SampleIndex(seq.id) < 0) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.id, ": its last token is pending, but ",
                                                       end != known ? "this step does not process it"
                                                                    : "no launched step samples it"));
      }
    }
    const int64_t vocab = info_.config.vocab_size;
    const int64_t checked_end = seq.last_token_pending ? end - 1 : end;  // the placeholder is not a token yet
    for (int64_t p = seq.num_computed; p < checked_end; ++p) {
      if (seq.tokens[p] < 0 || seq.tokens[p] >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.id, ": token id ", seq.tokens[p],
                                                       " at index ", p, " is outside the vocabulary [0, ",
                                                       vocab, ")"));
      }
    }
    if (!seq.allowed_tokens.empty() &&
        static_cast<int64_t>(seq.allowed_tokens.size()) != AllowedTokenWords(vocab)) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.id, ": allowed_tokens has ",
                                                     seq.allowed_tokens.size(), " words; the vocabulary of ", vocab,
                                                     " needs ", AllowedTokenWords(vocab)));
    }
    if (end == known && seq.sampling == nullptr && info_.config.has_lm_head) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", seq.id, " samples this step but has no sampling parameters"));
    }
    return absl::OkStatus();
  }

  // The sequence's PenaltyState row (filled from its tokens on first use), or
  // 0 when it has no penalties.
  int64_t PenaltyRow(const StepSequence& seq) {
    if (!HasPenalties(*seq.sampling)) return 0;
    auto it = penalty_rows_.find(seq.id);
    if (it != penalty_rows_.end()) return it->second;
    const int64_t row = penalties_.Add(seq.tokens, seq.num_prompt);
    penalty_rows_.emplace(seq.id, row);
    return row;
  }

  absl::Status StepError(const std::exception& e, int64_t sequences, int64_t total_tokens) {
    if (IsOutOfMemory(e)) {
      ReleaseCachedDeviceMemory();
      return absl::ResourceExhaustedError(absl::StrCat("out of device memory running a step of ", sequences,
                                                       " sequences and ", total_tokens, " tokens on ",
                                                       info_.device, "; retry with fewer tokens"));
    }
    return absl::InternalError(absl::StrCat("forward step failed: ", ErrorText(e)));
  }

  // A step enqueued on the device, what Collect needs to read it back.
  struct LaunchedStep {
    struct Item {
      SequenceId id = 0;
      bool samples = false;
      int logits_row = -1;  // row of `logits` to return, -1: none
    };
    std::vector<Item> items;
    int64_t total_tokens = 0;
    HostCopy logits;  // [rows, vocab] float32; defined when some item returns its logits
    std::optional<SampleChoice> choice;  // when some item samples
    std::chrono::steady_clock::time_point entered, enqueued;

    std::map<SequenceId, int64_t> choice_rows;  // sequences it samples for -> their row of choice's ids

    // The row of choice's ids that holds `id`'s token, -1 when this step
    // does not sample for it.
    int64_t SampleIndex(SequenceId id) const {
      auto it = choice_rows.find(id);
      return it == choice_rows.end() ? -1 : it->second;
    }
  };

  LaunchedStep Enqueue(absl::Span<const StepSequence> batch_seqs, int64_t total_tokens) {
    c10::InferenceMode guard;
    LaunchedStep step;
    step.total_tokens = total_tokens;
    if (batch_seqs.empty()) {
      step.enqueued = std::chrono::steady_clock::now();
      return step;
    }
    ForwardBatch batch;
    std::vector<int64_t> sample_rows;  // rows of the logits that sample, in sequence order
    std::vector<SamplerRow> sampler_rows;
    bool any_logits = false;
    batch.token_ids.reserve(total_tokens);
    for (const StepSequence& seq : batch_seqs) {
      batch.sequences.push_back({seq.num_computed, seq.num_tokens, seq.block_table});
      for (int64_t t = 0; t < seq.num_tokens; ++t) batch.token_ids.push_back(seq.tokens[seq.num_computed + t]);
      if (seq.last_token_pending) {  // checked: the step before samples it
        const LaunchedStep& before = in_flight_.back();
        batch.token_ids.back() = 0;
        batch.pending_rows.push_back(static_cast<int64_t>(batch.token_ids.size()) - 1);
        batch.pending_source_rows.push_back(before.SampleIndex(seq.id));
        batch.pending_source = before.choice->ids;
      }
      const int64_t known = static_cast<int64_t>(seq.tokens.size());
      // A bare transformer (no lm_head) never samples: its outputs are hidden states.
      const bool reaches_end = seq.num_computed + seq.num_tokens == known && info_.config.has_lm_head;
      LaunchedStep::Item item{seq.id, reaches_end, -1};
      int row = -1;
      if (reaches_end || seq.return_logits) {
        row = static_cast<int>(batch.logit_rows.size());
        batch.logit_rows.push_back(static_cast<int64_t>(batch.token_ids.size()) - 1);
      }
      if (seq.return_logits) {
        item.logits_row = row;
        any_logits = true;
      }
      if (reaches_end) {
        step.choice_rows[seq.id] = static_cast<int64_t>(sample_rows.size());
        sample_rows.push_back(row);
        sampler_rows.push_back({seq.sampling, known, PenaltyRow(seq), seq.allowed_tokens});
      }
      step.items.push_back(item);
    }
    Sampler sampler(sampler_rows, info_.config.vocab_size, device_, &penalties_);
    batch.extra = &sampler.host_params();
    ForwardOutput output = RunOnEveryRank(batch);
    step.enqueued = std::chrono::steady_clock::now();
    sampler.Bind(output.extra);
    at::Tensor& logits = output.logits;  // [rows, vocab]
    if (!sample_rows.empty()) {
      at::Tensor sample_logits = sample_rows.size() == batch.logit_rows.size()
                                     ? logits
                                     : logits.index_select(0, Upload(sample_rows, device_));
      step.choice = sampler.Choose(sample_logits);
    }
    // Copied now: a graph's logits buffer is rewritten by the next replay,
    // which may be enqueued before this step is collected.
    if (any_logits) step.logits = HostCopy(logits);
    return step;
  }

  StepResult Finish(const LaunchedStep& step) {
    c10::InferenceMode guard;
    std::vector<SampledToken> sampled;
    if (step.choice) sampled = Sampler::Read(*step.choice);
    at::Tensor host_logits;
    if (step.logits.defined()) host_logits = step.logits.Wait();
    const auto ready = std::chrono::steady_clock::now();

    StepResult result;
    size_t next_sample = 0;
    for (const LaunchedStep::Item& item : step.items) {
      SequenceStepResult out;
      out.id = item.id;
      if (item.samples) {
        SampledToken& token = sampled[next_sample++];
        out.sampled = true;
        out.token = token.token;
        out.logprob = token.logprob;
        out.top_logprobs = std::move(token.top_logprobs);
      }
      if (item.logits_row >= 0) {
        const float* row = host_logits.data_ptr<float>() + item.logits_row * host_logits.size(1);
        out.logits.assign(row, row + host_logits.size(1));
      }
      result.sequences.push_back(std::move(out));
    }
    using Seconds = std::chrono::duration<double>;
    result.timing.prepare_seconds = Seconds(step.enqueued - step.entered).count();
    result.timing.device_seconds = Seconds(ready - step.enqueued).count();
    result.timing.finish_seconds = Seconds(std::chrono::steady_clock::now() - ready).count();
    return result;
  }

  // Rank 0's output; the other ranks run the same batch on their workers
  // at the same time (they meet in the collectives). A rank that fails
  // aborts the group so none waits forever; the group cannot be used again,
  // so every later step fails too and the model must be loaded again.
  ForwardOutput RunOnEveryRank(const ForwardBatch& batch) {
    if (ranks_.size() == 1 && !ranks_[0].communicator) return ranks_[0].forward->Run(batch);
    if (group_failed_) {
      throw std::runtime_error("a tensor-parallel rank failed in an earlier step; unload and load the model again");
    }
    ForwardBatch others = batch;
    others.extra = nullptr;  // the sampler's parameters are rank 0's
    for (size_t r = 1; r < ranks_.size(); ++r) {
      Rank* rank = &ranks_[r];
      workers_[r - 1]->Post([rank, &others] {
        at::DeviceGuard device_guard(rank->device);
        c10::InferenceMode inference;
        try {
          (void)rank->forward->Run(others);
        } catch (...) {
          rank->communicator->Abort();
          throw;
        }
      });
    }
    ForwardOutput output;
    std::exception_ptr error;
    try {
      output = ranks_[0].forward->Run(batch);
    } catch (...) {
      error = std::current_exception();
      ranks_[0].communicator->Abort();
    }
    for (auto& worker : workers_) {
      if (std::exception_ptr e = worker->Wait(); e && !error) error = e;
    }
    if (error) {
      group_failed_ = true;
      std::rethrow_exception(error);
    }
    return output;
  }

  ModelInfo info_;
  std::vector<Rank> ranks_;
  std::vector<std::unique_ptr<RankWorker>> workers_;  // ranks 1.. (index r - 1)
  bool group_failed_ = false;
  at::Device device_;  // rank 0's
  PenaltyState penalties_;
  std::map<SequenceId, int64_t> penalty_rows_;  // PenaltyState rows of sequences with penalties
  std::deque<LaunchedStep> in_flight_;  // launched, not yet collected; oldest first
};

// The devices of a model's ranks, from `device` and tensor_parallel or from
// the explicit list. Errors name the option.
absl::StatusOr<std::vector<at::Device>> RankDevices(const LoadOptions& options) {
  std::vector<at::Device> devices;
  if (!options.devices.empty()) {
    if (options.tensor_parallel != 1 && options.tensor_parallel != static_cast<int32_t>(options.devices.size())) {
      return absl::InvalidArgumentError(absl::StrCat("tensor_parallel ", options.tensor_parallel, " disagrees with the ",
                                                     options.devices.size(), " devices listed"));
    }
    for (const std::string& name : options.devices) {
      auto device = ParseDevice(name);
      if (!device.ok()) return device.status();
      for (const at::Device& other : devices) {
        if (other == *device && !device->is_cpu()) {
          return absl::InvalidArgumentError(absl::StrCat("device ", name, " is listed twice"));
        }
      }
      if (!devices.empty() && device->type() != devices[0].type()) {
        return absl::InvalidArgumentError("the devices of one model must all be CPUs or all be GPUs");
      }
      devices.push_back(*device);
    }
    return devices;
  }
  if (options.tensor_parallel < 1 || options.tensor_parallel > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor_parallel must be in [1, 64], got ", options.tensor_parallel));
  }
  auto first = ParseDevice(options.device);
  if (!first.ok()) return first.status();
  if (first->is_cpu()) return std::vector<at::Device>(options.tensor_parallel, *first);
  const int start = first->has_index() ? first->index() : 0;
  const int present = static_cast<int>(torch::cuda::device_count());
  if (start + options.tensor_parallel > present) {
    return absl::InvalidArgumentError(absl::StrCat("tensor_parallel ", options.tensor_parallel, " from cuda:", start,
                                                   " needs GPUs up to cuda:", start + options.tensor_parallel - 1,
                                                   "; this machine has ", present, " GPU(s)"));
  }
  for (int r = 0; r < options.tensor_parallel; ++r) {
    devices.emplace_back(at::kCUDA, static_cast<c10::DeviceIndex>(start + r));
  }
  return devices;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRunner>> LoadModel(const LoadOptions& options) {
  auto config = LoadModelConfig(options.model_dir);
  if (!config.ok()) return config.status();
  auto devices = RankDevices(options);
  if (!devices.ok()) return devices.status();
  const int num_ranks = static_cast<int>(devices->size());
  const at::Device device = (*devices)[0];
  auto dtype = ResolveModelDtype(options.dtype, config->dtype, device);
  if (!dtype.ok()) return dtype.status();
  if (options.block_size < 1 || options.block_size > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size must be in [1, 1024], got ", options.block_size));
  }
  if (options.max_context < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_context must be >= 0 (0 = the model's), got ", options.max_context));
  }
  if (options.cuda_decode_gemv_l2_prefetch_units < 0 ||
      options.cuda_decode_gemv_l2_prefetch_units > cuda::kDecodeGemvMaxL2PrefetchUnits) {
    return absl::InvalidArgumentError(absl::StrCat("cuda_decode_gemv_l2_prefetch_units must be in [0, ",
                                                   cuda::kDecodeGemvMaxL2PrefetchUnits, "], got ",
                                                   options.cuda_decode_gemv_l2_prefetch_units));
  }
  auto local_config = ShardConfig(*config, num_ranks);
  if (!local_config.ok()) return local_config.status();

  ModelInfo info;
  info.config = *config;
  info.device = device.str();
  for (const at::Device& d : *devices) info.devices.push_back(d.str());
  info.dtype = ScalarTypeName(*dtype);
  info.block_size = options.block_size;
  info.max_context = options.max_context > 0 ? options.max_context : config->max_position_embeddings;
  // kv_cache_bytes is each rank's pool; a rank's blocks hold its KV heads.
  const uint64_t element = static_cast<uint64_t>(c10::elementSize(*dtype));
  const uint64_t block_bytes = static_cast<uint64_t>(config->num_layers) * 2 * options.block_size *
                               local_config->num_kv_heads * config->head_dim * element;
  info.num_blocks = static_cast<int64_t>(options.kv_cache_bytes / block_bytes);
  if (info.num_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv_cache_bytes ", options.kv_cache_bytes,
                                                   " holds no block; one block of ", options.block_size,
                                                   " tokens takes ", block_bytes, " bytes"));
  }

  // Weights from the host tier when they fit this load, else from the files.
  const auto* host = dynamic_cast<const TorchHostWeights*>(options.host_weights.get());
  if (host != nullptr && (host->dtype != *dtype || static_cast<int>(host->ranks.size()) != num_ranks)) host = nullptr;
  info.weights_source = host != nullptr ? "host" : "disk";
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = std::unique_ptr<Checkpoint>();
  if (host == nullptr) checkpoint = Checkpoint::Open(options.model_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  std::string current = device.str();  // the device being loaded, for errors
  try {
    c10::InferenceMode guard;
    // A group even for one listed device, so the collectives' path runs
    // (and can be compared with the plain one) on a single GPU.
    const bool grouped = num_ranks > 1 || !options.devices.empty();
    std::vector<std::unique_ptr<Communicator>> communicators;
    if (grouped) {
      if (device.is_cpu()) {
        communicators = MakeInProcessGroup(num_ranks);
      } else {
        std::vector<int> ordinals;
        for (const at::Device& d : *devices) ordinals.push_back(d.index());
        auto group = MakeNcclGroup(ordinals);
        if (!group.ok()) {
          return absl::Status(group.status().code(),
                              absl::StrCat("tensor_parallel ", num_ranks, ": ", group.status().message()));
        }
        communicators = *std::move(group);
      }
    }
    // From the files, through the staged upload when asked and available.
    auto load_weights_onto = [&](const at::Device& device, int r) -> absl::StatusOr<ModelWeights> {
      auto sink = StagedUploadSinkFor(device, options.cuda_staged_upload);
      if (!sink.ok()) return sink.status();
      return LoadWeights(**checkpoint, *config, device, *dtype, Shard{r, num_ranks}, sink->get());
    };
    std::vector<Rank> ranks;
    auto phase_start = std::chrono::steady_clock::now();
    auto phase_seconds = [&phase_start] {
      const auto now = std::chrono::steady_clock::now();
      const double seconds = std::chrono::duration<double>(now - phase_start).count();
      phase_start = now;
      return seconds;
    };
    for (int r = 0; r < num_ranks; ++r) {
      Rank rank;
      rank.device = (*devices)[r];
      current = rank.device.str();
      at::DeviceGuard device_guard(rank.device);
      if (grouped) rank.communicator = std::move(communicators[r]);
      absl::StatusOr<ModelWeights> weights =
          host != nullptr ? MapWeights(host->ranks[r], [&](const at::Tensor& t) {
            return t.to(rank.device, /*non_blocking=*/t.is_pinned(), /*copy=*/true);
          })
                          : load_weights_onto(rank.device, r);
      if (!weights.ok()) return weights.status();
      // The host tier's copies are asynchronous; reading one element back
      // waits for them (same stream), so weights_seconds is the copy's time.
      if (host != nullptr && rank.device.is_cuda()) (void)weights->final_norm.reshape({-1}).slice(0, 0, 1).to(at::kCPU);
      info.weight_bytes += weights->device_bytes;
      info.weights_seconds += phase_seconds();
      rank.model = std::make_unique<LlamaModel>(*local_config, *std::move(weights), rank.device, *dtype,
                                                info.num_blocks, options.block_size, rank.communicator.get());
      info.kv_cache_bytes += rank.model->kv_cache_bytes();
      ranks.push_back(std::move(rank));
      info.setup_seconds += phase_seconds();
    }
    // The forward paths after every rank is loaded. The CUDA forward's
    // warm-up and graph capture run steps, whose collectives need every rank
    // at once: with several ranks each is set up on a thread of its own.
    auto make_forward = [&](Rank& rank) -> absl::Status {
      if (!(rank.device.is_cuda() && options.cuda_kernels && HaveCudaKernels())) {
        rank.forward = MakeTorchForward(rank.model.get(), options.block_size);
        return absl::OkStatus();
      }
      CudaForwardOptions cuda_options;
      cuda_options.block_size = options.block_size;
      cuda_options.max_context = info.max_context;
      // A bare transformer only encodes prompts: no decode graphs.
      cuda_options.max_graph_batch = config->has_lm_head ? std::max<int64_t>(0, options.cuda_graph_max_batch) : 0;
      cuda_options.warm_step_tokens = std::min<int64_t>(options.warm_step_tokens, info.max_context);
      cuda_options.skinny_gemm = options.cuda_skinny_gemm;
      cuda_options.decode_gemv = options.cuda_decode_gemv;
      cuda_options.decode_gemv_rope = options.cuda_decode_gemv_rope;
      cuda_options.decode_gemv_l2_prefetch_units = options.cuda_decode_gemv_l2_prefetch_units;
      cuda_options.decode_attention_early_loads = options.cuda_decode_attention_early_loads;
      auto cuda_forward = MakeCudaForward(rank.model.get(), cuda_options);
      if (!cuda_forward.ok()) {
        if (rank.communicator) rank.communicator->Abort();  // the other ranks' set-up waits on this one
        return cuda_forward.status();
      }
      rank.forward = *std::move(cuda_forward);
      return absl::OkStatus();
    };
    if (num_ranks == 1) {
      if (auto status = make_forward(ranks[0]); !status.ok()) return status;
    } else {
      std::vector<absl::Status> statuses(num_ranks);
      std::vector<std::thread> threads;
      for (int r = 0; r < num_ranks; ++r) {
        threads.emplace_back([&, r] {
          try {
            at::DeviceGuard device_guard(ranks[r].device);
            c10::InferenceMode inference;
            statuses[r] = make_forward(ranks[r]);
          } catch (const std::exception& e) {
            if (ranks[r].communicator) ranks[r].communicator->Abort();
            statuses[r] = absl::InternalError(absl::StrCat("rank ", r, " on ", ranks[r].device.str(), ": ", ErrorText(e)));
          }
        });
      }
      for (std::thread& t : threads) t.join();
      for (const absl::Status& status : statuses) {
        if (!status.ok()) return status;
      }
    }
    info.execution = ranks[0].forward->Describe();
    if (num_ranks > 1) absl::StrAppend(&info.execution, ", tensor-parallel over ", num_ranks, " ranks");
    auto runner = std::make_unique<TorchModelRunner>(std::move(info), std::move(ranks));
    if (device.is_cuda() && config->has_lm_head) {
      if (auto status = runner->WarmUpSampling(); !status.ok()) return status;
    }
    runner->AddSetupSeconds(phase_seconds());
    return std::unique_ptr<ModelRunner>(std::move(runner));
  } catch (const std::exception& e) {
    if (IsOutOfMemory(e)) {
      ReleaseCachedDeviceMemory();
      return absl::ResourceExhaustedError(absl::StrCat("out of memory loading ", options.model_dir,
                                                       " onto ", current, ": ", ErrorText(e)));
    }
    return absl::InternalError(absl::StrCat("loading ", options.model_dir, " failed: ", ErrorText(e)));
  }
}

}  // namespace gantry::runtime
