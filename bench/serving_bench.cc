// Serving benchmark: the scheduler and runtime together, in process (no gRPC).
//
// Throughput: for each count N in --streams, N clients submit at once; each
// request has its own --prompt_tokens prompt and generates --max_tokens
// tokens (eos ignored). Aggregate tokens/s = N * max_tokens / wall time from
// the first submit to the last token, prefill included. The prompts are the
// ones bench/transformers_baseline.py builds (BenchPrompt), so the two
// figures compare like with like. Each run also prints the engine's steps
// and how the wall time split between the host and waiting for the device
// (StepReport::device_wait).
//
//   serving_bench --model DIR [--dtype bfloat16] [--streams 1,8,32,64]
//
// Multi-turn chat (--chat_users U): as Dify sends a conversation, each of U
// users resends the whole history every turn (a shared --chat_system_tokens
// system prompt, then its earlier turns and replies, then a new message).
// Run once with prefix caching on and once off; the median time to first
// token of the turns is printed side by side.
//
// Soak: --soak_minutes M runs --soak_streams clients for M minutes, each
// sending requests of random prompt length (8 to 4 x --prompt_tokens) and
// random length (1 to 2 x --max_tokens), greedy or sampled, and cancelling
// one in four at a random point; every 30 s it prints requests, errors,
// tokens/s, the process's RSS, the CUDA allocator's memory and the engine's
// queue and free KV blocks. It fails on any request error, a stream that
// stalls, or, at the end, a request left running or a KV block not freed.
//
// Swap: --swap_rounds R loads two copies of the model under a budget that
// holds one (--swap_budget_mib, default: 1.5 x one model's cost) and
// alternates requests between them, printing each cold load (GB/s) and each
// swap (evict the other, load, first token), and where the weights came from
// (the files, or the host tier: --swap_host_cache_mib). Like gantry-server,
// it first reserves the host tier and warms the device up (--swap_warm_up).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/device_warm_up.h"
#include "runtime/host_tier_memory.h"
#include "runtime/model_runner.h"
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
ABSL_FLAG(std::string, guided_schema, "",
          "a JSON Schema: each stream count runs free, then with every request guided by it (the model folder "
          "needs a tokenizer; a schema whose output outlasts max_tokens keeps every request to max_tokens)");
ABSL_FLAG(int32_t, chat_users, 0, "run the multi-turn chat workload with this many users");
ABSL_FLAG(int32_t, chat_turns, 4, "turns per user in the chat workload");
ABSL_FLAG(int64_t, chat_system_tokens, 1000, "shared system prompt of the chat workload");
ABSL_FLAG(int64_t, chat_message_tokens, 64, "tokens of each user message in the chat workload");
ABSL_FLAG(int64_t, chat_reply_tokens, 64, "tokens of each reply in the chat workload");
ABSL_FLAG(double, soak_minutes, 0, "run the soak workload for this many minutes");
ABSL_FLAG(bool, overlap_steps, true, "the engine collects each step after launching the next (EngineOptions::overlap_steps)");
ABSL_FLAG(bool, run_ahead, true, "the engine launches each step before collecting the one before it (EngineOptions::run_ahead)");
ABSL_FLAG(int32_t, soak_streams, 64, "concurrent clients of the soak workload");
ABSL_FLAG(int32_t, swap_rounds, 0, "alternate requests between two copies of the model this many times");
ABSL_FLAG(uint64_t, swap_budget_mib, 0, "budget for the swap test (default: 1.5 x one model's cost)");
ABSL_FLAG(int64_t, swap_host_cache_mib, -1,
          "host tier of the swap test (-1: room for both copies' weights; 0: none, every load from the files)");
ABSL_FLAG(bool, swap_reserve_host, true,
          "reserve (fault in and pin) the host tier's memory before the swap test, as gantry-server does at start-up "
          "(false: each copy to the tier pins fresh memory)");
ABSL_FLAG(bool, swap_warm_up, true,
          "warm the device up (runtime/device_warm_up.h) before the swap test, as gantry-server does at start-up "
          "(false: the first load pays for it)");

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

