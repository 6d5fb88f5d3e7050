// Encoder models against sentence-transformers and transformers: the tiny
// random fixtures tools/make_encoder_models.py made (tests/models/*_embed,
// *_rerank), each with the token ids those libraries fed the model and their
// outputs. Checked: our tokenizer gives the same ids and token types (texts,
// pairs, the truncated long text), the folder's pooling set-up is read, and
// the runner's embeddings and logits match in float32 on the CPU (1e-4) and
// in bfloat16 on CUDA (2e-2; rerank on the relevance scores), with the same
// rerank order.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/encoder_runner.h"
#include "runtime/model_runner.h"
#include "runtime/model_task.h"
#include "runtime/safetensors.h"
#include "scheduler/runner_session.h"
#include "tests/runtime/logits_error.h"
#include "tests/runtime/reference_file.h"
#include "tests/runtime/test_files.h"
#include "text/tokenizer.h"

namespace gantry::runtime {
namespace {

using ::gantry::testing::ReadRows;
using ::gantry::testing::ReadTensor;
using ::gantry::testing::RelativeError;
using ::gantry::testing::TestModelDir;

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str());
}

// Inputs concatenated with offsets, as the fixture stores them.
std::vector<std::vector<int32_t>> Split(const std::vector<int64_t>& flat, const std::vector<int64_t>& offsets) {
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i + 1 < offsets.size(); ++i) {
    out.emplace_back(flat.begin() + offsets[i], flat.begin() + offsets[i + 1]);
  }
  return out;
}

struct Fixture {
  std::string dir;
  nlohmann::json meta;
  std::unique_ptr<SafetensorsFile> reference;
  std::unique_ptr<text::Tokenizer> tokenizer;
  std::vector<std::vector<int32_t>> ids, types;

  explicit Fixture(const std::string& name) : dir(TestModelDir(name)) {
    meta = ReadJson(dir + "/reference.json");
    auto file = SafetensorsFile::Open(dir + "/reference.safetensors");
    EXPECT_TRUE(file.ok()) << file.status();
    if (file.ok()) reference = *std::move(file);
    auto loaded = text::Tokenizer::Load(dir);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    if (loaded.ok()) tokenizer = *std::move(loaded);
    const auto offsets = ReadTensor<int64_t>(*reference, "offsets");
    ids = Split(ReadTensor<int64_t>(*reference, "input_ids"), offsets);
    types = Split(ReadTensor<int64_t>(*reference, "token_type_ids"), offsets);
  }

  // cuda_fused = false: LibTorch's operators over every row of every layer.
  std::unique_ptr<EncoderRunner> Load(const std::string& device, const std::string& dtype, Pooling pooling,
                                      bool normalize, bool cuda_fused = true, bool lt_gemm = false,
                                      bool residual_epilogue = true) const {
    EncoderLoadOptions options;
    options.cuda_kernels = cuda_fused;
    options.cuda_gelu_epilogue = cuda_fused;
    options.last_layer_output_rows_only = cuda_fused;
    options.cuda_lt_gemm = lt_gemm;
    options.cuda_residual_epilogue = residual_epilogue;
    options.model_dir = dir;
    options.device = device;
    options.dtype = dtype;
    options.pooling = pooling;
    options.normalize = normalize;
    auto runner = LoadEncoder(options);
    EXPECT_TRUE(runner.ok()) << runner.status();
    return runner.ok() ? *std::move(runner) : nullptr;
  }

  std::vector<std::vector<float>> Encode(EncoderRunner& runner, const std::vector<std::vector<int32_t>>& inputs,
                                         bool with_types) const {
    std::vector<EncoderInput> batch;
    for (size_t i = 0; i < inputs.size(); ++i) {
      batch.push_back({inputs[i], with_types ? absl::Span<const int32_t>(types[i]) : absl::Span<const int32_t>()});
    }
    auto out = runner.Encode(batch);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *std::move(out) : std::vector<std::vector<float>>();
  }
};

std::vector<float> Flatten(const std::vector<std::vector<float>>& rows) {
  std::vector<float> flat;
  for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
  return flat;
}

