// A ModelRunner without a model, for scheduler tests. Its "KV cache" holds
// token ids: a step writes each new token into the slot its block table
// names, and the next token is a fixed function of the tokens read back
// through the table. So a sequence given the wrong blocks (a bad prefix hit,
// a block freed under it) produces different tokens, and a recomputed or
// prefix-cached sequence resumes exactly, as with the real runtime.
#ifndef GANTRY_TESTS_SCHEDULER_FAKE_RUNNER_H_
#define GANTRY_TESTS_SCHEDULER_FAKE_RUNNER_H_

#include <algorithm>
#include <deque>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/model_runner.h"

namespace gantry::testing {

// Host weights of a fake model: only a size and where they came from.
class FakeHostWeights : public runtime::HostWeights {
 public:
  FakeHostWeights(uint64_t bytes, std::string model) : bytes_(bytes), model(std::move(model)) {}
  uint64_t bytes() const override { return bytes_; }

 private:
  uint64_t bytes_;

 public:
  std::string model;
};

class FakeRunner : public runtime::ModelRunner {
 public:
  explicit FakeRunner(int64_t num_blocks, int32_t block_size = 4, int64_t max_context = 256)
      : slots_(static_cast<size_t>(num_blocks * block_size), -1) {
    info_.config.vocab_size = 100;
    info_.config.eos_token_ids = {2};
    info_.device = "cpu";
    info_.dtype = "float32";
    info_.block_size = block_size;
    info_.num_blocks = num_blocks;
    info_.max_context = max_context;
  }

  // The token following `tokens`: never eos (2).
  static int32_t NextToken(const std::vector<int32_t>& tokens) {
    int64_t h = 17;
    for (int32_t t : tokens) h = (h * 31 + t) % 1000003;
    return static_cast<int32_t>(3 + h % 97);
  }

  // The `n` tokens the fake model generates after `tokens`.
  static std::vector<int32_t> Continuation(std::vector<int32_t> tokens, int64_t n) {
    std::vector<int32_t> out;
    for (int64_t i = 0; i < n; ++i) {
      out.push_back(NextToken(tokens));
      tokens.push_back(out.back());
    }
    return out;
  }

  const runtime::ModelInfo& info() const override { return info_; }

  void ReleaseSequence(runtime::SequenceId id) override { released.push_back(id); }

  absl::StatusOr<std::shared_ptr<const runtime::HostWeights>> CopyWeightsToHost() const override {
    if (host_weight_bytes == 0) return absl::UnimplementedError("fake: no host copy");
    return std::shared_ptr<const runtime::HostWeights>(std::make_shared<FakeHostWeights>(host_weight_bytes, host_name));
  }
  uint64_t host_weight_bytes = 0;  // 0: CopyWeightsToHost fails
  std::string host_name;
  void set_weights_source(std::string source) { info_.weights_source = std::move(source); }

  absl::StatusOr<runtime::StepResult> Step(absl::Span<const runtime::StepSequence> batch) override {
    ++steps;
    if (steps == fail_at_step) return absl::InternalError("fake: device fault");
    const int64_t bs = info_.block_size;
    std::set<int32_t> written;
    for (const auto& seq : batch) {
      const int64_t end = seq.num_computed + seq.num_tokens;
      if (seq.num_tokens < 1 || end > static_cast<int64_t>(seq.tokens.size())) {
        return absl::InvalidArgumentError("fake: bad num_tokens");
      }
      if (static_cast<int64_t>(seq.block_table.size()) * bs < end) return absl::InvalidArgumentError("fake: short table");
      // Two sequences writing one block in one step would corrupt each other.
      for (int64_t b = seq.num_computed / bs; b < (end + bs - 1) / bs; ++b) {
        if (!written.insert(seq.block_table[b]).second) return absl::InternalError("fake: block written twice");
      }
    }
    runtime::StepResult result;
    result.timing.device_seconds = device_seconds;
    for (const auto& seq : batch) {
      const int64_t end = seq.num_computed + seq.num_tokens;
      for (int64_t p = seq.num_computed; p < end; ++p) slots_[Slot(seq, p)] = seq.tokens[p];
      prompt_tokens_sent.push_back(seq.num_tokens);
      max_step_tokens_seen = std::max(max_step_tokens_seen, seq.num_tokens);
      runtime::SequenceStepResult r;
      r.id = seq.id;
      if (end == static_cast<int64_t>(seq.tokens.size())) {
        std::vector<int32_t> cached;  // what the cache holds for this sequence
        for (int64_t p = 0; p < end; ++p) cached.push_back(slots_[Slot(seq, p)]);
        r.sampled = true;
        r.token = NextToken(cached);
        // Under a mask: the first allowed token from there on, wrapping.
        const int64_t vocab = info_.config.vocab_size;
        if (!seq.allowed_tokens.empty()) {
          if (static_cast<int64_t>(seq.allowed_tokens.size()) != runtime::AllowedTokenWords(vocab)) {
            return absl::InvalidArgumentError("fake: allowed_tokens of the wrong size");
          }
          int64_t t = r.token, tried = 0;
          while (!(seq.allowed_tokens[t / 32] >> (t % 32) & 1u) && ++tried < vocab) t = (t + 1) % vocab;
          if (tried == vocab) return absl::InvalidArgumentError("fake: no token allowed");
          r.token = static_cast<int32_t>(t);
        }
      }
      result.sequences.push_back(r);
    }
    return result;
  }

