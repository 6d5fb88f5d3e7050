// Serving benchmark: the scheduler and runtime together, in process (no gRPC).
//
// Throughput: for each count N in --streams, N clients submit at once; each
// request has its own --prompt_tokens prompt and generates --max_tokens
// tokens (eos ignored). Aggregate tokens/s = N * max_tokens / wall time from
// the first submit to the last token, prefill included. The prompts are the
// ones bench/transformers_baseline.py builds (BenchPrompt), so the two
// figures compare like with like.
//
//   serving_bench --model DIR [--dtype bfloat16] [--streams 1,8,32,64]
//
// Swap: --swap_rounds R loads two copies of the model under a budget that
// holds one (--swap_budget_mib, default: 1.5 x one model's cost) and
// alternates requests between them, printing each cold load (GB/s) and each
// swap (evict the other, load, first token).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "scheduler/memory_budget.h"
#include "scheduler/model_loader.h"
#include "scheduler/model_registry.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model folder");
ABSL_FLAG(std::string, device, "cuda:0", "cpu or cuda:N");
ABSL_FLAG(std::string, dtype, "bfloat16", "float32, bfloat16 or float16");
ABSL_FLAG(int64_t, prompt_tokens, 128, "prompt length per request");
ABSL_FLAG(int64_t, max_tokens, 128, "tokens generated per request");
ABSL_FLAG(std::vector<std::string>, streams, std::vector<std::string>({"1", "8", "32", "64"}),
          "concurrent request counts");
ABSL_FLAG(int64_t, max_batch, 64, "engine max_batch");
ABSL_FLAG(int64_t, max_step_tokens, 2048, "engine max_step_tokens");
ABSL_FLAG(uint64_t, kv_cache_mib, 4096, "KV cache size in MiB");
ABSL_FLAG(int64_t, max_context, 4096, "context length to serve");
ABSL_FLAG(int32_t, swap_rounds, 0, "alternate requests between two copies of the model this many times");
ABSL_FLAG(uint64_t, swap_budget_mib, 0, "budget for the swap test (default: 1.5 x one model's cost)");

namespace {

using Clock = std::chrono::steady_clock;
using namespace gantry::scheduler;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "error: %s\n", status.ToString().c_str());
  return 1;
}

// Prompt `index`: the formula bench/transformers_baseline.py uses too.
std::vector<int32_t> BenchPrompt(int64_t index, int64_t length, int64_t vocab) {
  // Ordinary tokens only: special tokens sit at the start or the end of the
  // vocabulary, so the middle three quarters are used.
  std::vector<int32_t> prompt;
  const int64_t low = vocab / 8, span = vocab * 3 / 4;
  for (int64_t j = 0; j < length; ++j) {
    prompt.push_back(static_cast<int32_t>(low + (12345 + index * 7919 + j * 104729) % span));
  }
  return prompt;
}

GenerationRequest MakeRequest(int64_t index, int64_t vocab) {
  GenerationRequest request;
  request.prompt = BenchPrompt(index, absl::GetFlag(FLAGS_prompt_tokens), vocab);
  request.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  request.ignore_eos = true;
  request.sampling.temperature = 0;
  return request;
}

// Waits for the stream's last event; returns generated tokens (or -1 on error).
int64_t Drain(RequestStream& stream, double* first_token_s, Clock::time_point start) {
  StreamEvent event;
  int64_t tokens = 0;
  while (stream.Pop(&event, absl::Seconds(600))) {
    if (!event.error.ok()) {
      std::fprintf(stderr, "request failed: %s\n", event.error.ToString().c_str());
      return -1;
    }
    if (tokens == 0 && !event.tokens.empty() && first_token_s) *first_token_s = Seconds(start);
    tokens += static_cast<int64_t>(event.tokens.size());
    if (event.last()) return tokens;
  }
  return -1;
}

ModelSpec BaseSpec(const std::string& name) {
  ModelSpec spec;
  spec.name = name;
  spec.path = absl::GetFlag(FLAGS_model);
  spec.device = absl::GetFlag(FLAGS_device);
  spec.dtype = absl::GetFlag(FLAGS_dtype);
  spec.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_mib) << 20;
  spec.max_context = absl::GetFlag(FLAGS_max_context);
  spec.engine.max_batch = absl::GetFlag(FLAGS_max_batch);
  spec.engine.max_step_tokens = absl::GetFlag(FLAGS_max_step_tokens);
  spec.engine.max_queue = 4096;
  return spec;
}