bool HaveCuda() { return CudaDeviceCount() > 0; }

class EmbedFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EmbedFixtureTest, TokenizerMatchesSentenceTransformers) {
  Fixture f(GetParam());
  ASSERT_TRUE(f.tokenizer);
  const auto& texts = f.meta["texts"];
  ASSERT_EQ(texts.size(), f.ids.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    auto encoding = f.tokenizer->EncodeWithTypes(texts[i].get<std::string>());
    ASSERT_TRUE(encoding.ok()) << encoding.status();
    EXPECT_EQ(encoding->ids, f.ids[i]) << "text " << i << ": " << texts[i];
    EXPECT_EQ(encoding->type_ids, f.types[i]) << "text " << i;
  }
  const int max_length = f.meta["max_seq_length"].get<int>();
  auto truncated = f.tokenizer->EncodeWithTypes(f.meta["long_text"].get<std::string>(), true, max_length);
  ASSERT_TRUE(truncated.ok()) << truncated.status();
  const auto want = ReadTensor<int64_t>(*f.reference, "long_input_ids");
  EXPECT_EQ(truncated->ids, std::vector<int32_t>(want.begin(), want.end()));
}

TEST_P(EmbedFixtureTest, FolderSetUpIsRead) {
  Fixture f(GetParam());
  auto task = DetectModelTask(f.dir);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->task, ModelTask::kEmbed);
  EXPECT_EQ(task->embedding.source, "sentence-transformers");
  EXPECT_EQ(PoolingName(task->embedding.pooling),
            f.meta["pooling"] == "cls" ? "cls" : f.meta["pooling"] == "mean" ? "mean" : "last_token");
  EXPECT_EQ(task->embedding.normalize, f.meta["normalize"].get<bool>());
  EXPECT_EQ(task->embedding.max_seq_length, f.meta["max_seq_length"].get<int64_t>());
}

TEST_P(EmbedFixtureTest, EmbeddingsMatchInFloat32OnTheCpu) {
  Fixture f(GetParam());
  auto task = DetectModelTask(f.dir);
  ASSERT_TRUE(task.ok()) << task.status();
  auto runner = f.Load("cpu", "float32", task->embedding.pooling, task->embedding.normalize);
  ASSERT_TRUE(runner);
  const auto want = ReadRows(*f.reference, "embeddings");
  // All texts in one padded batch, then each alone: the same vectors.
  const auto batched = f.Encode(*runner, f.ids, /*with_types=*/true);
  ASSERT_EQ(batched.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_LT(RelativeError(batched[i], want[i]), 1e-4) << "text " << i << " in the batch";
    const auto alone = f.Encode(*runner, {f.ids[i]}, /*with_types=*/false);
    EXPECT_LT(RelativeError(alone[0], want[i]), 1e-4) << "text " << i << " alone";
  }
  const auto long_ids = ReadTensor<int64_t>(*f.reference, "long_input_ids");
  const auto long_out = f.Encode(*runner, {std::vector<int32_t>(long_ids.begin(), long_ids.end())}, false);
  EXPECT_LT(RelativeError(long_out[0], ReadTensor<float>(*f.reference, "long_embedding")), 1e-4);
}

TEST_P(EmbedFixtureTest, EmbeddingsMatchInBfloat16OnCuda) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  Fixture f(GetParam());
  auto task = DetectModelTask(f.dir);
  ASSERT_TRUE(task.ok());
  auto runner = f.Load("cuda", "bfloat16", task->embedding.pooling, task->embedding.normalize);
  ASSERT_TRUE(runner);
  const auto want = ReadRows(*f.reference, "embeddings_bf16");
  const auto got = f.Encode(*runner, f.ids, /*with_types=*/true);
  EXPECT_LT(RelativeError(Flatten(got), Flatten(want)), 2e-2);
}