  // Launch and Collect as the base class runs them (Step in Launch), with
  // each call logged in `calls`. With max_in_flight 2 it runs ahead as the
  // real runtime does: a step may be launched before the last one is
  // collected, its pending tokens taken from that step's samples (as the
  // device would take them) and checked as the runtime checks them.
  int MaxStepsInFlight() const override { return max_in_flight; }
  absl::Status Launch(absl::Span<const runtime::StepSequence> batch) override {
    calls.push_back("launch");
    if (max_in_flight == 1) return ModelRunner::Launch(batch);
    if (static_cast<int>(in_flight_.size()) >= max_in_flight) {
      return absl::FailedPreconditionError("fake: too many steps in flight");
    }
    std::vector<runtime::StepSequence> resolved(batch.begin(), batch.end());
    std::vector<std::vector<int32_t>> histories;  // the pending tokens filled in
    histories.reserve(batch.size());
    for (runtime::StepSequence& seq : resolved) {
      if (!seq.last_token_pending) continue;
      const runtime::SequenceStepResult* before = nullptr;
      if (!in_flight_.empty()) {
        for (const auto& r : in_flight_.back().sequences) {
          if (r.id == seq.id && r.sampled) before = &r;
        }
      }
      if (before == nullptr || seq.num_computed + seq.num_tokens != static_cast<int64_t>(seq.tokens.size())) {
        return absl::InvalidArgumentError(absl::StrCat("fake: sequence ", seq.id, " has a pending token no step samples"));
      }
      histories.emplace_back(seq.tokens.begin(), seq.tokens.end());
      histories.back().back() = before->token;
      seq.tokens = histories.back();
      ++pending_tokens_seen;
    }
    auto result = Step(resolved);
    if (!result.ok()) return result.status();
    in_flight_.push_back(*std::move(result));
    max_in_flight_seen = std::max<int64_t>(max_in_flight_seen, static_cast<int64_t>(in_flight_.size()));
    return absl::OkStatus();
  }
  absl::StatusOr<runtime::StepResult> Collect() override {
    calls.push_back("collect");
    if (max_in_flight == 1) return ModelRunner::Collect();
    if (in_flight_.empty()) return absl::FailedPreconditionError("fake: Collect without a launched step");
    runtime::StepResult result = std::move(in_flight_.front());
    in_flight_.pop_front();
    return result;
  }
  std::vector<std::string> calls;
  int max_in_flight = 1;           // MaxStepsInFlight
  int64_t max_in_flight_seen = 0;  // most steps launched and uncollected at once (max_in_flight 2)
  int64_t pending_tokens_seen = 0; // run-ahead tokens taken from a step in flight

  double device_seconds = 0;  // every step's StepTiming::device_seconds
  int64_t steps = 0;
  int64_t fail_at_step = -1;  // the step (counting from 1) that fails, as a device fault would
  int64_t max_step_tokens_seen = 0;
  std::vector<int64_t> prompt_tokens_sent;  // num_tokens of every sequence of every step
  std::vector<runtime::SequenceId> released;

 private:
  size_t Slot(const runtime::StepSequence& seq, int64_t p) const {
    return static_cast<size_t>(seq.block_table[p / info_.block_size] * info_.block_size + p % info_.block_size);
  }

  runtime::ModelInfo info_;
  std::vector<int32_t> slots_;  // [num_blocks * block_size] token ids
  std::deque<runtime::StepResult> in_flight_;  // max_in_flight 2: launched, uncollected
};

}  // namespace gantry::testing

#endif  // GANTRY_TESTS_SCHEDULER_FAKE_RUNNER_H_
