// SkinnyGemm (runtime/cuda/skinny_gemm.cu) against a double-precision CPU
// reference: y = x W^T (+ bias), rounded once to the storage type. Covers
// every dtype and batch size 1..8 on small shapes (including k that allows no
// 16-byte vectors, and pointers shifted off alignment, the scalar path), the
// Llama 3 8B shapes in bf16, bit-for-bit batch invariance (a row's result is
// the same computed alone or in a batch of 8), and prints the bandwidth the
// 8B shapes reach.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/cuda/kernels.h"
#include "tests/cuda/kernel_test_util.h"

namespace gantry::cuda {
namespace {

using ::gantry::cuda::testing::AllDTypes;
using ::gantry::cuda::testing::Decode;
using ::gantry::cuda::testing::DeviceBuffer;
using ::gantry::cuda::testing::Download;
using ::gantry::cuda::testing::DownloadAs;
using ::gantry::cuda::testing::ElementSize;
using ::gantry::cuda::testing::MicrosecondsPerLaunch;
using ::gantry::cuda::testing::RandomValues;
using ::gantry::cuda::testing::RelativeError;
using ::gantry::cuda::testing::Store;
using ::gantry::cuda::testing::Sync;
using ::gantry::cuda::testing::Upload;
using ::gantry::cuda::testing::UploadAs;
using ::gantry::cuda::testing::CheckedRows;
using ::gantry::cuda::testing::RandomWeightBytes;
using ::gantry::cuda::testing::WeightRow;

// One dot product of k rounded values per output, with a single rounding:
// the errors are the output rounding (16-bit) or float32 accumulation.
double RelativeTolerance(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 1e-5;
    case DType::kFloat16: return 2e-3;
    case DType::kBFloat16: return 8e-3;
  }
  return 0;
}

struct Case {
  DType dtype = DType::kBFloat16;
  int m = 1;
  int64_t n = 0, k = 0;
  bool bias = false;
  int x_offset = 0;  // elements x is shifted from cudaMalloc's alignment
  int w_offset = 0;  // same for W
};

std::string Describe(const Case& c) {
  return absl::StrCat(DTypeName(c.dtype), " m=", c.m, " n=", c.n, " k=", c.k, c.bias ? " bias" : "",
                      " x_offset=", c.x_offset, " w_offset=", c.w_offset);
}

// Runs one SkinnyGemm on random data and checks it against the reference
// (on CheckedRows), that every output is finite and that nothing past y is
// written. `weights` (RandomWeightBytes for c's shape) saves regenerating the
// big ones; nullptr generates them.
void CheckSkinnyGemm(const Case& c, const std::vector<uint8_t>* weights = nullptr) {
  const std::string what = Describe(c);
  const uint64_t seed = static_cast<uint64_t>(c.m * 1000003 + c.n * 7919 + c.k * 131 + c.bias + 17 * c.x_offset +
                                              29 * c.w_offset + static_cast<int>(c.dtype) * 1000000007ull);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  const size_t es = ElementSize(c.dtype);
  const std::vector<float> x = RandomValues(rng, c.dtype, static_cast<size_t>(c.m * c.k + c.x_offset));
  const std::vector<float> bias = RandomValues(rng, c.dtype, static_cast<size_t>(c.n), -0.5f, 0.5f);
  std::vector<uint8_t> generated;
  if (weights == nullptr) {
    generated = RandomWeightBytes(c.dtype, c.n, c.k, seed);
    weights = &generated;
  }
  const std::vector<uint8_t>& w_bytes = *weights;

  DeviceBuffer d_x = UploadAs(c.dtype, x);
  DeviceBuffer d_w(w_bytes.size() + c.w_offset * es);
  ASSERT_EQ(cudaMemcpy(d_w.as<uint8_t>() + c.w_offset * es, w_bytes.data(), w_bytes.size(), cudaMemcpyHostToDevice),
            cudaSuccess);
  DeviceBuffer d_bias = UploadAs(c.dtype, bias);
  constexpr size_t kGuard = 64;  // elements after y that must stay poisoned
  const size_t y_count = static_cast<size_t>(c.m * c.n);
  DeviceBuffer d_y((y_count + kGuard) * es);
  d_y.Poison();

  SkinnyGemmArgs args;
  args.dtype = c.dtype;
  args.m = c.m;
  args.n = c.n;
  args.k = c.k;
  args.x = d_x.as<uint8_t>() + c.x_offset * es;
  args.w = d_w.as<uint8_t>() + c.w_offset * es;
  args.bias = c.bias ? d_bias.get() : nullptr;
  args.y = d_y.get();
  ASSERT_TRUE(SkinnyGemm(args, nullptr).ok()) << what;
  Sync();

  const std::vector<float> y = DownloadAs(c.dtype, d_y, y_count + kGuard);
  for (size_t i = 0; i < y_count; ++i) {
    ASSERT_TRUE(std::isfinite(y[i])) << what << ": y[" << i / c.n << ", " << i % c.n << "] = " << y[i];
  }
  for (size_t i = y_count; i < y_count + kGuard; ++i) ASSERT_TRUE(std::isnan(y[i])) << what << ": wrote past y";

  const std::vector<int64_t> rows = CheckedRows(c.n, rng);
  std::vector<float> actual;
  std::vector<double> expected;
  double worst_float32 = 0;  // float32: |error| / sum |x_i w_i| (the dot product's own scale)
  for (int64_t row : rows) {
    const std::vector<float> w_row = WeightRow(c.dtype, w_bytes, c.k, row);
    for (int r = 0; r < c.m; ++r) {
      double sum = 0, magnitude = 0;
      const float* x_row = x.data() + c.x_offset + r * c.k;
      for (int64_t i = 0; i < c.k; ++i) {
        sum += static_cast<double>(x_row[i]) * w_row[i];
        magnitude += std::abs(static_cast<double>(x_row[i]) * w_row[i]);
      }
      if (c.bias) {
        sum += bias[row];
        magnitude += std::abs(bias[row]);
      }
      expected.push_back(Store(c.dtype, sum));
      actual.push_back(y[r * c.n + row]);
      if (magnitude > 0) worst_float32 = std::max(worst_float32, std::abs(actual.back() - sum) / magnitude);
    }
  }
  if (c.dtype == DType::kFloat32) {
    // Cancellation can make a few outputs tiny, so the error is measured
    // against the terms' magnitude, as float32 accumulation bounds it.
    EXPECT_LT(worst_float32, RelativeTolerance(c.dtype)) << what;
  } else {
    EXPECT_LT(RelativeError(actual, expected), RelativeTolerance(c.dtype)) << what;
  }
}

TEST(SkinnyGemmTest, SmallShapesAllDTypesAndBatches) {
  GANTRY_REQUIRE_GPU();
  // (n, k): test-model projections, odd sizes, k that allows no 16-byte
  // vectors in some dtypes (36: fp32 only; 30, 100, 2052 in 16-bit), k with
  // a partial last block iteration (1032, 3000), and n = 1.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {64, 64}, {176, 64}, {512, 96}, {96, 256}, {100, 100}, {1, 64}, {1, 100},
      {33, 30}, {64, 36}, {40, 1032}, {24, 3000}, {20, 2052}, {300, 4096},
  };
  for (DType dtype : AllDTypes()) {
    for (const auto& [n, k] : shapes) {
      for (int m = 1; m <= kSkinnyGemmMaxRows; ++m) {
        for (bool bias : {false, true}) CheckSkinnyGemm({dtype, m, n, k, bias});
      }
    }
  }
}