// The fused CUDA paths (AddLayerNorm; in 16-bit, the GELU epilogue) against
// LibTorch's operators on the same device: float32 to its rounding, where
// only the fused kernel differs; bfloat16 within its rounding.
TEST_P(EmbedFixtureTest, FusedCudaPathsMatchLibTorchOperators) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  Fixture f(GetParam());
  auto task = DetectModelTask(f.dir);
  ASSERT_TRUE(task.ok());
  for (const char* dtype : {"float32", "bfloat16"}) {
    auto fused = f.Load("cuda", dtype, task->embedding.pooling, task->embedding.normalize);
    auto plain = f.Load("cuda", dtype, task->embedding.pooling, task->embedding.normalize, /*cuda_fused=*/false);
    ASSERT_TRUE(fused && plain);
    EXPECT_NE(fused->info().execution.find("LayerNorm in one kernel"), std::string::npos) << fused->info().execution;
    EXPECT_EQ(plain->info().execution, "torch, padded batches grouped by length");
    EXPECT_EQ(fused->info().execution.find("epilogue") != std::string::npos, std::string(dtype) == "bfloat16")
        << fused->info().execution;
    const auto a = Flatten(f.Encode(*fused, f.ids, /*with_types=*/true));
    const auto b = Flatten(f.Encode(*plain, f.ids, /*with_types=*/true));
    EXPECT_LT(RelativeError(a, b), std::string(dtype) == "float32" ? 1e-5 : 1e-2) << dtype;
  }
}

// The layers' products through LtGemm (cuBLASLt, tuned per shape; the
// residual adds in its epilogue): within bfloat16's rounding of at::linear's
// and of LtGemm's without the residual epilogue, and as close to
// sentence-transformers as the default path. Every input, then each alone
// (other m's; an m of a bucket tuned before takes its algorithm).
TEST_P(EmbedFixtureTest, LtGemmProductsMatchInBfloat16OnCuda) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  Fixture f(GetParam());
  auto task = DetectModelTask(f.dir);
  ASSERT_TRUE(task.ok());
  auto tuned = f.Load("cuda", "bfloat16", task->embedding.pooling, task->embedding.normalize, /*cuda_fused=*/true,
                      /*lt_gemm=*/true);
  auto separate_add = f.Load("cuda", "bfloat16", task->embedding.pooling, task->embedding.normalize,
                             /*cuda_fused=*/true, /*lt_gemm=*/true, /*residual_epilogue=*/false);
  auto plain = f.Load("cuda", "bfloat16", task->embedding.pooling, task->embedding.normalize);
  ASSERT_TRUE(tuned && separate_add && plain);
  if (tuned->info().execution.find("cuBLASLt tuned") == std::string::npos) {
    GTEST_SKIP() << "built without cuBLASLt: " << tuned->info().execution;
  }
  EXPECT_NE(tuned->info().execution.find("residual adds in cuBLASLt's epilogue"), std::string::npos)
      << tuned->info().execution;
  EXPECT_EQ(separate_add->info().execution.find("residual adds"), std::string::npos)
      << separate_add->info().execution;
  const auto want = ReadRows(*f.reference, "embeddings_bf16");
  const auto got = f.Encode(*tuned, f.ids, /*with_types=*/true);
  EXPECT_LT(RelativeError(Flatten(got), Flatten(want)), 2e-2);
  EXPECT_LT(RelativeError(Flatten(got), Flatten(f.Encode(*plain, f.ids, /*with_types=*/true))), 1e-2);
  EXPECT_LT(RelativeError(Flatten(got), Flatten(f.Encode(*separate_add, f.ids, /*with_types=*/true))), 1e-2);
  for (size_t i = 0; i < f.ids.size(); ++i) {
    const auto alone = f.Encode(*tuned, {f.ids[i]}, /*with_types=*/false);
    ASSERT_EQ(alone.size(), 1u);
    EXPECT_LT(RelativeError(alone[0], want[i]), 2e-2) << "input " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EmbedFixtureTest, ::testing::Values("bert_embed", "xlmr_embed"));

