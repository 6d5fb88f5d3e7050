// The fused small-batch decode path (LoadOptions::cuda_decode_gemv: DecodeGemv
// with the norms, residual adds and SiLU fused) against the cuBLAS path on
// the GPU, for every fixture in bf16 and fp16, eager and through the batch-1
// CUDA graph: the same greedy tokens, logits within the 16-bit rounding of
// differently ordered sums; its batch invariance; and the rotary embedding
// with the cache write fused into qkv's epilogue (cuda_decode_gemv_rope)
// giving the bits of the separate kernel, as do o's L2 prefetch
// (cuda_decode_gemv_l2_prefetch_units) and decode attention's loads before
// its dependency wait (cuda_decode_attention_early_loads). Skips without a
// GPU.
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

// A fixture on cuda:0 in `dtype`, with decode graphs up to `graphs` (0: eager).
LoadOptions GpuOptions(const std::string& model, const std::string& dtype, bool gemv, int64_t graphs,
                       uint64_t kv_cache_bytes, bool gemv_rope = false, int l2_prefetch_units = 0,
                       bool attention_early_loads = true) {
  LoadOptions options;
  options.model_dir = TestModelDir(model);
  options.device = "cuda:0";
  options.dtype = dtype;
  options.kv_cache_bytes = kv_cache_bytes;
  options.cuda_graph_max_batch = graphs;
  options.cuda_decode_gemv = gemv;
  options.cuda_decode_gemv_rope = gemv_rope;
  options.cuda_decode_gemv_l2_prefetch_units = l2_prefetch_units;
  options.cuda_decode_attention_early_loads = attention_early_loads;
  return options;
}

Generation Generate(const std::string& model, const std::string& dtype, bool gemv, int64_t graphs,
                    bool gemv_rope = false, int l2_prefetch_units = 0, bool attention_early_loads = true) {
  auto runner = LoadModel(
      GpuOptions(model, dtype, gemv, graphs, 8ull << 20, gemv_rope, l2_prefetch_units, attention_early_loads));
  EXPECT_TRUE(runner.ok()) << runner.status();
  Generation run;
  if (!runner.ok()) return run;
  EXPECT_EQ((*runner)->info().execution.find("fused GEMV") != std::string::npos, gemv) << (*runner)->info().execution;
  // Qwen3's per-head q/k norm keeps the rotary kernel apart.
  EXPECT_EQ((*runner)->info().execution.find("rope fused") != std::string::npos, gemv && gemv_rope && model != "qwen3")
      << (*runner)->info().execution;
  EXPECT_EQ((*runner)->info().execution.find("prefetched into L2") != std::string::npos, gemv && l2_prefetch_units > 0)
      << (*runner)->info().execution;
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

// The rotary embedding and cache write in qkv's epilogue are the separate
// kernel's arithmetic: every decode step's logits bit for bit the same, for
// every fixture, both 16-bit dtypes, eager and through the graphs.
TEST(DecodeGemvPathTest, RopeInTheQkvEpilogueGivesTheSameBits) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  for (const char* model : {"llama", "llama3", "mistral", "qwen2", "qwen3"}) {
    for (const char* dtype : {"bfloat16", "float16"}) {
      for (int64_t graphs : {0, 8}) {
        const std::string what = std::string(model) + " " + dtype + (graphs ? " graphs" : " eager");
        const Generation apart = Generate(model, dtype, true, graphs, /*gemv_rope=*/false);
        const Generation fused = Generate(model, dtype, true, graphs, /*gemv_rope=*/true);
        ASSERT_EQ(apart.tokens.size(), 12u) << what;
        EXPECT_EQ(fused.tokens, apart.tokens) << what;
        EXPECT_TRUE(fused.logits == apart.logits) << what << ": logits differ";
      }
    }
  }
}

// o's weights asked into L2 during attention (cuda_decode_gemv_l2_prefetch_units)
// are a hint: the same logits bit for bit, eager and through the graphs.
TEST(DecodeGemvPathTest, L2PrefetchOfOGivesTheSameBits) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  for (const char* model : {"llama", "qwen3"}) {
    for (int64_t graphs : {0, 8}) {
      const std::string what = std::string(model) + (graphs ? " graphs" : " eager");
      const Generation plain = Generate(model, "bfloat16", true, graphs);
      const Generation prefetched = Generate(model, "bfloat16", true, graphs, /*gemv_rope=*/false, /*units=*/2);
      ASSERT_EQ(plain.tokens.size(), 12u) << what;
      EXPECT_EQ(prefetched.tokens, plain.tokens) << what;
      EXPECT_TRUE(prefetched.logits == plain.logits) << what << ": logits differ";
    }
  }
}