TEST(SkinnyGemmTest, UnalignedPointersUseScalarPath) {
  GANTRY_REQUIRE_GPU();
  for (DType dtype : AllDTypes()) {
    for (int m : {1, 5, 8}) {
      for (const auto& [n, k] : std::vector<std::pair<int64_t, int64_t>>{{64, 64}, {176, 256}, {20, 1032}}) {
        CheckSkinnyGemm({dtype, m, n, k, /*bias=*/true, /*x_offset=*/1, /*w_offset=*/0});
        CheckSkinnyGemm({dtype, m, n, k, /*bias=*/false, /*x_offset=*/0, /*w_offset=*/1});
      }
    }
  }
}

// Llama 3 8B: fused qkv, o_proj, fused gate/up, down_proj, lm_head.
const std::vector<std::pair<int64_t, int64_t>>& ModelShapes() {
  static const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {6144, 4096}, {4096, 4096}, {28672, 4096}, {4096, 14336}, {128256, 4096}};
  return shapes;
}

TEST(SkinnyGemmTest, ModelShapesBf16) {
  GANTRY_REQUIRE_GPU();
  for (const auto& [n, k] : ModelShapes()) {
    const std::vector<uint8_t> weights = RandomWeightBytes(DType::kBFloat16, n, k, static_cast<uint64_t>(n + k));
    for (int m : {1, 8}) CheckSkinnyGemm({DType::kBFloat16, m, n, k, /*bias=*/n == 6144}, &weights);
  }
}

