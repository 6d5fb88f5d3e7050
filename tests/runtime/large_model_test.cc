// A Llama-3.1-8B-shaped random model on the GPU. Made on the GPU machine by
// `tools/make_test_models.py --llama8b DIR` (16 GB, never committed); runs when
// GANTRY_LLAMA8B_DIR names that folder and a CUDA device is present.
#include <chrono>
#include <cstdlib>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model_runner.h"
#include "scheduler/runner_session.h"
#include "runtime/safetensors.h"

namespace gantry::runtime {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<ModelRunner> LoadTimed(const std::string& dir, const std::string& dtype,
                                       uint64_t kv_cache_bytes) {
  LoadOptions options;
  options.model_dir = dir;
  options.device = "cuda";
  options.dtype = dtype;
  options.kv_cache_bytes = kv_cache_bytes;
  auto start = std::chrono::steady_clock::now();
  auto runner = LoadModel(options);
  EXPECT_TRUE(runner.ok()) << runner.status();
  if (!runner.ok()) return nullptr;
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("loaded %s as %s: %.2f GB on the device in %.2f s (%.2f GB/s)\n", dir.c_str(), dtype.c_str(),
              (*runner)->info().weight_bytes / 1e9, seconds, (*runner)->info().weight_bytes / 1e9 / seconds);
  return *std::move(runner);
}

// max |a - b| / max |b| over one row.
double RelativeError(const std::vector<float>& actual, const float* expected) {
  double diff = 0, scale = 0;
  for (size_t v = 0; v < actual.size(); ++v) {
    diff = std::max(diff, std::abs(static_cast<double>(actual[v]) - expected[v]));
    scale = std::max(scale, std::abs(static_cast<double>(expected[v])));
  }
  return diff / scale;
}

class LargeModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("GANTRY_LLAMA8B_DIR");
    if (dir == nullptr || CudaDeviceCount() == 0) GTEST_SKIP() << "set GANTRY_LLAMA8B_DIR on a CUDA machine";
    dir_ = dir;
    auto file = SafetensorsFile::Open(dir_ + "/reference.safetensors");
    ASSERT_TRUE(file.ok()) << file.status();
    reference_ = *std::move(file);
    const TensorInfo* ids = reference_->Find("prompt_ids");
    ASSERT_NE(ids, nullptr);
    const int64_t* data = static_cast<const int64_t*>(reference_->Data(*ids));
    prompt_.assign(data, data + ids->NumElements());
  }

  const float* ReferenceRow(const std::string& name, int64_t position) {
    const TensorInfo* info = reference_->Find(name);
    EXPECT_NE(info, nullptr) << name;
    return static_cast<const float*>(reference_->Data(*info)) + position * info->shape[1];
  }

  // Logits of the last two prompt positions: a prefill, then a decode.
  std::vector<std::vector<float>> LastTwoLogits(ModelRunner& runner) {
    SamplingParams greedy;
    greedy.temperature = 0;
    scheduler::RunnerSession session(&runner);
    auto id = session.Add(prompt_, {}, greedy);
    EXPECT_TRUE(id.ok()) << id.status();
    const int64_t n = static_cast<int64_t>(prompt_.size());
    auto first = session.Step({scheduler::SessionItem{*id, n - 1, true}});
    EXPECT_TRUE(first.ok()) << first.status();
    auto second = session.Step({scheduler::SessionItem{*id, 1, true}});
    EXPECT_TRUE(second.ok()) << second.status();
    return {first->sequences[0].logits, second->sequences[0].logits};
  }

  std::string dir_;
  std::unique_ptr<SafetensorsFile> reference_;
  std::vector<int32_t> prompt_;
};

TEST_F(LargeModelTest, Float32MatchesTransformersFloat32) {
  auto runner = LoadTimed(dir_, "float32", 1ull << 30);
  ASSERT_NE(runner, nullptr);
  auto logits = LastTwoLogits(*runner);
  const int64_t n = static_cast<int64_t>(prompt_.size());
  for (int i = 0; i < 2; ++i) {
    double error = RelativeError(logits[i], ReferenceRow("logits_f32", n - 2 + i));
    std::printf("float32, position %ld: relative error %.2e\n", static_cast<long>(n - 2 + i), error);
    EXPECT_LE(error, 1e-3);
  }
}

TEST_F(LargeModelTest, Bfloat16StaysAsCloseAsTransformersBfloat16) {
  // Over 32 random layers bfloat16 rounding alone moves the logits visibly;
  // transformers' own bfloat16 run is the yardstick: ours may stray from the
  // float32 truth by at most 1.25x what it strays.
  auto runner = LoadTimed(dir_, "bfloat16", 1ull << 30);
  ASSERT_NE(runner, nullptr);
  auto logits = LastTwoLogits(*runner);
  const int64_t n = static_cast<int64_t>(prompt_.size());
  for (int i = 0; i < 2; ++i) {
    const int64_t position = n - 2 + i;
    const float* truth = ReferenceRow("logits_f32", position);
    const float* theirs = ReferenceRow("logits_bf16", position);
    std::vector<float> theirs_row(theirs, theirs + logits[i].size());
    double ours_error = RelativeError(logits[i], truth);
    double their_error = RelativeError(theirs_row, truth);
    std::printf("bfloat16, position %ld: ours vs float32 %.4f, transformers bf16 vs float32 %.4f, "
                "ours vs transformers bf16 %.4f\n",
                static_cast<long>(position), ours_error, their_error, RelativeError(logits[i], theirs));
    EXPECT_LE(ours_error, 1.25 * their_error) << "position " << position;
  }
}

TEST_F(LargeModelTest, OutOfMemoryStepIsReportedAndRecovered) {
  // A KV pool that takes all but 3 GiB of the GPU: a 100k-token chunk's
  // activations (its MLP alone is [100k, 28672] bf16, 5.7 GB) do not fit, so
  // the step fails with RESOURCE_EXHAUSTED and the runner keeps working.
  // (Attention runs from the paged cache, so the chunk itself is no longer
  // what runs out of memory.)
  const std::vector<CudaDeviceInfo> devices = DescribeCudaDevices();
  ASSERT_FALSE(devices.empty());
  const uint64_t weights = 16ull << 30;  // the 8B-shaped model in bf16, rounded up
  ASSERT_GT(devices[0].total_memory, weights + (8ull << 30));
  auto runner = LoadTimed(dir_, "bfloat16", devices[0].total_memory - weights - (3ull << 30));
  ASSERT_NE(runner, nullptr);
  std::vector<int32_t> huge(100000);
  for (size_t i = 0; i < huge.size(); ++i) huge[i] = static_cast<int32_t>(i % 128000);
  SamplingParams greedy;
  greedy.temperature = 0;
  scheduler::RunnerSession session(runner.get());
  auto big = session.Add(huge, {}, greedy);
  ASSERT_TRUE(big.ok()) << big.status();
  auto result = session.Step({scheduler::SessionItem{*big, 100000}});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted) << result.status();
  EXPECT_THAT(result.status().message(),
              HasSubstr("out of device memory running a step of 1 sequences and 100000 tokens"));
  EXPECT_EQ(session.NumComputed(*big), 0);
  EXPECT_TRUE(session.Remove(*big).ok());

  auto small = session.Add({128000, 9906, 1917}, {}, greedy);
  ASSERT_TRUE(small.ok());
  auto ok = session.Step({scheduler::SessionItem{*small, 3}});
  EXPECT_TRUE(ok.ok()) << ok.status();
}

}  // namespace
}  // namespace gantry::runtime
