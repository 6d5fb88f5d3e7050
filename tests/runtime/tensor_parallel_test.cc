// Tensor parallelism on the CPU: every fixture split over 2 and 4 ranks
// (threads joined by the in-process communicator, the same sharding and
// collectives the GPUs run over NCCL) gives the unsharded model's logits
// within 1e-5 (float32) and its greedy tokens, including GQA models with
// fewer KV heads than ranks (whose KV heads are replicated); and what cannot
// be split is a load error naming why.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model_runner.h"
#include "runtime/safetensors.h"
#include "scheduler/runner_session.h"
#include "tests/runtime/logits_error.h"
#include "tests/runtime/test_files.h"

namespace gantry::runtime {
namespace {

using ::gantry::scheduler::RunnerSession;
using ::gantry::scheduler::SessionItem;
using ::gantry::testing::TestModelDir;
using ::gantry::testing::RelativeError;
using ::testing::HasSubstr;

std::vector<int32_t> ReferencePrompt(const std::string& model) {
  auto file = SafetensorsFile::Open(TestModelDir(model) + "/reference.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  std::vector<int32_t> prompt;
  if (!file.ok()) return prompt;
  const TensorInfo* info = (*file)->Find("prompt_ids");
  EXPECT_NE(info, nullptr);
  if (info == nullptr) return prompt;
  const int64_t* ids = static_cast<const int64_t*>((*file)->Data(*info));
  for (int64_t i = 0; i < info->NumElements(); ++i) prompt.push_back(static_cast<int32_t>(ids[i]));
  return prompt;
}


absl::StatusOr<std::unique_ptr<ModelRunner>> Load(const std::string& model, int tensor_parallel) {
  LoadOptions options;
  options.model_dir = TestModelDir(model);
  options.device = "cpu";
  options.dtype = "float32";
  options.kv_cache_bytes = 4ull << 20;
  options.tensor_parallel = tensor_parallel;
  return LoadModel(options);
}

// What one run records: every step's logits per sequence and the tokens.
struct Trace {
  std::vector<std::vector<float>> logits;
  std::vector<int32_t> tokens;
};

// Two sequences in one batch: A prefills in two chunks (the second crossing
// a block boundary) while B prefills whole, then both decode greedily; the
// logits of every step are kept.
std::vector<Trace> RunTwoSequences(ModelRunner* runner, const std::vector<int32_t>& prompt) {
  RunnerSession session(runner, /*prefix_caching=*/false);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  std::vector<int32_t> b(prompt.rbegin(), prompt.rbegin() + std::min<size_t>(prompt.size(), 9));
  auto a_id = session.Add(prompt, {}, greedy);
  auto b_id = session.Add(b, {}, greedy);
  EXPECT_TRUE(a_id.ok() && b_id.ok());
  std::vector<Trace> traces(2);
  auto step = [&](std::vector<SessionItem> items) {
    for (auto& item : items) item.return_logits = true;
    auto result = session.Step(items);
    ASSERT_TRUE(result.ok()) << result.status();
    for (const auto& seq : result->sequences) {
      Trace& trace = traces[seq.id == *a_id ? 0 : 1];
      trace.logits.push_back(seq.logits);
      if (seq.sampled) trace.tokens.push_back(seq.token);
    }
  };
  const int64_t first = static_cast<int64_t>(prompt.size()) / 2;
  step({{*a_id, first}, {*b_id, static_cast<int64_t>(b.size())}});
  step({{*a_id, static_cast<int64_t>(prompt.size()) - first}, {*b_id, 1}});
  for (int i = 0; i < 8; ++i) step({{*a_id, 1}, {*b_id, 1}});
  return traces;
}

struct Case {
  std::string model;
  int ranks;
};

class TensorParallelTest : public ::testing::TestWithParam<Case> {};

TEST_P(TensorParallelTest, LogitsAndTokensMatchTheUnshardedModel) {
  const Case& c = GetParam();
  const std::vector<int32_t> prompt = ReferencePrompt(c.model);
  ASSERT_GE(prompt.size(), 4u);
  auto whole = Load(c.model, 1);
  ASSERT_TRUE(whole.ok()) << whole.status();
  auto sharded = Load(c.model, c.ranks);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  EXPECT_THAT((*sharded)->info().execution, HasSubstr("tensor-parallel over " + std::to_string(c.ranks)));
  EXPECT_EQ((*sharded)->info().devices, std::vector<std::string>(c.ranks, "cpu"));
  EXPECT_GE((*sharded)->info().num_blocks, (*whole)->info().num_blocks)
      << "each rank's pool holds only its KV heads";

  const std::vector<Trace> expected = RunTwoSequences(whole->get(), prompt);
  const std::vector<Trace> actual = RunTwoSequences(sharded->get(), prompt);
  for (int s = 0; s < 2; ++s) {
    ASSERT_EQ(actual[s].logits.size(), expected[s].logits.size());
    for (size_t step = 0; step < expected[s].logits.size(); ++step) {
      EXPECT_LE(RelativeError(actual[s].logits[step], expected[s].logits[step]), 1e-5)
          << "sequence " << s << ", step " << step;
    }
    EXPECT_EQ(actual[s].tokens, expected[s].tokens) << "sequence " << s;
  }
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (const char* model : {"llama", "llama3", "mistral", "qwen2", "qwen3"}) {
    for (int ranks : {2, 4}) {
      if (std::string(model) == "llama3" && ranks == 4) continue;  // 6 heads: TensorParallelLoadTest
      cases.push_back({model, ranks});
    }
  }
  return cases;
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return info.param.model + "_tp" + std::to_string(info.param.ranks);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TensorParallelTest, ::testing::ValuesIn(Cases()), CaseName);

TEST(TensorParallelLoadTest, HeadsThatDoNotDivideAreALoadError) {
  auto runner = Load("llama3", 4);  // 6 attention heads
  ASSERT_FALSE(runner.ok());
  EXPECT_EQ(runner.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(runner.status().message(), HasSubstr("tensor_parallel 4 does not divide the model's 6 attention heads"));
}

TEST(TensorParallelLoadTest, BadRankCountsAndDeviceListsAreNamed) {
  auto zero = Load("llama", 0);
  ASSERT_FALSE(zero.ok());
  EXPECT_THAT(zero.status().message(), HasSubstr("tensor_parallel must be in [1, 64], got 0"));

  auto three = Load("llama", 3);  // 4 heads
  ASSERT_FALSE(three.ok());
  EXPECT_THAT(three.status().message(), HasSubstr("does not divide the model's 4 attention heads"));

  LoadOptions options;
  options.model_dir = TestModelDir("llama");
  options.dtype = "float32";
  options.devices = {"cpu", "cuda:0"};
  auto mixed = LoadModel(options);
  ASSERT_FALSE(mixed.ok());
  // Without a GPU, cuda:0 itself is refused first.
  EXPECT_THAT(mixed.status().message(),
              HasSubstr(CudaDeviceCount() > 0 ? "all be CPUs or all be GPUs" : "cuda:0"));

  options.devices = {"cpu", "cpu"};
  options.tensor_parallel = 4;
  auto disagree = LoadModel(options);
  ASSERT_FALSE(disagree.ok());
  EXPECT_THAT(disagree.status().message(), HasSubstr("tensor_parallel 4 disagrees with the 2 devices listed"));
}

TEST(TensorParallelLoadTest, MoreGpusThanPresentIsALoadError) {
  // Without a GPU, cuda:0 is refused before the count is looked at
  // (LoadErrorTest.CudaWithoutGpuIsAClearError).
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  LoadOptions options;
  options.model_dir = TestModelDir("llama");
  options.device = "cuda:0";
  options.tensor_parallel = 64;
  auto runner = LoadModel(options);
  ASSERT_FALSE(runner.ok());
  EXPECT_EQ(runner.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(runner.status().message(), HasSubstr("tensor_parallel 64 from cuda:0 needs GPUs up to cuda:63"));
}

// A one-device list runs the collectives' path (a group of one): the same
// tokens and logits as the plain path. On the GPU machine this is NCCL with
// N = 1; here the in-process group.
TEST(TensorParallelLoadTest, GroupOfOneMatchesThePlainPath) {
  const std::vector<int32_t> prompt = ReferencePrompt("qwen3");
  auto plain = Load("qwen3", 1);
  ASSERT_TRUE(plain.ok()) << plain.status();
  LoadOptions options;
  options.model_dir = TestModelDir("qwen3");
  options.dtype = "float32";
  options.kv_cache_bytes = 4ull << 20;
  options.devices = {CudaDeviceCount() > 0 ? "cuda:0" : "cpu"};
  if (options.devices[0] != "cpu") options.dtype = "bfloat16";
  // The plain path's fused decode GEMV adds into the residual stream before
  // any sum over ranks, so a group never takes it: compare like with like.
  options.cuda_decode_gemv = false;
  auto grouped = LoadModel(options);
  ASSERT_TRUE(grouped.ok()) << grouped.status();
  if (options.devices[0] != "cpu") {
    // Against the same device's plain path.
    LoadOptions plain_options = options;
    plain_options.devices.clear();
    plain_options.device = "cuda:0";
    plain = LoadModel(plain_options);
    ASSERT_TRUE(plain.ok()) << plain.status();
  }
  const std::vector<Trace> expected = RunTwoSequences(plain->get(), prompt);
  const std::vector<Trace> actual = RunTwoSequences(grouped->get(), prompt);
  for (int s = 0; s < 2; ++s) {
    EXPECT_EQ(actual[s].tokens, expected[s].tokens) << "sequence " << s;
    for (size_t step = 0; step < expected[s].logits.size(); ++step) {
      EXPECT_LE(RelativeError(actual[s].logits[step], expected[s].logits[step]), 1e-5) << "step " << step;
    }
  }
}

}  // namespace
}  // namespace gantry::runtime