int Throughput() {
  ModelRegistry registry({BaseSpec("bench")}, LoadModelFolder, EstimateModelBytes, {}, RealClock::Get());
  const auto load_start = Clock::now();
  auto lease = registry.Acquire("bench");
  if (!lease.ok()) return Fail(lease.status());
  const double load_s = Seconds(load_start);
  const auto& info = (*lease)->info();
  std::printf("model %s: %s on %s, %.2f GB of weights loaded in %.2f s (%.2f GB/s)\n", info.config.architecture_name.c_str(),
              info.dtype.c_str(), info.device.c_str(), info.weight_bytes / 1e9, load_s,
              info.weight_bytes / 1e9 / load_s);
  std::printf("requests: %lld prompt tokens, %lld generated tokens each, greedy\n",
              static_cast<long long>(absl::GetFlag(FLAGS_prompt_tokens)),
              static_cast<long long>(absl::GetFlag(FLAGS_max_tokens)));
  const int64_t vocab = info.config.vocab_size;
  // Warm-up: CUDA kernels and allocator pools.
  {
    auto stream = (*lease)->Submit(MakeRequest(100000, vocab));
    if (!stream.ok()) return Fail(stream.status());
    if (Drain(**stream, nullptr, Clock::now()) < 0) return 1;
  }
  for (const std::string& text : absl::GetFlag(FLAGS_streams)) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(text, &n) || n <= 0) return Fail(absl::InvalidArgumentError("--streams: " + text));
    std::vector<std::thread> clients;
    std::vector<double> first_token(n, 0);
    std::atomic<int64_t> generated{0};
    std::atomic<bool> failed{false};
    const auto start = Clock::now();
    for (int64_t i = 0; i < n; ++i) {
      clients.emplace_back([&, i] {
        auto stream = (*lease)->Submit(MakeRequest(i, vocab));
        if (!stream.ok()) {
          std::fprintf(stderr, "submit: %s\n", stream.status().ToString().c_str());
          failed = true;
          return;
        }
        int64_t tokens = Drain(**stream, &first_token[i], start);
        if (tokens < 0) failed = true;
        generated += std::max<int64_t>(tokens, 0);
      });
    }
    for (auto& c : clients) c.join();
    const double wall = Seconds(start);
    if (failed) return 1;
    std::sort(first_token.begin(), first_token.end());
    std::printf("streams %3lld: %8.1f tokens/s aggregate, %6.1f tokens/s per stream, "
                "time to first token p50 %.3f s max %.3f s, wall %.2f s\n",
                static_cast<long long>(n), generated / wall, generated / wall / n, first_token[n / 2],
                first_token.back(), wall);
    // Targets (issue 11, 8B-shaped bf16 model on one H100/H200).
    const bool standard = absl::GetFlag(FLAGS_prompt_tokens) == 128 && absl::GetFlag(FLAGS_max_tokens) == 128;
    if (standard && n == 32) std::printf("  target: >= 4000 tokens/s at 32 streams\n");
    if (standard && n == 64) std::printf("  target: >= 6000 tokens/s at 64 streams\n");
    if (n == 1 && absl::GetFlag(FLAGS_prompt_tokens) == 512) {
      std::printf("  target: time to first token <= 0.018 s for a 512-token prompt on an idle engine\n");
    }
    std::fflush(stdout);
  }
  std::printf("preemptions: %lld\n", static_cast<long long>((*lease)->Stats().preemptions));
  return 0;
}

int Swap() {
  auto cost = EstimateModelBytes(BaseSpec("m0"));
  if (!cost.ok()) return Fail(cost.status());
  uint64_t budget = absl::GetFlag(FLAGS_swap_budget_mib) << 20;
  if (budget == 0) budget = *cost + *cost / 2;
  RegistryOptions options;
  options.budgets[absl::GetFlag(FLAGS_device)] = budget;
  ModelRegistry registry({BaseSpec("m0"), BaseSpec("m1")}, LoadModelFolder, EstimateModelBytes, options,
                         RealClock::Get());
  std::printf("swap: two copies of %.2f GB each under a budget of %.2f GB on %s\n", *cost / 1e9, budget / 1e9,
              absl::GetFlag(FLAGS_device).c_str());
  for (int round = 0; round < absl::GetFlag(FLAGS_swap_rounds); ++round) {
    const std::string name = round % 2 == 0 ? "m0" : "m1";
    const auto start = Clock::now();
    const int64_t evictions_before = registry.Counters().evictions_memory;
    auto lease = registry.Acquire(name);
    if (!lease.ok()) return Fail(lease.status());
    const double acquire_s = Seconds(start);
    const auto& info = (*lease)->info();
    auto stream = (*lease)->Submit(MakeRequest(round, info.config.vocab_size));
    if (!stream.ok()) return Fail(stream.status());
    double first_token_s = 0;
    if (Drain(**stream, &first_token_s, start) < 0) return 1;
    const bool evicted = registry.Counters().evictions_memory > evictions_before;
    std::printf("round %d: %s %s in %.2f s (%.2f GB/s of weights), first token after %.2f s%s\n", round,
                name.c_str(), evicted ? "evicted the other and loaded" : "loaded cold", acquire_s,
                info.weight_bytes / 1e9 / acquire_s, first_token_s, evicted ? " (swap time)" : "");
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_model).empty()) {
    std::fprintf(stderr, "usage: serving_bench --model DIR [--streams 1,8,32,64] [--swap_rounds 4]\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_swap_rounds) > 0) return Swap();
  return Throughput();
}