// Decode attention reading lengths, tables and earlier keys before its
// dependency wait gives the bits of reading them after it, behind the fused
// qkv epilogue (llama), the rotary kernel (qwen3: q/k norm) and cuBLAS's qkv
// product, eager and replayed from graphs.
TEST(DecodeGemvPathTest, AttentionEarlyLoadsGiveTheSameBits) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  for (const char* model : {"llama", "qwen3"}) {
    for (bool gemv : {true, false}) {
      for (int64_t graphs : {0, 8}) {
        const std::string what = std::string(model) + (gemv ? " gemv" : " cublas") + (graphs ? " graphs" : " eager");
        const Generation after = Generate(model, "bfloat16", gemv, graphs, /*gemv_rope=*/true, /*units=*/0,
                                          /*attention_early_loads=*/false);
        const Generation early = Generate(model, "bfloat16", gemv, graphs, /*gemv_rope=*/true, /*units=*/0,
                                          /*attention_early_loads=*/true);
        ASSERT_EQ(after.tokens.size(), 12u) << what;
        EXPECT_EQ(early.tokens, after.tokens) << what;
        EXPECT_TRUE(early.logits == after.logits) << what << ": logits differ";
      }
    }
  }
}

// With DecodeGemv, a decode step of up to 4 sequences computes each row as
// it would alone: a sequence's logits are bit for bit the same decoded alone
// and beside 1, 2 or 3 others, eager and through the padded graphs, with
// contexts long enough that attention splits them (the split count follows
// batch 1's, not the batch's). This is what lets a seeded sequence sample the
// same tokens whatever the batch, up to 4.
TEST(DecodeGemvPathTest, DecodeBatchesUpToFourAreBitwiseInvariant) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  for (const char* model : {"llama", "llama3", "mistral", "qwen2", "qwen3"}) {
    for (const char* dtype : {"bfloat16", "float16"}) {
      for (int64_t graphs : {0, 8}) {
        const std::string what = std::string(model) + " " + dtype + (graphs ? " graphs" : " eager");
        auto runner = LoadModel(GpuOptions(model, dtype, /*gemv=*/true, graphs, 16ull << 20));
        ASSERT_TRUE(runner.ok()) << what << ": " << runner.status();
        ASSERT_NE((*runner)->info().execution.find("fused GEMV"), std::string::npos) << (*runner)->info().execution;
        const int64_t context = std::min<int64_t>(300, (*runner)->info().max_context - 16);
        auto prompt = [&](int s) {
          std::vector<int32_t> tokens;
          for (int64_t i = 0; i < context - 5 * s; ++i) tokens.push_back(3 + static_cast<int32_t>((29 * i + 7 * s) % 450));
          return tokens;
        };
        SamplingParams greedy;
        greedy.temperature = 0.0f;
        // Sequence 0's decode logits beside `others` more sequences. Every
        // prompt is prefilled alone, so only the decode steps are shared.
        auto decode = [&](int others) {
          RunnerSession session(runner->get(), /*prefix_caching=*/false);
          std::vector<SessionItem> items;
          for (int s = 0; s <= others; ++s) {
            const std::vector<int32_t> tokens = prompt(s);
            auto id = session.Add(tokens, {}, greedy);
            EXPECT_TRUE(id.ok()) << id.status();
            EXPECT_TRUE(session.Step({{*id, static_cast<int64_t>(tokens.size())}}).ok());
            items.push_back({*id, 1, /*return_logits=*/s == 0});
          }
          std::vector<std::vector<float>> logits;
          for (int step = 0; step < 6; ++step) {
            auto result = session.Step(items);
            EXPECT_TRUE(result.ok()) << result.status();
            if (!result.ok()) break;
            logits.push_back(result->sequences.at(0).logits);
          }
          return logits;
        };
        const std::vector<std::vector<float>> alone = decode(0);
        ASSERT_EQ(alone.size(), 6u) << what;
        for (int others : {1, 2, 3}) {
          EXPECT_TRUE(decode(others) == alone) << what << ": sequence 0 beside " << others << " others";
        }
      }
    }
  }
}

}  // namespace
}  // namespace gantry::runtime