GenerationRequest MakeRequest(int64_t index, int64_t vocab,
                              std::shared_ptr<const gantry::guided::Grammar> grammar = nullptr) {
  GenerationRequest request;
  request.grammar = std::move(grammar);
  request.prompt = BenchPrompt(index, absl::GetFlag(FLAGS_prompt_tokens), vocab);
  request.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  request.ignore_eos = true;
  request.sampling.temperature = 0;
  return request;
}

// How a request is followed beyond its tokens (the soak's random cancels).
struct DrainPlan {
  int64_t cancel_after = -1;                  // cancel after this many events (0: at once; -1: never)
  absl::Duration stall = absl::Seconds(600);  // no event for this long fails the request
  bool* cancelled = nullptr;                  // set: whether it ended cancelled
};

// Pops `stream` to its last event: the tokens it carried (their ids in `ids`
// when given), or -1 after an error or a stall (printed).
int64_t Drain(RequestStream& stream, double* first_token_s, Clock::time_point start,
              std::vector<int32_t>* ids = nullptr, const DrainPlan& plan = {}) {
  StreamEvent event;
  int64_t tokens = 0, events = 0;
  if (plan.cancel_after == 0) stream.Cancel();
  while (stream.Pop(&event, plan.stall)) {
    if (!event.error.ok()) {
      std::fprintf(stderr, "request failed: %s\n", event.error.ToString().c_str());
      return -1;
    }
    if (tokens == 0 && !event.tokens.empty() && first_token_s) *first_token_s = Seconds(start);
    tokens += static_cast<int64_t>(event.tokens.size());
    if (ids) {
      for (const auto& t : event.tokens) ids->push_back(t.id);
    }
    if (++events == plan.cancel_after) stream.Cancel();
    if (event.last()) {
      if (plan.cancelled) *plan.cancelled = event.reason == FinishReason::kCancelled;
      return tokens;
    }
  }
  std::fprintf(stderr, "a stream stalled for %.0f s\n", absl::ToDoubleSeconds(plan.stall));
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
  spec.engine.overlap_steps = absl::GetFlag(FLAGS_overlap_steps);
  spec.engine.run_ahead = absl::GetFlag(FLAGS_run_ahead);
  return spec;
}

// The engine's steps during a run: how many, and how long the engine
// thread waited for the device in them. The rest of the wall time the device
// sat idle while the host planned, packed, launched and streamed. Decode-only
// steps are also timed on their own: from one's launch to the next one's,
// less the first's wait, is what the device idled between them.
class StepTally : public SchedulerObserver {
 public:
  struct Taken {
    int64_t steps = 0;
    double device_wait = 0;        // seconds, every step
    int64_t decode_pairs = 0;      // consecutive decode-only steps
    double decode_idle = 0;        // seconds the device idled between them
    double decode_period = 0;      // seconds from the first's launch to the second's
  };
  void OnStep(const std::string& model, const StepReport& report) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (report.sequences == 0) return;
    taken_.steps += 1;
    taken_.device_wait += absl::ToDoubleSeconds(report.device_wait);
    const bool decode_only = report.prompt_tokens == 0 && report.decode_tokens > 0;
    if (decode_only && last_decode_) {
      const double period = absl::ToDoubleSeconds(report.start - last_decode_->start);
      taken_.decode_pairs += 1;
      taken_.decode_period += period;
      taken_.decode_idle += std::max(0.0, period - absl::ToDoubleSeconds(last_decode_->device_wait));
    }
    if (decode_only) {
      last_decode_ = report;
    } else {
      last_decode_.reset();
    }
  }
  // What came since the last call.
  Taken Take() {
    std::lock_guard<std::mutex> lock(mutex_);
    Taken taken = taken_;
    taken_ = Taken{};
    last_decode_.reset();
    return taken;
  }

 private:
  std::mutex mutex_;
  Taken taken_;
  std::optional<StepReport> last_decode_;
};

