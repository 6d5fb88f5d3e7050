// Runtime benchmark: load time, time to first token, prefill throughput and
// decode tokens/s, each beside its target and the memory roofline.
//
//   runtime_bench --model DIR [--device cuda] [--dtype bfloat16]
//                 [--prompt_tokens 128] [--decode_tokens 128] [--batches 1,8,32,64]
//                 [--ttft_prompt 512] [--cuda_kernels=false] [--cuda_graph_max_batch 64]
//
// Decode at batch B runs B sequences with distinct prompts, prefilled first,
// then `decode_tokens` single-token steps of all B together; tokens/s counts
// every sequence's tokens. The roofline is the step time that reading every
// weight and the batch's KV cache once at the measured device-to-device copy
// bandwidth would take: decode cannot be faster than that. Each decode line
// also splits a step's time between the host (everything but waiting for the
// sampled ids: runtime::StepTiming) and the device.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#ifdef GANTRY_BENCH_CUDA
#include <cuda_profiler_api.h>
#endif

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/model_runner.h"
#include "scheduler/runner_session.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model folder");
ABSL_FLAG(std::string, device, "cuda", "cpu, cuda or cuda:N");
ABSL_FLAG(std::string, dtype, "", "float32, bfloat16 or float16 (default: the config's)");
ABSL_FLAG(int64_t, prompt_tokens, 128, "prompt length per sequence");
ABSL_FLAG(int64_t, decode_tokens, 128, "tokens decoded per sequence");
ABSL_FLAG(std::vector<std::string>, batches, std::vector<std::string>({"1"}), "batch sizes");
ABSL_FLAG(uint64_t, kv_cache_mib, 8192, "KV cache size in MiB");
ABSL_FLAG(int64_t, ttft_prompt, 512, "prompt length of the time-to-first-token runs (0: skip)");
ABSL_FLAG(bool, cuda_kernels, true, "use Gantry's CUDA kernels (false: LibTorch operators)");
ABSL_FLAG(int64_t, cuda_graph_max_batch, 64, "CUDA graphs for decode batches up to this (0: none)");
ABSL_FLAG(bool, skinny_gemm, false, "Gantry's SkinnyGemm for projections of up to 8 rows (default: cuBLAS)");
ABSL_FLAG(int32_t, tp, 1, "tensor parallelism: ranks on GPUs device, device + 1, ... (NCCL); 1: off");
ABSL_FLAG(bool, decode_gemv, true,
          "Gantry's fused DecodeGemv for decode steps of up to 4 sequences (false: cuBLAS and separate kernels)");
ABSL_FLAG(bool, gemv_rope, true,
          "with --decode_gemv, rotary embedding and KV-cache write fused into the qkv product (false: their own kernel)");
ABSL_FLAG(int32_t, gemv_l2_prefetch, 0,
          "with --decode_gemv, units (16 rows) of the o projection each block asks into L2 during attention (0: off)");
ABSL_FLAG(bool, attention_early_loads, true,
          "decode steps of 1-2 sequences: attention reads lengths, block tables and older keys before waiting for qkv");
ABSL_FLAG(bool, staged_upload, true, "load weights through pinned staging buffers and reader threads (LoadOptions::cuda_staged_upload)");
ABSL_FLAG(int64_t, profile_decode_steps, 0,
          "after each batch's timed decode, run this many more steps between cudaProfilerStart/Stop "
          "(for ncu --profile-from-start off)");

namespace {

using Clock = std::chrono::steady_clock;
using gantry::runtime::ModelRunner;
using gantry::runtime::SequenceId;
using gantry::scheduler::RunnerSession;
using gantry::scheduler::SessionItem;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "error: %s\n", status.ToString().c_str());
  return 1;
}

