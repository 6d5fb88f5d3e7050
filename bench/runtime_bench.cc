// Runtime benchmark: load time, prefill throughput and decode tokens/s.
//
//   runtime_bench --model DIR [--device cuda] [--dtype bfloat16]
//                 [--prompt_tokens 128] [--decode_tokens 128] [--batches 1,8,32]
//
// Prints one line per figure. Decode at batch B runs B sequences with
// distinct prompts, prefilled first, then `decode_tokens` single-token steps
// of all B together; tokens/s counts every sequence's tokens.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/model_runner.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model folder");
ABSL_FLAG(std::string, device, "cuda", "cpu, cuda or cuda:N");
ABSL_FLAG(std::string, dtype, "", "float32, bfloat16 or float16 (default: the config's)");
ABSL_FLAG(int64_t, prompt_tokens, 128, "prompt length per sequence");
ABSL_FLAG(int64_t, decode_tokens, 128, "tokens decoded per sequence");
ABSL_FLAG(std::vector<std::string>, batches, std::vector<std::string>({"1"}), "batch sizes");
ABSL_FLAG(uint64_t, kv_cache_mib, 8192, "KV cache size in MiB");

namespace {

using Clock = std::chrono::steady_clock;
using gantry::runtime::ModelRunner;
using gantry::runtime::SequenceId;
using gantry::runtime::StepItem;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "error: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  gantry::runtime::LoadOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.device = absl::GetFlag(FLAGS_device);
  options.dtype = absl::GetFlag(FLAGS_dtype);
  options.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_mib) << 20;
  if (options.model_dir.empty()) {
    std::fprintf(stderr, "usage: runtime_bench --model DIR [--device cuda] [--batches 1,8,32]\n");
    return 2;
  }
  auto start = Clock::now();
  auto loaded = gantry::runtime::LoadModel(options);
  if (!loaded.ok()) return Fail(loaded.status());
  const double load_s = Seconds(start);
  ModelRunner& runner = **loaded;
  const auto& info = runner.info();
  std::printf("model %s (%s) on %s, %s\n", options.model_dir.c_str(), info.config.architecture_name.c_str(),
              info.device.c_str(), info.dtype.c_str());
  std::printf("load: %.2f s, %.2f GB weights, %.2f GB/s; KV cache %.2f GB in %ld blocks\n", load_s,
              info.weight_bytes / 1e9, info.weight_bytes / 1e9 / load_s, info.kv_cache_bytes / 1e9,
              static_cast<long>(info.num_blocks));

  const int64_t prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  const int64_t decode_tokens = absl::GetFlag(FLAGS_decode_tokens);
  gantry::runtime::SamplingParams greedy;
  greedy.temperature = 0;
  for (const std::string& batch_text : absl::GetFlag(FLAGS_batches)) {
    const int batch = std::stoi(batch_text);
    std::vector<SequenceId> ids;
    for (int b = 0; b < batch; ++b) {
      std::vector<int32_t> prompt(prompt_tokens);
      for (int64_t t = 0; t < prompt_tokens; ++t) {
        prompt[t] = static_cast<int32_t>((t * 7919 + b * 104729 + 13) % info.config.vocab_size);
      }
      auto id = runner.AddSequence({prompt, {}, greedy});
      if (!id.ok()) return Fail(id.status());
      ids.push_back(*id);
    }
    std::vector<StepItem> prefill, decode;
    for (SequenceId id : ids) {
      prefill.push_back({id, prompt_tokens});
      decode.push_back({id, 1});
    }
    // Warm-up (kernel selection, allocator) on the first decode steps.
    start = Clock::now();
    if (auto r = runner.Step(prefill); !r.ok()) return Fail(r.status());
    const double prefill_s = Seconds(start);
    for (int i = 0; i < 3; ++i) {
      if (auto r = runner.Step(decode); !r.ok()) return Fail(r.status());
    }
    start = Clock::now();
    for (int64_t i = 0; i < decode_tokens; ++i) {
      if (auto r = runner.Step(decode); !r.ok()) return Fail(r.status());
    }
    const double decode_s = Seconds(start);
    std::printf("batch %3d: prefill %ld tokens in %.3f s (%.0f tokens/s); decode %.1f tokens/s "
                "(%.2f ms/step)\n",
                batch, static_cast<long>(prompt_tokens * batch), prefill_s,
                prompt_tokens * batch / prefill_s, batch * decode_tokens / decode_s,
                1e3 * decode_s / decode_tokens);
    for (SequenceId id : ids) (void)runner.RemoveSequence(id);
  }
  return 0;
}
