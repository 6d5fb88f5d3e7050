// Scheduler overhead per step: one ModelEngine::StepOnce with N running
// sequences decoding (planning, KV block bookkeeping, prefix-cache upkeep,
// streaming the tokens), on a runner that does no work, so what is timed is
// the scheduler alone. Target: under 100 us a step at 64 sequences.
//
//   scheduler_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>

#include "scheduler/model_engine.h"

namespace gantry::scheduler {
namespace {

// Answers every step at once with a fixed token, so the engine's own work is
// all there is to time.
class NullRunner : public runtime::ModelRunner {
 public:
  NullRunner(int64_t num_blocks, int32_t block_size, int64_t max_context) {
    info_.config.vocab_size = 32000;
    info_.config.eos_token_ids = {2};
    info_.block_size = block_size;
    info_.num_blocks = num_blocks;
    info_.max_context = max_context;
  }
  const runtime::ModelInfo& info() const override { return info_; }
  void ReleaseSequence(runtime::SequenceId) override {}
  absl::StatusOr<runtime::StepResult> Step(absl::Span<const runtime::StepSequence> batch) override {
    runtime::StepResult result;
    result.sequences.resize(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      result.sequences[i].id = batch[i].id;
      if (batch[i].num_computed + batch[i].num_tokens == static_cast<int64_t>(batch[i].tokens.size())) {
        result.sequences[i].sampled = true;
        result.sequences[i].token = 1000 + static_cast<int32_t>(i);
      }
    }
    return result;
  }

 private:
  runtime::ModelInfo info_;
};

void BM_DecodeStep(benchmark::State& state) {
  const int64_t sequences = state.range(0);
  const int64_t prompt = 512;
  const int64_t max_context = 1 << 20;  // never reached: the sequences keep decoding
  LoadedModel model;
  model.runner = std::make_unique<NullRunner>(sequences * (max_context / 16 / 64), 16, max_context);
  EngineOptions options;
  options.max_batch = sequences;
  options.max_step_tokens = sequences * prompt;
  options.max_queue = sequences;
  ModelEngine engine("bench", std::move(model), options, RealClock::Get());
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int64_t s = 0; s < sequences; ++s) {
    GenerationRequest request;
    // A shared 256-token system prompt, then each one's own: the prefix cache is busy.
    for (int64_t t = 0; t < prompt; ++t) request.prompt.push_back(static_cast<int32_t>(t < 256 ? t + 3 : 3 + (s * 131 + t) % 30000));
    request.max_tokens = max_context - prompt;
    request.ignore_eos = true;
    request.sampling.temperature = 0;
    auto stream = engine.Submit(std::move(request));
    if (!stream.ok()) {
      state.SkipWithError(std::string(stream.status().message()).c_str());
      return;
    }
    streams.push_back(*stream);
  }
  engine.StepOnce();  // the prompts
  StreamEvent event;
  for (auto _ : state) {
    engine.StepOnce();
    state.PauseTiming();
    for (auto& stream : streams) {
      while (stream->Pop(&event, absl::ZeroDuration())) {
      }
    }
    state.ResumeTiming();
  }
  if (engine.Stats().running != sequences) state.SkipWithError("sequences left the batch");
  state.counters["sequences"] = static_cast<double>(sequences);
  state.SetLabel(sequences == 64 ? "target < 100 us/step" : "");
}
BENCHMARK(BM_DecodeStep)->Arg(64)->Arg(256)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace gantry::scheduler

BENCHMARK_MAIN();
