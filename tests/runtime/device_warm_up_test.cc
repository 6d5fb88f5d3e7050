#include "runtime/device_warm_up.h"

#include <dirent.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/model_runner.h"
#include "tests/runtime/test_files.h"

namespace gantry::runtime {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
  }
  return names;
}

// Points TMPDIR at a fresh folder for the test's lifetime.
class DeviceWarmUpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* old = std::getenv("TMPDIR");
    had_tmpdir_ = old != nullptr;
    if (had_tmpdir_) old_tmpdir_ = old;
    tmp_ = gantry::testing::MakeTempDir("device_warm_up");
    ::setenv("TMPDIR", tmp_.c_str(), 1);
  }
  void TearDown() override {
    if (had_tmpdir_) {
      ::setenv("TMPDIR", old_tmpdir_.c_str(), 1);
    } else {
      ::unsetenv("TMPDIR");
    }
  }
  std::string tmp_, old_tmpdir_;
  bool had_tmpdir_ = false;
};

TEST_F(DeviceWarmUpTest, LoadsTheTinyModelAndLeavesNoFiles) {
  for (const char* dtype : {"float32", "bfloat16"}) {
    auto seconds = WarmUpDevice("cpu", dtype);
    ASSERT_TRUE(seconds.ok()) << dtype << ": " << seconds.status();
    EXPECT_GT(*seconds, 0.0);
    EXPECT_THAT(Entries(tmp_), IsEmpty()) << dtype;
  }
}

TEST_F(DeviceWarmUpTest, NamesABadDtypeOrDeviceAndLeavesNoFiles) {
  auto dtype = WarmUpDevice("cpu", "int8");
  EXPECT_EQ(dtype.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dtype.status().message(), HasSubstr("\"int8\""));
  auto device = WarmUpDevice("tpu:0", "float32");
  EXPECT_FALSE(device.ok());
  EXPECT_THAT(device.status().message(), HasSubstr("tpu:0"));
  EXPECT_THAT(Entries(tmp_), IsEmpty());
}

TEST_F(DeviceWarmUpTest, UnwritableTemporaryFolderIsAnError) {
  ::setenv("TMPDIR", "/nonexistent/gantry", 1);
  auto seconds = WarmUpDevice("cpu", "float32");
  EXPECT_EQ(seconds.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(seconds.status().message(), HasSubstr("/nonexistent/gantry"));
}

// A first warm-up may leave one thing behind: cuBLAS's workspace for its
// graph-capture stream (32 MiB on the H100), which LibTorch keeps for the
// process. (Its eager steps run products on the device's current stream
// too, whose workspace LibTorch also keeps: the test makes that one first,
// so the count does not depend on whether an earlier test in the process
// did. Without it a fresh process saw +64 MiB on an H200.) The tiny model
// itself (16 MiB of KV cache, 9 MB of weights, the graphs' pool) goes, and
// a second warm-up reuses the first's capture stream and so its workspace
// (cuda_forward.cc's CaptureStreamLease): it leaves the allocator exactly
// where the first left it. With streams from LibTorch's
// pool, each load left another workspace (run 14 on the H100: +32 MiB).
TEST_F(DeviceWarmUpTest, WarmsEachCudaDeviceAndGivesTheModelBack) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "SKIPPED: no CUDA device";
  constexpr uint64_t kOneCublasWorkspace = uint64_t{32} << 20;
  for (int i = 0; i < CudaDeviceCount(); ++i) {
    // The products the warm-up's eager steps run, on the current stream.
    const at::Tensor a = at::ones({64, 64}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA, i));
    (void)at::linear(a, a, a[0]).sum().item<float>();
    (void)at::matmul(a, a).sum().item<float>();
  }
  const std::vector<CudaAllocatorStats> before = DescribeCudaAllocators();
  std::vector<CudaAllocatorStats> first;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < CudaDeviceCount(); ++i) {
      auto seconds = WarmUpDevice("cuda:" + std::to_string(i), "bfloat16");
      ASSERT_TRUE(seconds.ok()) << seconds.status();
    }
    EXPECT_THAT(Entries(tmp_), IsEmpty());
    const std::vector<CudaAllocatorStats> now = DescribeCudaAllocators();
    ASSERT_EQ(now.size(), before.size());
    if (round == 0) {
      first = now;
      for (size_t i = 0; i < now.size(); ++i) {
        EXPECT_LE(now[i].allocated_bytes, before[i].allocated_bytes + kOneCublasWorkspace)
            << "cuda:" << now[i].device << ": the warm-up left part of its model behind";
      }
      continue;
    }
    for (size_t i = 0; i < now.size(); ++i) {
      EXPECT_EQ(now[i].allocated_bytes, first[i].allocated_bytes)
          << "cuda:" << now[i].device << ", warm-up " << round << ": memory grew since the first";
    }
  }
}

}  // namespace
}  // namespace gantry::runtime
