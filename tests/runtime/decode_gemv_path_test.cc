// The fused batch-1 decode path (LoadOptions::cuda_decode_gemv: DecodeGemv
// with the norms, residual adds and SiLU fused) against the cuBLAS path on
// the GPU, for every fixture in bf16 and fp16, eager and through the batch-1
// CUDA graph: the same greedy tokens, logits within the 16-bit rounding of
// differently ordered sums. Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/model_runner.h"
#include "scheduler/runner_session.h"
#include "tests/runtime/logits_error.h"
#include "tests/runtime/test_files.h"

namespace gantry::runtime {
namespace {

using ::gantry::scheduler::RunnerSession;
using ::gantry::scheduler::SessionItem;
using ::gantry::testing::TestModelDir;
using ::gantry::testing::RelativeError;

struct Generation {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
};

Generation Generate(const std::string& model, const std::string& dtype, bool gemv, int64_t graphs) {
  LoadOptions options;
  options.model_dir = TestModelDir(model);
  options.device = "cuda:0";
  options.dtype = dtype;
  options.kv_cache_bytes = 8ull << 20;
  options.cuda_graph_max_batch = graphs;
  options.cuda_decode_gemv = gemv;
  auto runner = LoadModel(options);
  EXPECT_TRUE(runner.ok()) << runner.status();
  Generation run;
  if (!runner.ok()) return run;
  EXPECT_EQ((*runner)->info().execution.find("fused GEMV") != std::string::npos, gemv) << (*runner)->info().execution;
  RunnerSession session(runner->get(), /*prefix_caching=*/false);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 20; ++i) prompt.push_back(3 + (29 * i) % 450);
  auto id = session.Add(prompt, {}, greedy);
  EXPECT_TRUE(id.ok());
  int64_t tokens = static_cast<int64_t>(prompt.size());
  for (int step = 0; step < 12; ++step) {
    SessionItem item{*id, tokens, true};
    auto result = session.Step({item});
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) break;
    run.tokens.push_back(result->sequences.at(0).token);
    run.logits.push_back(result->sequences.at(0).logits);
    tokens = 1;
  }
  return run;
}


TEST(DecodeGemvPathTest, SameTokensAsCublasForEveryFixture) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  for (const char* model : {"llama", "llama3", "mistral", "qwen2", "qwen3"}) {
    for (const char* dtype : {"bfloat16", "float16"}) {
      for (int64_t graphs : {0, 8}) {
        const std::string what = std::string(model) + " " + dtype + (graphs ? " graphs" : " eager");
        const Generation cublas = Generate(model, dtype, false, graphs);
        const Generation fused = Generate(model, dtype, true, graphs);
        ASSERT_EQ(fused.tokens.size(), cublas.tokens.size()) << what;
        EXPECT_EQ(std::vector<int32_t>(fused.tokens.begin(), fused.tokens.begin() + 8),
                  std::vector<int32_t>(cublas.tokens.begin(), cublas.tokens.begin() + 8))
            << what;
        // Step 0 is the prefill (the same path in both); decode steps differ
        // only in summation order and where the 16-bit roundings fall.
        for (size_t s = 1; s < fused.logits.size(); ++s) {
          if (fused.tokens[s - 1] != cublas.tokens[s - 1]) break;  // histories diverged
          EXPECT_LE(RelativeError(fused.logits[s], cublas.logits[s]), 2e-2) << what << " step " << s;
        }
      }
    }
  }
}

}  // namespace
}  // namespace gantry::runtime
