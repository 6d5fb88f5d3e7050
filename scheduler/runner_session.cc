#include "scheduler/runner_session.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace gantry::scheduler {

runtime::StepSequence MakeStepSequence(const KvCacheManager& kv, int64_t key, absl::Span<const int32_t> tokens,
                                       int64_t num_prompt, int64_t num_computed, int64_t num_tokens,
                                       const runtime::SamplingParams* sampling) {
  runtime::StepSequence step;
  step.id = key;
  step.tokens = tokens;
  step.num_prompt = num_prompt;
  step.num_computed = num_computed;
  step.num_tokens = num_tokens;
  step.block_table = kv.BlockTable(key);
  step.sampling = sampling;
  return step;
}

RunnerSession::RunnerSession(runtime::ModelRunner* runner, bool prefix_caching)
    : runner_(runner), kv_(runner->info().num_blocks, runner->info().block_size, prefix_caching) {}

RunnerSession::~RunnerSession() {
  for (const auto& [id, seq] : sequences_) runner_->ReleaseSequence(id);
}

absl::StatusOr<runtime::SequenceId> RunnerSession::Add(std::vector<int32_t> prompt, std::vector<int32_t> generated,
                                                       runtime::SamplingParams sampling) {
  if (prompt.empty()) return absl::InvalidArgumentError("prompt is empty: at least one token is needed");
  if (auto s = runtime::ValidateSamplingParams(sampling, runner_->info().config.vocab_size); !s.ok()) return s;
  Sequence seq;
  seq.num_prompt = static_cast<int64_t>(prompt.size());
  seq.tokens = std::move(prompt);
  seq.tokens.insert(seq.tokens.end(), generated.begin(), generated.end());
  seq.sampling = sampling;
  const runtime::SequenceId id = next_id_++;
  seq.num_computed = kv_.Start(id, seq.tokens).num_tokens;
  sequences_.emplace(id, std::move(seq));
  return id;
}

absl::Status RunnerSession::Remove(runtime::SequenceId id) {
  if (sequences_.erase(id) == 0) return absl::NotFoundError(absl::StrCat("no sequence with id ", id));
  kv_.Release(id);
  runner_->ReleaseSequence(id);
  return absl::OkStatus();
}

absl::StatusOr<runtime::StepResult> RunnerSession::Step(absl::Span<const SessionItem> items) {
  int64_t need = 0;
  std::set<runtime::SequenceId> seen;
  for (const SessionItem& item : items) {
    auto it = sequences_.find(item.id);
    if (it == sequences_.end()) return absl::NotFoundError(absl::StrCat("no sequence with id ", item.id));
    // A sequence listed twice is the runner's error to report.
    if (seen.insert(item.id).second) need += kv_.BlocksToGrow(item.id, it->second.num_computed + item.num_tokens);
  }
  if (need > kv_.NumFreeBlocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache: this step needs ", need, " more blocks, ",
                                                     kv_.NumFreeBlocks(), " of ", kv_.num_blocks(), " free"));
  }
  std::vector<runtime::StepSequence> batch;
  for (const SessionItem& item : items) {
    Sequence& seq = sequences_.at(item.id);
    if (auto s = kv_.Grow(item.id, seq.num_computed + item.num_tokens); !s.ok()) return s;
    runtime::StepSequence step = MakeStepSequence(kv_, item.id, seq.tokens, seq.num_prompt, seq.num_computed,
                                                  item.num_tokens, &seq.sampling);
    step.return_logits = item.return_logits;
    step.allowed_tokens = item.allowed_tokens;
    batch.push_back(step);
  }
  auto result = runner_->Step(batch);
  if (!result.ok()) return result.status();
  for (size_t i = 0; i < items.size(); ++i) {
    Sequence& seq = sequences_.at(items[i].id);
    seq.num_computed += items[i].num_tokens;
    kv_.CacheComputedBlocks(items[i].id, seq.tokens, seq.num_computed);
    if (result->sequences[i].sampled) seq.tokens.push_back(result->sequences[i].token);
  }
  return result;
}

}  // namespace gantry::scheduler