// Row r of an 8-row batch equals, bit for bit, row r computed alone (x
// pointing at it, m = 1), and the first 3 rows computed as a batch of 3.
TEST(SkinnyGemmTest, BatchInvariant) {
  GANTRY_REQUIRE_GPU();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{176, 64}, {100, 100}, {40, 1032}, {64, 14336}};
  for (DType dtype : AllDTypes()) {
    for (const auto& [n, k] : shapes) {
      const std::string what = absl::StrCat(DTypeName(dtype), " n=", n, " k=", k);
      std::mt19937 rng(static_cast<uint32_t>(n * 31 + k + static_cast<int>(dtype)));
      const size_t es = ElementSize(dtype);
      constexpr int kM = kSkinnyGemmMaxRows;
      DeviceBuffer d_x = UploadAs(dtype, RandomValues(rng, dtype, static_cast<size_t>(kM * k)));
      DeviceBuffer d_w = Upload(RandomWeightBytes(dtype, n, k, rng()));
      DeviceBuffer d_bias = UploadAs(dtype, RandomValues(rng, dtype, static_cast<size_t>(n), -0.5f, 0.5f));
      DeviceBuffer d_batch(kM * n * es), d_one(n * es);

      SkinnyGemmArgs args;
      args.dtype = dtype;
      args.m = kM;
      args.n = n;
      args.k = k;
      args.x = d_x.get();
      args.w = d_w.get();
      args.bias = d_bias.get();
      args.y = d_batch.get();
      d_batch.Poison();
      ASSERT_TRUE(SkinnyGemm(args, nullptr).ok()) << what;
      Sync();
      const std::vector<uint8_t> batch = Download<uint8_t>(d_batch, kM * n * es);

      for (int r = 0; r < kM; ++r) {
        args.m = 1;
        args.x = d_x.as<uint8_t>() + r * k * es;
        args.y = d_one.get();
        d_one.Poison();
        ASSERT_TRUE(SkinnyGemm(args, nullptr).ok()) << what;
        Sync();
        const std::vector<uint8_t> one = Download<uint8_t>(d_one, n * es);
        EXPECT_EQ(std::memcmp(one.data(), batch.data() + r * n * es, n * es), 0) << what << " row " << r;
      }

      args.m = 3;
      args.x = d_x.get();
      DeviceBuffer d_three(3 * n * es);
      d_three.Poison();
      args.y = d_three.get();
      ASSERT_TRUE(SkinnyGemm(args, nullptr).ok()) << what;
      Sync();
      const std::vector<uint8_t> three = Download<uint8_t>(d_three, 3 * n * es);
      EXPECT_EQ(std::memcmp(three.data(), batch.data(), 3 * n * es), 0) << what << " m=3";
    }
  }
}

// Not an assertion: the time per launch and the weight bandwidth for the 8B
// shapes in bf16, over 4 weight buffers in rotation so L2 (50 MB) cannot
// hold the weights between launches, as in a real step.
TEST(SkinnyGemmTest, PrintBandwidth) {
  GANTRY_REQUIRE_GPU();
  constexpr int kBuffers = 4, kWarmup = 8, kLaunches = 50;
  std::mt19937 rng(7);
  for (const auto& [n, k] : ModelShapes()) {
    const size_t w_bytes = static_cast<size_t>(n * k) * 2;
    std::vector<DeviceBuffer> weights;
    for (int b = 0; b < kBuffers; ++b) {
      weights.emplace_back(w_bytes);
      // 0x3C3C: bf16 0.0115, a finite weight; the values do not matter here.
      ASSERT_EQ(cudaMemset(weights.back().get(), 0x3C, w_bytes), cudaSuccess);
    }
    DeviceBuffer d_x = UploadAs(DType::kBFloat16, RandomValues(rng, DType::kBFloat16, kSkinnyGemmMaxRows * k));
    DeviceBuffer d_y(kSkinnyGemmMaxRows * n * 2);
    for (int m : {1, 8}) {
      SkinnyGemmArgs args;
      args.dtype = DType::kBFloat16;
      args.m = m;
      args.n = n;
      args.k = k;
      args.x = d_x.get();
      args.y = d_y.get();
      const double us = MicrosecondsPerLaunch(kWarmup, kLaunches, [&](int i) {
        args.w = weights[i % kBuffers].get();
        return SkinnyGemm(args, nullptr).ok();
      });
      ASSERT_GT(us, 0);
      const double gb_per_s = static_cast<double>(w_bytes) / (us * 1e-6) / 1e9;
      std::printf("[ PERF ] %lld x %lld m=%d: %.1f us, %.0f GB/s of weights\n", static_cast<long long>(n),
                  static_cast<long long>(k), m, us, gb_per_s);
      RecordProperty(absl::StrCat("us_", n, "x", k, "_m", m), absl::StrCat(us));
    }
  }
}

TEST(SkinnyGemmTest, RejectsInvalidArguments) {
  GANTRY_REQUIRE_GPU();
  DeviceBuffer x(1024), w(1024), y(1024);
  SkinnyGemmArgs args;
  args.dtype = DType::kBFloat16;
  args.m = kSkinnyGemmMaxRows + 1;
  args.n = 16;
  args.k = 16;
  args.x = x.get();
  args.w = w.get();
  args.y = y.get();
  EXPECT_EQ(SkinnyGemm(args, nullptr).code(), absl::StatusCode::kInvalidArgument);

  args.m = 1;
  args.y = x.get();
  EXPECT_EQ(SkinnyGemm(args, nullptr).code(), absl::StatusCode::kInvalidArgument);

  args.y = y.get();
  args.k = 0;
  EXPECT_EQ(SkinnyGemm(args, nullptr).code(), absl::StatusCode::kInvalidArgument);

  args.k = 16;
  args.w = nullptr;
  EXPECT_EQ(SkinnyGemm(args, nullptr).code(), absl::StatusCode::kInvalidArgument);

  // An empty batch is a no-op.
  args.w = w.get();
  args.m = 0;
  EXPECT_TRUE(SkinnyGemm(args, nullptr).ok());
}

}  // namespace
}  // namespace gantry::cuda