int Throughput() {
  ModelRegistry registry({BaseSpec("bench")}, LoadModelFolder, EstimateModelBytes, {}, RealClock::Get());
  StepTally tally;
  registry.SetObserver(&tally);
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
  tally.Take();
  std::shared_ptr<const gantry::guided::Grammar> grammar;
  if (!absl::GetFlag(FLAGS_guided_schema).empty()) {
    gantry::guided::GrammarSpec spec;
    spec.kind = gantry::guided::GrammarSpec::Kind::kJsonSchema;
    spec.json_schema = absl::GetFlag(FLAGS_guided_schema);
    const auto compile_start = Clock::now();
    auto compiled = (*lease)->CompileGrammar(spec);
    if (!compiled.ok()) return Fail(compiled.status());
    grammar = *std::move(compiled);
    std::printf("guided: schema compiled for %lld tokens in %.3f s\n", static_cast<long long>(vocab),
                Seconds(compile_start));
  }
  // n concurrent streams; aggregate tokens/s, or a negative number on failure.
  auto run = [&](int64_t n, std::shared_ptr<const gantry::guided::Grammar> guided) -> double {
    std::vector<std::thread> clients;
    std::vector<double> first_token(n, 0);
    std::atomic<int64_t> generated{0};
    std::atomic<bool> failed{false};
    const auto start = Clock::now();
    for (int64_t i = 0; i < n; ++i) {
      clients.emplace_back([&, i] {
        auto stream = (*lease)->Submit(MakeRequest(i, vocab, guided));
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
    const StepTally::Taken steps = tally.Take();
    if (failed) return -1;
    std::sort(first_token.begin(), first_token.end());
    std::printf("streams %3lld%s: %8.1f tokens/s aggregate, %6.1f tokens/s per stream, "
                "time to first token p50 %.3f s max %.3f s, wall %.2f s, %lld tokens\n",
                static_cast<long long>(n), guided ? " guided" : "", generated / wall, generated / wall / n,
                first_token[n / 2], first_token.back(), wall, static_cast<long long>(generated.load()));
    const bool ahead = absl::GetFlag(FLAGS_run_ahead) && absl::GetFlag(FLAGS_overlap_steps);
    if (steps.steps > 0 && ahead) {
      // The host's work hides behind the device's, so the waits no longer
      // tell the two apart: compare with --run_ahead=false.
      std::printf("  engine: %lld steps, running ahead (each launched before the one before it is collected)\n",
                  static_cast<long long>(steps.steps));
    } else if (steps.steps > 0 && info.device.rfind("cuda", 0) == 0) {  // on the CPU the forward runs before the wait
      std::printf("  engine: %lld steps, host %.0f us/step outside the device wait, device busy %.1f%% of the wall",
                  static_cast<long long>(steps.steps), 1e6 * (wall - steps.device_wait) / steps.steps,
                  100 * steps.device_wait / wall);
      if (steps.decode_pairs > 0) {
        std::printf("; between decode steps the device idles %.0f us (%.1f%% of their time)",
                    1e6 * steps.decode_idle / steps.decode_pairs, 100 * steps.decode_idle / steps.decode_period);
      }
      std::printf("\n");
    }
    return generated / wall;
  };
  for (const std::string& text : absl::GetFlag(FLAGS_streams)) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(text, &n) || n <= 0) return Fail(absl::InvalidArgumentError("--streams: " + text));
    const double free_rate = run(n, nullptr);
    if (free_rate < 0) return 1;
    if (grammar) {
      const double guided_rate = run(n, grammar);
      if (guided_rate < 0) return 1;
      std::printf("  guided: %.1f%% slower than free (target: <= 10%% at 32 streams)\n",
                  100.0 * (1.0 - guided_rate / free_rate));
    }
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

// The chat workload on a fresh engine; fills the time to first token of
// every turn and the prompt tokens found cached.
absl::Status Chat(bool prefix_caching, std::vector<double>* ttft, int64_t* cached_tokens, int64_t* prompt_tokens) {
  ModelSpec spec = BaseSpec(prefix_caching ? "chat-cached" : "chat-uncached");
  spec.engine.prefix_caching = prefix_caching;
  ModelRegistry registry({spec}, LoadModelFolder, EstimateModelBytes, {}, RealClock::Get());
  auto lease = registry.Acquire(spec.name);
  if (!lease.ok()) return lease.status();
  const int64_t vocab = (*lease)->info().config.vocab_size;
  {  // warm-up
    auto stream = (*lease)->Submit(MakeRequest(100000, vocab));
    if (!stream.ok()) return stream.status();
    if (Drain(**stream, nullptr, Clock::now()) < 0) return absl::InternalError("warm-up failed");
  }
  const int users = absl::GetFlag(FLAGS_chat_users), turns = absl::GetFlag(FLAGS_chat_turns);
  const std::vector<int32_t> system = BenchPrompt(-1, absl::GetFlag(FLAGS_chat_system_tokens), vocab);
  std::vector<std::vector<double>> times(users);
  std::atomic<bool> failed{false};
  std::vector<std::thread> clients;
  for (int u = 0; u < users; ++u) {
    clients.emplace_back([&, u] {
      std::vector<int32_t> history = system;
      for (int turn = 0; turn < turns && !failed; ++turn) {
        const std::vector<int32_t> message =
            BenchPrompt(200000 + u * 1000 + turn, absl::GetFlag(FLAGS_chat_message_tokens), vocab);
        history.insert(history.end(), message.begin(), message.end());
        GenerationRequest request;
        request.prompt = history;
        request.max_tokens = absl::GetFlag(FLAGS_chat_reply_tokens);
        request.ignore_eos = true;
        request.sampling.temperature = 0;
        const auto start = Clock::now();
        auto stream = (*lease)->Submit(std::move(request));
        double first = 0;
        std::vector<int32_t> reply;
        if (!stream.ok() || Drain(**stream, &first, start, &reply) < 0) {
          failed = true;
          return;
        }
        times[u].push_back(first);
        history.insert(history.end(), reply.begin(), reply.end());
      }
    });
  }
  for (auto& c : clients) c.join();
  if (failed) return absl::InternalError("a chat request failed");
  for (const auto& t : times) ttft->insert(ttft->end(), t.begin(), t.end());
  const EngineStats stats = (*lease)->Stats();
  *cached_tokens = stats.prefix_hit_tokens;
  *prompt_tokens = stats.prefix_query_tokens;
  return absl::OkStatus();
}

double Percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return values[static_cast<size_t>(p * static_cast<double>(values.size() - 1))];
}

int ChatWorkload() {
  std::printf("chat: %d users x %d turns, a shared %lld-token system prompt, %lld-token messages, "
              "%lld-token replies, each turn resending the history\n",
              absl::GetFlag(FLAGS_chat_users), absl::GetFlag(FLAGS_chat_turns),
              static_cast<long long>(absl::GetFlag(FLAGS_chat_system_tokens)),
              static_cast<long long>(absl::GetFlag(FLAGS_chat_message_tokens)),
              static_cast<long long>(absl::GetFlag(FLAGS_chat_reply_tokens)));
  std::vector<double> on, off;
  int64_t hits = 0, queries = 0, unused = 0;
  if (auto s = Chat(true, &on, &hits, &queries); !s.ok()) return Fail(s);
  if (auto s = Chat(false, &off, &unused, &unused); !s.ok()) return Fail(s);
  const double median_on = Percentile(on, 0.5), median_off = Percentile(off, 0.5);
  std::printf("time to first token, prefix cache on:  median %.1f ms, p90 %.1f ms (%lld of %lld prompt tokens cached)\n",
              1e3 * median_on, 1e3 * Percentile(on, 0.9), static_cast<long long>(hits),
              static_cast<long long>(queries));
  std::printf("time to first token, prefix cache off: median %.1f ms, p90 %.1f ms\n", 1e3 * median_off,
              1e3 * Percentile(off, 0.9));
  std::printf("median cut %.1fx (target >= 5x with 32 users on the 8B-shaped model)\n", median_off / median_on);
  return 0;
}

// The process's resident set, from /proc/self/statm.
double ResidentMiB() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

int Soak() {
  ModelRegistry registry({BaseSpec("soak")}, LoadModelFolder, EstimateModelBytes, {}, RealClock::Get());
  auto lease = registry.Acquire("soak");
  if (!lease.ok()) return Fail(lease.status());
  const int64_t vocab = (*lease)->info().config.vocab_size;
  const int streams = absl::GetFlag(FLAGS_soak_streams);
  const auto duration = std::chrono::duration<double>(60.0 * absl::GetFlag(FLAGS_soak_minutes));
  std::printf("soak: %d streams for %.1f min on %s (%s)\n", streams, absl::GetFlag(FLAGS_soak_minutes),
              (*lease)->info().device.c_str(), (*lease)->info().dtype.c_str());
  std::atomic<int64_t> finished{0}, cancelled{0}, errors{0}, tokens{0};
  std::atomic<bool> stop{false};
  const auto start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < streams; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937_64 rng(1000 + c);
      for (int64_t i = 0; !stop.load(); ++i) {
        GenerationRequest request;
        const int64_t prompt = 8 + static_cast<int64_t>(rng() % (4 * absl::GetFlag(FLAGS_prompt_tokens)));
        request.prompt = BenchPrompt(c * 1000003 + i, prompt, vocab);
        request.max_tokens = 1 + static_cast<int64_t>(rng() % (2 * absl::GetFlag(FLAGS_max_tokens)));
        request.ignore_eos = true;
        const bool sampled = rng() % 2 == 0;
        request.sampling.temperature = sampled ? 0.8f : 0.0f;
        request.sampling.top_p = sampled ? 0.9f : 1.0f;
        request.sampling.seed = rng();
        // One in four is cancelled after a random number of events (0: before any).
        const int64_t cancel_after = rng() % 4 == 0 ? static_cast<int64_t>(rng() % 16) : -1;
        auto stream = (*lease)->Submit(std::move(request));
        if (!stream.ok()) {
          std::fprintf(stderr, "submit: %s\n", stream.status().ToString().c_str());
          ++errors;
          continue;
        }
        bool was_cancelled = false;
        const int64_t n = Drain(**stream, nullptr, Clock::now(), nullptr,
                                {cancel_after, absl::Seconds(120), &was_cancelled});
        if (n < 0) {
          ++errors;
          continue;
        }
        tokens += n;
        (was_cancelled ? cancelled : finished) += 1;
      }
    });
  }
  auto report = [&](const char* when) {
    const EngineStats stats = (*lease)->Stats();
    double allocated = 0, reserved = 0;
    for (const auto& a : gantry::runtime::DescribeCudaAllocators()) {
      allocated += a.allocated_bytes / double(1 << 20);
      reserved += a.reserved_bytes / double(1 << 20);
    }
    const double elapsed = Seconds(start);
    std::printf("%s %6.0f s: %lld finished, %lld cancelled, %lld errors, %.0f tokens/s; RSS %.0f MiB, "
                "CUDA allocated %.0f MiB reserved %.0f MiB; running %lld waiting %lld, KV blocks free %lld of %lld\n",
                when, elapsed, static_cast<long long>(finished.load()), static_cast<long long>(cancelled.load()),
                static_cast<long long>(errors.load()), tokens.load() / std::max(elapsed, 1e-9), ResidentMiB(),
                allocated, reserved, static_cast<long long>(stats.running), static_cast<long long>(stats.waiting),
                static_cast<long long>(stats.blocks_free), static_cast<long long>(stats.blocks_total));
    std::fflush(stdout);
  };
  auto next_report = start + std::chrono::seconds(30);
  while (Clock::now() - start < duration && errors.load() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (Clock::now() >= next_report) {
      report("soak");
      next_report += std::chrono::seconds(30);
    }
  }
  stop = true;
  for (auto& c : clients) c.join();
  // The engine frees a finished request's blocks at its next step: give it a moment.
  EngineStats stats = (*lease)->Stats();
  for (int i = 0; i < 100 && (stats.running > 0 || stats.waiting > 0 || stats.blocks_free != stats.blocks_total); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    stats = (*lease)->Stats();
  }
  report("end ");
  if (errors.load() > 0) return Fail(absl::InternalError(absl::StrCat(errors.load(), " request(s) failed")));
  if (stats.running > 0 || stats.waiting > 0 || stats.blocks_free != stats.blocks_total) {
    return Fail(absl::InternalError(absl::StrCat("after the soak: ", stats.running, " running, ", stats.waiting,
                                                 " waiting, ", stats.blocks_total - stats.blocks_free,
                                                 " KV blocks not freed")));
  }
  std::printf("soak passed: no errors, no request left, every KV block free\n");
  return 0;
}

