// A ModelRunner without a model, for scheduler tests: the next token is a
// fixed function of the sequence's tokens (so a recomputed sequence resumes
// exactly, as with the real runtime), and KV blocks are accounted for as the
// real runner does.
#ifndef GANTRY_TESTS_SCHEDULER_FAKE_RUNNER_H_
#define GANTRY_TESTS_SCHEDULER_FAKE_RUNNER_H_

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "runtime/kv_cache.h"
#include "runtime/model_runner.h"

namespace gantry::testing {

class FakeRunner : public runtime::ModelRunner {
 public:
  explicit FakeRunner(int64_t num_blocks, int32_t block_size = 4, int64_t max_context = 256)
      : allocator_(num_blocks) {
    info_.config.vocab_size = 100;
    info_.config.eos_token_ids = {2};
    info_.device = "cpu";
    info_.dtype = "float32";
    info_.block_size = block_size;
    info_.num_blocks = num_blocks;
    info_.max_context = max_context;
  }

  // The token following `tokens`: never eos (2) unless eos_after is reached.
  static int32_t NextToken(const std::vector<int32_t>& tokens) {
    int64_t h = 17;
    for (int32_t t : tokens) h = (h * 31 + t) % 1000003;
    return static_cast<int32_t>(3 + h % 97);
  }

  const runtime::ModelInfo& info() const override { return info_; }

  absl::StatusOr<runtime::SequenceId> AddSequence(runtime::SequenceSpec spec) override {
    Seq seq;
    seq.tokens = spec.prompt;
    seq.tokens.insert(seq.tokens.end(), spec.generated.begin(), spec.generated.end());
    sequences_[next_] = std::move(seq);
    return next_++;
  }
  absl::Status RemoveSequence(runtime::SequenceId id) override {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) return absl::NotFoundError("no sequence");
    allocator_.Free(&it->second.blocks);
    sequences_.erase(it);
    return absl::OkStatus();
  }
  absl::StatusOr<int64_t> NumTokens(runtime::SequenceId id) const override {
    return static_cast<int64_t>(sequences_.at(id).tokens.size());
  }
  absl::StatusOr<int64_t> NumComputed(runtime::SequenceId id) const override { return sequences_.at(id).computed; }
  int64_t FreeBlocks() const override { return allocator_.num_free(); }
  absl::StatusOr<int64_t> BlocksNeeded(runtime::SequenceId id, int64_t n) const override {
    const Seq& s = sequences_.at(id);
    return std::max<int64_t>(0, runtime::BlocksForTokens(s.computed + n, info_.block_size) -
                                    static_cast<int64_t>(s.blocks.size()));
  }
  absl::StatusOr<runtime::StepResult> Step(absl::Span<const runtime::StepItem> items) override {
    ++steps;
    int64_t need = 0;
    for (const auto& item : items) need += *BlocksNeeded(item.id, item.num_tokens);
    if (need > allocator_.num_free()) return absl::ResourceExhaustedError("fake: out of blocks");
    runtime::StepResult result;
    for (const auto& item : items) {
      Seq& s = sequences_.at(item.id);
      (void)allocator_.Allocate(*BlocksNeeded(item.id, item.num_tokens), &s.blocks);
      s.computed += item.num_tokens;
      max_step_tokens_seen = std::max(max_step_tokens_seen, item.num_tokens);
      runtime::SequenceStepResult r;
      r.id = item.id;
      if (s.computed == static_cast<int64_t>(s.tokens.size())) {
        r.sampled = true;
        r.token = NextToken(s.tokens);
        s.tokens.push_back(r.token);
      }
      result.sequences.push_back(r);
    }
    return result;
  }

  int64_t steps = 0;
  int64_t max_step_tokens_seen = 0;

 private:
  struct Seq {
    std::vector<int32_t> tokens;
    int64_t computed = 0;
    std::vector<int32_t> blocks;
  };
  runtime::ModelInfo info_;
  runtime::BlockAllocator allocator_;
  std::map<runtime::SequenceId, Seq> sequences_;
  runtime::SequenceId next_ = 1;
};

}  // namespace gantry::testing

#endif  // GANTRY_TESTS_SCHEDULER_FAKE_RUNNER_H_