std::vector<int32_t> Prompt(int64_t length, int64_t salt, int64_t vocab) {
  std::vector<int32_t> prompt(length);
  for (int64_t t = 0; t < length; ++t) prompt[t] = static_cast<int32_t>((t * 7919 + salt * 104729 + 13) % vocab);
  return prompt;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  gantry::runtime::LoadOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.device = absl::GetFlag(FLAGS_device);
  options.dtype = absl::GetFlag(FLAGS_dtype);
  options.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_mib) << 20;
  options.cuda_kernels = absl::GetFlag(FLAGS_cuda_kernels);
  options.cuda_graph_max_batch = absl::GetFlag(FLAGS_cuda_graph_max_batch);
  options.cuda_skinny_gemm = absl::GetFlag(FLAGS_skinny_gemm);
  options.cuda_decode_gemv = absl::GetFlag(FLAGS_decode_gemv);
  options.cuda_decode_gemv_rope = absl::GetFlag(FLAGS_gemv_rope);
  options.cuda_decode_gemv_l2_prefetch_units = absl::GetFlag(FLAGS_gemv_l2_prefetch);
  options.cuda_decode_attention_early_loads = absl::GetFlag(FLAGS_attention_early_loads);
  options.cuda_staged_upload = absl::GetFlag(FLAGS_staged_upload);
  options.tensor_parallel = absl::GetFlag(FLAGS_tp);
  if (options.model_dir.empty()) {
    std::fprintf(stderr, "usage: runtime_bench --model DIR [--device cuda] [--batches 1,8,32]\n");
    return 2;
  }
  double bandwidth = 0;  // bytes/s
  if (options.device != "cpu") {
    auto measured = gantry::runtime::MeasureCopyBandwidth(options.device);
    if (!measured.ok()) return Fail(measured.status());
    bandwidth = *measured;
    std::printf("device-to-device copy bandwidth: %.0f GB/s (read + written)\n", bandwidth / 1e9);
  }
  auto start = Clock::now();
  auto loaded = gantry::runtime::LoadModel(options);
  if (!loaded.ok()) return Fail(loaded.status());
  const double load_s = Seconds(start);
  ModelRunner& runner = **loaded;
  const auto& info = runner.info();
  const auto& config = info.config;
  std::printf("model %s (%s) on %s, %s; %s\n", options.model_dir.c_str(), config.architecture_name.c_str(),
              info.device.c_str(), info.dtype.c_str(), info.execution.c_str());
  std::printf("load: %.2f s, %.2f GB weights, %.2f GB/s (weights %.2f s = %.2f GB/s, set-up %.2f s); "
              "KV cache %.2f GB in %ld blocks\n",
              load_s, info.weight_bytes / 1e9, info.weight_bytes / 1e9 / load_s, info.weights_seconds,
              info.weight_bytes / 1e9 / std::max(info.weights_seconds, 1e-9), info.setup_seconds,
              info.kv_cache_bytes / 1e9, static_cast<long>(info.num_blocks));
  const double kv_bytes_per_token = static_cast<double>(info.kv_cache_bytes) / (info.num_blocks * info.block_size);

  gantry::runtime::SamplingParams greedy;
  greedy.temperature = 0;
  const int64_t vocab = config.vocab_size;

  // Time to first token: a fresh prompt prefilled and its first token
  // sampled, on an otherwise idle runner. The first run after the load
  // must be as fast as the rest.
  if (const int64_t ttft_prompt = absl::GetFlag(FLAGS_ttft_prompt); ttft_prompt > 0) {
    std::vector<double> times;
    for (int run = 0; run < 6; ++run) {
      RunnerSession session(&runner);
      auto id = session.Add(Prompt(ttft_prompt, 1000 + run, vocab), {}, greedy);
      if (!id.ok()) return Fail(id.status());
      start = Clock::now();
      if (auto r = session.Step({SessionItem{*id, ttft_prompt}}); !r.ok()) return Fail(r.status());
      times.push_back(Seconds(start));
    }
    std::vector<double> later(times.begin() + 1, times.end());
    std::sort(later.begin(), later.end());
    std::printf("ttft %ld-token prompt: first after load %.1f ms, median of the next 5 %.1f ms "
                "(target <= 18 ms, first within 10%% of the rest)\n",
                static_cast<long>(ttft_prompt), 1e3 * times[0], 1e3 * later[later.size() / 2]);
  }

  const int64_t prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  const int64_t decode_tokens = absl::GetFlag(FLAGS_decode_tokens);
  for (const std::string& batch_text : absl::GetFlag(FLAGS_batches)) {
    const int batch = std::stoi(batch_text);
    RunnerSession session(&runner);
    std::vector<SequenceId> ids;
    for (int b = 0; b < batch; ++b) {
      auto id = session.Add(Prompt(prompt_tokens, b, vocab), {}, greedy);
      if (!id.ok()) return Fail(id.status());
      ids.push_back(*id);
    }
    std::vector<SessionItem> prefill, decode;
    for (SequenceId id : ids) {
      prefill.push_back({id, prompt_tokens});
      decode.push_back({id, 1});
    }
    start = Clock::now();
    if (auto r = session.Step(prefill); !r.ok()) return Fail(r.status());
    const double prefill_s = Seconds(start);
    for (int i = 0; i < 3; ++i) {
      if (auto r = session.Step(decode); !r.ok()) return Fail(r.status());
    }
    double device_s = 0, prepare_s = 0, finish_s = 0;  // summed StepTiming of the timed steps
    start = Clock::now();
    for (int64_t i = 0; i < decode_tokens; ++i) {
      auto r = session.Step(decode);
      if (!r.ok()) return Fail(r.status());
      device_s += r->timing.device_seconds;
      prepare_s += r->timing.prepare_seconds;
      finish_s += r->timing.finish_seconds;
    }
    const double decode_s = Seconds(start);
    const double step_s = decode_s / decode_tokens;
    if (const int64_t steps = absl::GetFlag(FLAGS_profile_decode_steps); steps > 0) {
#ifdef GANTRY_BENCH_CUDA
      cudaProfilerStart();
      for (int64_t i = 0; i < steps; ++i) {
        if (auto r = session.Step(decode); !r.ok()) return Fail(r.status());
      }
      cudaProfilerStop();
#else
      std::fprintf(stderr, "--profile_decode_steps needs a build with CUDA\n");
      return 2;
#endif
    }
    std::printf("batch %3d: prefill %ld tokens in %.1f ms (%.0f tokens/s); decode %.1f tokens/s (%.2f ms/step)",
                batch, static_cast<long>(prompt_tokens * batch), 1e3 * prefill_s,
                prompt_tokens * batch / prefill_s, batch / step_s, 1e3 * step_s);
    if (bandwidth > 0) {
      // Mean context over the timed steps.
      const double context = prompt_tokens + 3 + decode_tokens / 2.0;
      // Tensor-parallel ranks read their shares at the same time, each at
      // the bandwidth of its own GPU.
      const double ranks = static_cast<double>(std::max<size_t>(1, info.devices.size()));
      const double bytes = info.weight_bytes + batch * context * kv_bytes_per_token;
      const double roofline_s = bytes / ranks / bandwidth;
      std::printf("; roofline %.2f ms/step = %.0f tokens/s, reached %.0f%%", 1e3 * roofline_s,
                  batch / roofline_s, 100 * roofline_s / step_s);
      if (batch == 1) std::printf(" (target >= 91%%, >= 170 tokens/s)");
      if (batch == 64) std::printf(" (target >= 7000 tokens/s)");
    }
    // On a GPU the device works while the host waits for a step's sampled
    // ids; every other host microsecond of a step (packing, launching, the
    // session's books) leaves it idle. (On the CPU the forward pass runs
    // before the wait, so the split says nothing there.)
    if (info.device.rfind("cuda", 0) == 0) {
      std::printf("; host %.0f us/step outside the device wait (runtime: %.0f until enqueued, %.0f after the "
                  "wait), device busy %.1f%%",
                  1e6 * (decode_s - device_s) / decode_tokens, 1e6 * prepare_s / decode_tokens,
                  1e6 * finish_s / decode_tokens, 100 * device_s / decode_s);
    }
    std::printf("\n");
  }
  return 0;
}
