// Encoder benchmark (embedding and rerank models): sequences per second at
// each batch size for inputs of one length, beside the target, which is
// 1.5x what sentence-transformers does on the same GPU (fp16), passed in as
// --baseline (tools/make_encoder_models.py --bench_st measures it).
//
//   encoder_bench --model DIR [--device cuda] [--dtype float16] [--seq 512]
//                 [--batches 1,32,256] [--baseline 1:S,32:S,256:S]
//                 [--cuda_kernels=false] [--gelu_epilogue=false] [--lt_gemm=false]
//                 [--last_layer_output_rows_only=false] [--residual_epilogue=false]
//                 [--profile_runs N]
//
// Inputs are random token ids (the time does not depend on them); each batch
// runs twice to warm up, then as often as fits in --seconds; Encode returns
// with the results on the host, so each run is timed to its end. Each line
// also gives the matrix-product arithmetic rate this is (TFLOP/s) and the
// rate the target needs, to compare with the GPU's peak: an encoder over
// long inputs is bound by arithmetic, not memory. The rate counts the whole
// forward's work, as sentence-transformers does it, also where the last
// layer computes only the rows the output reads.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#ifdef GANTRY_BENCH_CUDA
#include <cuda_profiler_api.h>
#endif

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "runtime/encoder_runner.h"

ABSL_FLAG(std::string, model, "", "Hugging Face encoder folder (BertModel, XLMRobertaModel, ...)");
ABSL_FLAG(std::string, device, "cuda", "cpu, cuda or cuda:N");
ABSL_FLAG(std::string, dtype, "float16", "float32, bfloat16 or float16");
ABSL_FLAG(int64_t, seq, 512, "tokens per input");
ABSL_FLAG(std::vector<std::string>, batches, std::vector<std::string>({"1", "32", "256"}), "batch sizes");
ABSL_FLAG(std::vector<std::string>, baseline, {}, "batch:sequences_per_second of sentence-transformers");
ABSL_FLAG(double, seconds, 3.0, "time per batch size");
ABSL_FLAG(bool, cuda_kernels, true,
          "CUDA: the embedding and residual add + LayerNorm kernels (EncoderLoadOptions::cuda_kernels)");
ABSL_FLAG(bool, gelu_epilogue, true, "CUDA: GELU in cuBLASLt's epilogue (EncoderLoadOptions::cuda_gelu_epilogue)");
ABSL_FLAG(bool, lt_gemm, true,
          "CUDA: the layers' products through cuBLASLt tuned per shape (EncoderLoadOptions::cuda_lt_gemm)");
ABSL_FLAG(bool, residual_epilogue, true,
          "CUDA, with --lt_gemm: each sublayer's residual add in cuBLASLt's epilogue "
          "(EncoderLoadOptions::cuda_residual_epilogue)");
ABSL_FLAG(int64_t, profile_runs, 0,
          "after each batch's timed runs, run this many more forwards between cudaProfilerStart/Stop "
          "(for ncu --profile-from-start off)");