// A bare decoder (Qwen3-Embedding's Qwen3Model) embeds through the generation
// runner: the last position's final-normed hidden state, normalized here as
// the engine's caller does. Every text in one step, then each alone.
void CheckDecoderEmbeddings(const std::string& device, const std::string& dtype, const char* key, double tolerance) {
  Fixture f("qwen3_embed");
  auto task = DetectModelTask(f.dir);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_TRUE(task->decoder_embed);
  EXPECT_FALSE(task->encoder());
  LoadOptions options;
  options.model_dir = f.dir;
  options.device = device;
  options.dtype = dtype;
  options.kv_cache_bytes = 8ull << 20;
  auto runner = LoadModel(options);
  ASSERT_TRUE(runner.ok()) << runner.status();
  EXPECT_FALSE((*runner)->info().config.has_lm_head);
  scheduler::RunnerSession session(runner->get(), /*prefix_caching=*/false);
  auto embed = [&](const std::vector<size_t>& texts) {
    std::vector<scheduler::SessionItem> items;
    for (size_t i : texts) {
      auto id = session.Add(f.ids[i], {}, SamplingParams{});
      EXPECT_TRUE(id.ok()) << id.status();
      items.push_back({*id, static_cast<int64_t>(f.ids[i].size()), /*return_logits=*/true});
    }
    auto result = session.Step(items);
    EXPECT_TRUE(result.ok()) << result.status();
    std::vector<std::vector<float>> out;
    for (size_t k = 0; result.ok() && k < items.size(); ++k) {
      std::vector<float> v = result->sequences[k].logits;
      EXPECT_FALSE(result->sequences[k].sampled);
      double norm = 0;
      for (float x : v) norm += static_cast<double>(x) * x;
      for (float& x : v) x = static_cast<float>(x / std::sqrt(norm));
      out.push_back(std::move(v));
      EXPECT_TRUE(session.Remove(items[k].id).ok());
    }
    return out;
  };
  const auto want = ReadRows(*f.reference, key);
  std::vector<size_t> all(f.ids.size());
  std::iota(all.begin(), all.end(), 0);
  const auto batched = embed(all);
  ASSERT_EQ(batched.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_LT(RelativeError(batched[i], want[i]), tolerance) << "text " << i << " in the batch";
    EXPECT_LT(RelativeError(embed({i})[0], want[i]), tolerance) << "text " << i << " alone";
  }
}

TEST(DecoderEmbedTest, Qwen3EmbeddingMatchesInFloat32OnTheCpu) {
  CheckDecoderEmbeddings("cpu", "float32", "embeddings", 1e-4);
}

TEST(DecoderEmbedTest, Qwen3EmbeddingMatchesInBfloat16OnCuda) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  CheckDecoderEmbeddings("cuda", "bfloat16", "embeddings_bf16", 2e-2);
}

class RerankFixtureTest : public ::testing::TestWithParam<std::string> {};

// Indices by descending score.
std::vector<size_t> Order(const std::vector<float>& scores) {
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  return order;
}

// Sigmoid of each logit: the relevance score a client reads.
std::vector<float> RelevanceScores(std::vector<float> logits) {
  for (float& l : logits) l = 1.0f / (1.0f + std::exp(-l));
  return logits;
}

TEST_P(RerankFixtureTest, PairsTokenizeAsTransformers) {
  Fixture f(GetParam());
  ASSERT_TRUE(f.tokenizer);
  const std::string query = f.meta["query"];
  const auto& documents = f.meta["documents"];
  ASSERT_EQ(documents.size(), f.ids.size());
  for (size_t i = 0; i < documents.size(); ++i) {
    auto encoding = f.tokenizer->EncodePair(query, documents[i].get<std::string>());
    ASSERT_TRUE(encoding.ok()) << encoding.status();
    EXPECT_EQ(encoding->ids, f.ids[i]) << "document " << i;
    EXPECT_EQ(encoding->type_ids, f.types[i]) << "document " << i;
  }
  auto task = DetectModelTask(f.dir);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->task, ModelTask::kRerank);
}

