// The host tier's runtime half: weights copied to host memory by one load
// (ModelRunner::CopyWeightsToHost) load again from there, giving logits
// bit-identical to a load from the files, for every fixture (and a
// tensor-parallel one); copies that do not fit the load (another dtype) are
// ignored and the files are read. With the host tier's memory reserved
// (ReserveHostTierMemory), the copies live in that arena, on the CPU and on a
// GPU alike, and give their blocks back when dropped.
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/host_tier_memory.h"
#include "runtime/model_runner.h"
#include "scheduler/runner_session.h"
#include "tests/runtime/test_files.h"

namespace gantry::runtime {
namespace {

using ::gantry::scheduler::RunnerSession;
using ::gantry::scheduler::SessionItem;
using ::gantry::testing::TestModelDir;

LoadOptions Options(const std::string& model, const std::string& dtype, int tensor_parallel = 1,
                    const std::string& device = "cpu") {
  LoadOptions options;
  options.model_dir = TestModelDir(model);
  options.device = device;
  options.dtype = dtype;
  options.kv_cache_bytes = 4ull << 20;
  options.tensor_parallel = tensor_parallel;
  return options;
}

// The logits of a 12-token prompt and 3 greedy decode steps.
std::vector<std::vector<float>> Logits(ModelRunner* runner) {
  RunnerSession session(runner, /*prefix_caching=*/false);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 12; ++i) prompt.push_back(5 + 37 * i % 400);
  auto id = session.Add(prompt, {}, greedy);
  EXPECT_TRUE(id.ok());
  std::vector<std::vector<float>> logits;
  int64_t tokens = static_cast<int64_t>(prompt.size());
  for (int step = 0; step < 4; ++step) {
    SessionItem item{*id, tokens, true};
    auto result = session.Step({item});
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) break;
    logits.push_back(result->sequences.at(0).logits);
    tokens = 1;
  }
  return logits;
}

void ExpectSameLogits(const std::vector<std::vector<float>>& expected, const std::vector<std::vector<float>>& actual) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t s = 0; s < expected.size(); ++s) {
    ASSERT_EQ(actual[s].size(), expected[s].size());
    EXPECT_EQ(std::memcmp(actual[s].data(), expected[s].data(), expected[s].size() * sizeof(float)), 0)
        << "step " << s;
  }
}

// A load with `host` as its weights reads them from there and gives `expected`.
void ExpectLoadFromHostGives(LoadOptions options, std::shared_ptr<const HostWeights> host,
                             const std::vector<std::vector<float>>& expected) {
  options.host_weights = std::move(host);
  auto from_host = LoadModel(options);
  ASSERT_TRUE(from_host.ok()) << from_host.status();
  EXPECT_EQ((*from_host)->info().weights_source, "host");
  ExpectSameLogits(expected, Logits(from_host->get()));
}

struct Case {
  std::string model;
  int tensor_parallel;
};

class HostWeightsTest : public ::testing::TestWithParam<Case> {};

TEST_P(HostWeightsTest, LoadFromHostCopyIsBitIdentical) {
  const LoadOptions options = Options(GetParam().model, "float32", GetParam().tensor_parallel);
  auto from_disk = LoadModel(options);
  ASSERT_TRUE(from_disk.ok()) << from_disk.status();
  EXPECT_EQ((*from_disk)->info().weights_source, "disk");
  auto host = (*from_disk)->CopyWeightsToHost();
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_EQ((*host)->bytes(), (*from_disk)->info().weight_bytes);
  const auto expected = Logits(from_disk->get());
  from_disk->reset();  // the host copy outlives the model it came from
  ExpectLoadFromHostGives(options, *host, expected);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HostWeightsTest,
                         ::testing::Values(Case{"llama", 1}, Case{"llama3", 1}, Case{"mistral", 1},
                                           Case{"qwen2", 1}, Case{"qwen3", 1}, Case{"llama", 2}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.model + "_tp" + std::to_string(info.param.tensor_parallel);
                         });

// The process's host tier arena (reserved by the first test that needs it).
HostArena* Arena() {
  if (HostTierArena() == nullptr) {
    absl::Status s = ReserveHostTierMemory(64ull << 20);
    EXPECT_TRUE(s.ok() || absl::IsAlreadyExists(s)) << s;
  }
  return HostTierArena();
}

class HostArenaWeightsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HostArenaWeightsTest, CopiesLiveInTheReservedArenaAndLoadBitIdentical) {
  const std::string device = GetParam();
  if (device != "cpu" && CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  HostArena* arena = Arena();
  ASSERT_NE(arena, nullptr);
  const uint64_t used_before = arena->stats().used;
  const LoadOptions options = Options("qwen3", "bfloat16", 1, device);
  auto from_disk = LoadModel(options);
  ASSERT_TRUE(from_disk.ok()) << from_disk.status();
  auto host = (*from_disk)->CopyWeightsToHost();
  ASSERT_TRUE(host.ok()) << host.status();
  // Every tensor in the arena (each block rounded up to its alignment).
  EXPECT_GE(arena->stats().used - used_before, (*host)->bytes());
  const auto expected = Logits(from_disk->get());
  from_disk->reset();
  ExpectLoadFromHostGives(options, *host, expected);
  host->reset();  // the last holder: its blocks go back
  EXPECT_EQ(arena->stats().used, used_before);
}

INSTANTIATE_TEST_SUITE_P(Devices, HostArenaWeightsTest, ::testing::Values("cpu", "cuda"));

TEST(HostWeightsMismatchTest, ACopyInAnotherDtypeIsIgnored) {
  auto f32 = LoadModel(Options("qwen3", "float32"));
  ASSERT_TRUE(f32.ok()) << f32.status();
  auto host = (*f32)->CopyWeightsToHost();
  ASSERT_TRUE(host.ok()) << host.status();
  LoadOptions bf16 = Options("qwen3", "bfloat16");
  bf16.host_weights = *host;
  auto loaded = LoadModel(bf16);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->info().weights_source, "disk");
  EXPECT_EQ((*loaded)->info().dtype, "bfloat16");
}

}  // namespace
}  // namespace gantry::runtime