ABSL_FLAG(bool, last_layer_output_rows_only, true,
          "the last layer only at the rows the output reads (EncoderLoadOptions::last_layer_output_rows_only)");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  gantry::runtime::EncoderLoadOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.device = absl::GetFlag(FLAGS_device);
  options.dtype = absl::GetFlag(FLAGS_dtype);
  options.cuda_kernels = absl::GetFlag(FLAGS_cuda_kernels);
  options.cuda_gelu_epilogue = absl::GetFlag(FLAGS_gelu_epilogue);
  options.cuda_lt_gemm = absl::GetFlag(FLAGS_lt_gemm);
  options.cuda_residual_epilogue = absl::GetFlag(FLAGS_residual_epilogue);
  options.last_layer_output_rows_only = absl::GetFlag(FLAGS_last_layer_output_rows_only);
  const auto loaded_at = std::chrono::steady_clock::now();
  auto runner = gantry::runtime::LoadEncoder(options);
  if (!runner.ok()) {
    std::fprintf(stderr, "error: %s\n", runner.status().ToString().c_str());
    return 1;
  }
  const auto& info = (*runner)->info();
  std::printf("model %s (%s, %lld layers, hidden %lld) on %s in %s (%s), loaded in %.2f s\n",
              options.model_dir.c_str(), info.config.architecture_name.c_str(),
              static_cast<long long>(info.config.num_layers), static_cast<long long>(info.config.hidden_size),
              info.device.c_str(), info.dtype.c_str(), info.execution.c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - loaded_at).count());
  std::map<int64_t, double> baseline;
  for (const std::string& entry : absl::GetFlag(FLAGS_baseline)) {
    std::vector<std::string> parts = absl::StrSplit(entry, ':');
    int64_t batch;
    double value;
    if (parts.size() == 2 && absl::SimpleAtoi(parts[0], &batch) && absl::SimpleAtod(parts[1], &value)) {
      baseline[batch] = value;
    }
  }
  const int64_t seq = std::min<int64_t>(absl::GetFlag(FLAGS_seq), info.max_tokens);
  // Multiply-adds per sequence, x2: per layer and token the q/k/v/o
  // projections (4 h^2), the feed-forward (2 h i) and attention's two
  // products over the sequence (2 seq h).
  const double hidden = static_cast<double>(info.config.hidden_size);
  const double flops_per_sequence =
      2.0 * static_cast<double>(info.config.num_layers) * static_cast<double>(seq) *
      (4 * hidden * hidden + 2 * hidden * static_cast<double>(info.config.intermediate_size) + 2.0 * seq * hidden);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> token(5, static_cast<int32_t>(info.config.vocab_size) - 1);
  for (const std::string& text : absl::GetFlag(FLAGS_batches)) {
    int64_t batch = 0;
    if (!absl::SimpleAtoi(text, &batch) || batch < 1) continue;
    std::vector<std::vector<int32_t>> inputs(batch, std::vector<int32_t>(seq));
    for (auto& input : inputs) {
      for (int32_t& t : input) t = token(rng);
    }
    std::vector<gantry::runtime::EncoderInput> views;
    for (const auto& input : inputs) views.push_back({input, {}});
    for (int warm = 0; warm < 2; ++warm) {
      if (auto out = (*runner)->Encode(views); !out.ok()) {
        std::fprintf(stderr, "batch %lld: %s\n", static_cast<long long>(batch), out.status().ToString().c_str());
        return 1;
      }
    }
    int runs = 0;
    const auto start = std::chrono::steady_clock::now();
    double elapsed = 0;
    while (runs < 3 || elapsed < absl::GetFlag(FLAGS_seconds)) {
      if (auto out = (*runner)->Encode(views); !out.ok()) return 1;
      ++runs;
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    const double per_second = static_cast<double>(batch) * runs / elapsed;
    std::printf("batch %4lld x %lld tokens: %9.1f sequences/s (%.2f ms a batch, %.1f TFLOP/s)",
                static_cast<long long>(batch), static_cast<long long>(seq), per_second, 1000.0 * elapsed / runs,
                per_second * flops_per_sequence / 1e12);
    if (auto it = baseline.find(batch); it != baseline.end()) {
      std::printf("  sentence-transformers %.1f (%.1f TFLOP/s), target %.1f (1.5x, needs %.1f TFLOP/s): %s",
                  it->second, it->second * flops_per_sequence / 1e12, 1.5 * it->second,
                  1.5 * it->second * flops_per_sequence / 1e12, per_second >= 1.5 * it->second ? "met" : "NOT met");
    }
    std::printf("\n");
    if (const int64_t profiled = absl::GetFlag(FLAGS_profile_runs); profiled > 0) {
#ifdef GANTRY_BENCH_CUDA
      cudaProfilerStart();
      for (int64_t i = 0; i < profiled; ++i) {
        if (auto out = (*runner)->Encode(views); !out.ok()) return 1;
      }
      cudaProfilerStop();
#else
      std::fprintf(stderr, "--profile_runs needs a build with CUDA\n");
      return 2;
#endif
    }
  }
  return 0;
}