TEST_P(RerankFixtureTest, LogitsAndOrderMatchInFloat32OnTheCpu) {
  Fixture f(GetParam());
  auto runner = f.Load("cpu", "float32", Pooling::kCls, false);
  ASSERT_TRUE(runner);
  EXPECT_EQ(runner->info().output_size, 1);
  const auto want = ReadTensor<float>(*f.reference, "logits");
  // Token types only where the model has more than one (BERT), as the server sends them.
  const auto got = Flatten(f.Encode(*runner, f.ids, runner->info().config.type_vocab_size > 1));
  EXPECT_LT(RelativeError(got, want), 1e-4);
  EXPECT_EQ(Order(got), Order(want));
}

TEST_P(RerankFixtureTest, OrderHoldsInBfloat16OnCuda) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  Fixture f(GetParam());
  auto runner = f.Load("cuda", "bfloat16", Pooling::kCls, false);
  ASSERT_TRUE(runner);
  // Relevance scores (the sigmoid of the logits) within 2e-2 of
  // transformers' in bfloat16: the logits of a random head are small, so
  // their own relative error says more about bfloat16 than about the model.
  const auto want = ReadTensor<float>(*f.reference, "logits_bf16");
  const auto got = Flatten(f.Encode(*runner, f.ids, runner->info().config.type_vocab_size > 1));
  EXPECT_LT(RelativeError(RelevanceScores(got), RelevanceScores(want)), 2e-2);
  EXPECT_EQ(Order(got), Order(ReadTensor<float>(*f.reference, "logits")));
}

// The cross-encoders' products through LtGemm (the default on CUDA for
// 16-bit encoders): relevance scores within bfloat16's rounding of
// transformers' and of at::linear's, the same order, all pairs in one batch
// and each pair alone (other m's; an m of a bucket tuned before takes its
// algorithm).
TEST_P(RerankFixtureTest, LtGemmProductsHoldTheOrderInBfloat16OnCuda) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  Fixture f(GetParam());
  auto tuned = f.Load("cuda", "bfloat16", Pooling::kCls, false, /*cuda_fused=*/true, /*lt_gemm=*/true);
  auto plain = f.Load("cuda", "bfloat16", Pooling::kCls, false);
  ASSERT_TRUE(tuned && plain);
  if (tuned->info().execution.find("cuBLASLt tuned") == std::string::npos) {
    GTEST_SKIP() << "built without cuBLASLt: " << tuned->info().execution;
  }
  const bool with_types = tuned->info().config.type_vocab_size > 1;
  const auto want = RelevanceScores(ReadTensor<float>(*f.reference, "logits_bf16"));
  const auto got = Flatten(f.Encode(*tuned, f.ids, with_types));
  const auto plain_scores = RelevanceScores(Flatten(f.Encode(*plain, f.ids, with_types)));
  const double tuned_error = RelativeError(RelevanceScores(got), want);
  const double plain_error = RelativeError(plain_scores, want);
  std::printf("[ BF16 ] %s: relevance scores' relative error to transformers' bf16: LtGemm %.2e, at::linear %.2e\n",
              GetParam().c_str(), tuned_error, plain_error);
  EXPECT_LT(tuned_error, 2e-2);
  // Each path rounds at its own points (LtGemm adds the residual before its
  // one rounding, at::linear rounds the product first): within bfloat16's
  // rounding of each other, the bound each has to transformers'.
  EXPECT_LT(RelativeError(RelevanceScores(got), plain_scores), 2e-2);
  EXPECT_EQ(Order(got), Order(ReadTensor<float>(*f.reference, "logits")));
  for (size_t i = 0; i < f.ids.size(); ++i) {
    const std::vector<EncoderInput> pair = {
        {f.ids[i], with_types ? absl::Span<const int32_t>(f.types[i]) : absl::Span<const int32_t>()}};
    auto alone = tuned->Encode(pair);
    ASSERT_TRUE(alone.ok()) << alone.status();
    ASSERT_EQ(alone->size(), 1u);
    ASSERT_EQ(alone->at(0).size(), 1u);
    EXPECT_NEAR(RelevanceScores(alone->at(0))[0], want[i], 2e-2) << "pair " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RerankFixtureTest, ::testing::Values("bert_rerank", "xlmr_rerank"));

}  // namespace
}  // namespace gantry::runtime