int Swap() {
  auto cost = EstimateModelBytes(BaseSpec("m0"));
  if (!cost.ok()) return Fail(cost.status());
  uint64_t budget = absl::GetFlag(FLAGS_swap_budget_mib) << 20;
  if (budget == 0) budget = *cost + *cost / 2;
  RegistryOptions options;
  options.budgets[absl::GetFlag(FLAGS_device)] = budget;
  const int64_t host_mib = absl::GetFlag(FLAGS_swap_host_cache_mib);
  // Both copies' weights (the cost also counts the KV cache) fit the tier.
  options.host_cache_bytes = host_mib < 0 ? 2 * *cost : static_cast<uint64_t>(host_mib) << 20;
  ModelRegistry registry({BaseSpec("m0"), BaseSpec("m1")}, LoadModelFolder, EstimateModelBytes, options,
                         RealClock::Get());
  std::printf("swap: two copies of %.2f GB each under a budget of %.2f GB on %s, host tier %.2f GB\n", *cost / 1e9,
              budget / 1e9, absl::GetFlag(FLAGS_device).c_str(), options.host_cache_bytes / 1e9);
  if (options.host_cache_bytes > 0 && absl::GetFlag(FLAGS_swap_reserve_host)) {
    const auto start = Clock::now();
    if (auto s = gantry::runtime::ReserveHostTierMemory(options.host_cache_bytes); !s.ok()) return Fail(s);
    std::printf("host tier memory reserved%s in %.2f s\n", gantry::runtime::HostTierArena()->pinned() ? " and pinned" : "",
                Seconds(start));
  }
  if (absl::GetFlag(FLAGS_swap_warm_up)) {
    auto seconds = gantry::runtime::WarmUpDevice(absl::GetFlag(FLAGS_device), absl::GetFlag(FLAGS_dtype));
    if (seconds.ok()) {
      std::printf("%s warmed up in %.2f s\n", absl::GetFlag(FLAGS_device).c_str(), *seconds);
    } else {  // as the server does: the first load pays instead
      std::printf("warm-up failed, the first load pays for it: %s\n", seconds.status().ToString().c_str());
    }
  }
  std::vector<double> first_tokens;  // of the second request after each load
  for (int round = 0; round < absl::GetFlag(FLAGS_swap_rounds); ++round) {
    const std::string name = round % 2 == 0 ? "m0" : "m1";
    const auto start = Clock::now();
    const RegistryCounters before = registry.Counters();
    auto lease = registry.Acquire(name);
    if (!lease.ok()) return Fail(lease.status());
    const double acquire_s = Seconds(start);
    const auto& info = (*lease)->info();
    auto stream = (*lease)->Submit(MakeRequest(round, info.config.vocab_size));
    if (!stream.ok()) return Fail(stream.status());
    double first_token_s = 0;
    if (Drain(**stream, &first_token_s, start) < 0) return 1;
    const RegistryCounters after = registry.Counters();
    const bool evicted = after.evictions_memory > before.evictions_memory;
    const bool from_host = after.loads_from_host > before.loads_from_host;
    // The next request on the loaded model: the first one's time to first
    // token (after the load) should match it.
    const auto again_start = Clock::now();
    auto again = (*lease)->Submit(MakeRequest(1000 + round, info.config.vocab_size));
    if (!again.ok()) return Fail(again.status());
    double again_first_s = 0;
    if (Drain(**again, &again_first_s, again_start) < 0) return 1;
    std::printf("round %d: %s %s from %s in %.2f s (%.2f GB/s of weights; weights %.2f s, set-up %.2f s), first "
                "token after %.2f s%s; time to first token %.1f ms after the load, %.1f ms for the next request\n",
                round, name.c_str(), evicted ? "evicted the other and loaded" : "loaded", from_host ? "host" : "disk",
                acquire_s, info.weight_bytes / 1e9 / acquire_s, info.weights_seconds, info.setup_seconds, first_token_s,
                evicted ? (from_host ? " (swap time, target <= 1.0 s)" : " (swap time)")
                        : " (cold load, target >= 12 GB/s)",
                1e3 * (first_token_s - acquire_s), 1e3 * again_first_s);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_model).empty()) {
    std::fprintf(stderr, "usage: serving_bench --model DIR [--streams 1,8,32,64] [--swap_rounds 4] [--chat_users 32] [--soak_minutes 20]\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_soak_minutes) > 0) return Soak();
  if (absl::GetFlag(FLAGS_swap_rounds) > 0) return Swap();
  if (absl::GetFlag(FLAGS_chat_users) > 0) return ChatWorkload();
  return Throughput();
}
