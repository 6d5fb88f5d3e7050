// LtGemm (runtime/cuda/lt_gemm.cc) against a double-precision CPU reference
// that rounds once, as cuBLASLt's epilogue does: y = dtype(gelu?(x W^T + bias)),
// GELU in its tanh form, or y = dtype(x W^T + bias + residual). Covers both
// 16-bit dtypes on small and odd shapes (m = 1, 7, 64, 300; n and k of 8, 64,
// 264, 1024) with and without bias, GELU and residual, that nothing past y
// (nor the residual) is written, the tuning (once per shape and m's
// power-of-two bucket, the cached algorithm's result the tuned call's, the
// tuned algorithm serving another m of the bucket, autotune off, no tuning while a
// CUDA graph is captured), argument errors (host-side, so they run without a
// GPU too), and prints the encoder shapes' TFLOP/s with the heuristic's first
// algorithm and with the tuned one, and how close the GELU is to each form.
#include "runtime/cuda/lt_gemm.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/cuda/kernels.h"
#include "tests/cuda/kernel_test_util.h"

namespace gantry::cuda {
namespace {

using ::gantry::cuda::testing::Decode;
using ::gantry::cuda::testing::DeviceBuffer;
using ::gantry::cuda::testing::DownloadAs;
using ::gantry::cuda::testing::MicrosecondsPerLaunch;
using ::gantry::cuda::testing::RandomValues;
using ::gantry::cuda::testing::RandomWeightBytes;
using ::gantry::cuda::testing::RelativeError;
using ::gantry::cuda::testing::RoundTo;
using ::gantry::cuda::testing::Store;
using ::gantry::cuda::testing::Sync;
using ::gantry::cuda::testing::Upload;
using ::gantry::cuda::testing::UploadAs;

constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // cuBLAS's suggestion for Hopper
constexpr int64_t kGuard = 64;  // elements after y that must stay poisoned

double GeluTanh(double v) {
  const double kSqrt2OverPi = 0.7978845608028654;
  return 0.5 * v * (1.0 + std::tanh(kSqrt2OverPi * (v + 0.044715 * v * v * v)));
}
double GeluErf(double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); }

// One rounding of a float32 product against the double reference's; the
// GELU epilogue's own float32 arithmetic (a fast tanh) adds a little.
double RelativeTolerance(DType dtype, LtEpilogue epilogue) {
  const double base = dtype == DType::kFloat16 ? 2e-3 : 8e-3;
  return epilogue == LtEpilogue::kGelu ? 1.5 * base : base;
}

// A product's random operands, on the host (rounded to the dtype) and on the device.
struct Operands {
  DType dtype = DType::kBFloat16;
  int64_t m = 0, n = 0, k = 0;
  std::vector<float> x, w, bias;  // [m, k], [n, k], [n]
  DeviceBuffer d_x, d_w, d_bias;
};

Operands MakeOperands(DType dtype, int64_t m, int64_t n, int64_t k) {
  const uint64_t seed = static_cast<uint64_t>(m * 1000003 + n * 7919 + k * 131 + static_cast<int>(dtype));
  std::mt19937 rng(static_cast<uint32_t>(seed));
  Operands o;
  o.dtype = dtype;
  o.m = m;
  o.n = n;
  o.k = k;
  o.x = RandomValues(rng, dtype, static_cast<size_t>(m * k));
  const std::vector<uint8_t> w_bytes = RandomWeightBytes(dtype, n, k, seed);
  o.w = Decode(dtype, w_bytes);
  o.bias = RandomValues(rng, dtype, static_cast<size_t>(n), -0.5f, 0.5f);
  o.d_x = UploadAs(dtype, o.x);
  o.d_w = Upload(w_bytes);
  o.d_bias = UploadAs(dtype, o.bias);
  return o;
}

// x W^T in double, [m, n].
std::vector<double> Product(const Operands& o) {
  std::vector<double> product(static_cast<size_t>(o.m * o.n));
  for (int64_t i = 0; i < o.m; ++i) {
    const float* x = o.x.data() + i * o.k;
    for (int64_t j = 0; j < o.n; ++j) {
      const float* w = o.w.data() + j * o.k;
      double sum = 0;
      for (int64_t l = 0; l < o.k; ++l) sum += static_cast<double>(x[l]) * w[l];
      product[i * o.n + j] = sum;
    }
  }
  return product;
}

// dtype(gelu?(product + bias)) or dtype(product + bias + residual[m, n]), rounded once.
std::vector<double> Expected(const Operands& o, const std::vector<double>& product, bool bias, LtEpilogue epilogue,
                             bool erf_gelu = false, const std::vector<float>* residual = nullptr) {
  std::vector<double> expected(product.size());
  for (int64_t i = 0; i < o.m; ++i) {
    for (int64_t j = 0; j < o.n; ++j) {
      double v = product[i * o.n + j] + (bias ? o.bias[j] : 0.0);
      if (residual != nullptr) v += (*residual)[i * o.n + j];
      if (epilogue == LtEpilogue::kGelu) v = erf_gelu ? GeluErf(v) : GeluTanh(v);
      expected[i * o.n + j] = Store(o.dtype, v);
    }
  }
  return expected;
}

LtGemmArgs ArgsFor(const Operands& o, bool bias, LtEpilogue epilogue) {
  LtGemmArgs args;
  args.dtype = o.dtype;
  args.m = o.m;
  args.n = o.n;
  args.k = o.k;
  args.x = o.d_x.get();
  args.w = o.d_w.get();
  args.bias = bias ? o.d_bias.get() : nullptr;
  args.epilogue = epilogue;
  return args;
}

std::string Describe(const LtGemmArgs& a) {
  return absl::StrCat(DTypeName(a.dtype), " m=", a.m, " n=", a.n, " k=", a.k, a.bias != nullptr ? " bias" : "",
                      a.epilogue == LtEpilogue::kGelu ? " gelu" : "", a.residual != nullptr ? " residual" : "");
}

// Runs `args` into a fresh poisoned y on the default stream; returns y [m, n]
// as floats, having checked that nothing past it was written (empty on failure).
std::vector<float> RunGemm(LtGemm& gemm, LtGemmArgs args) {
  const std::string what = Describe(args);
  const int64_t count = args.m * args.n;
  DeviceBuffer d_y(static_cast<size_t>(count + kGuard) * 2);
  d_y.Poison();
  args.y = d_y.get();
  const absl::Status status = gemm.Run(args, nullptr);
  EXPECT_TRUE(status.ok()) << what << ": " << status;
  if (!status.ok()) return {};
  Sync();
  std::vector<float> y = DownloadAs(args.dtype, d_y, static_cast<size_t>(count + kGuard));
  for (int64_t i = count; i < count + kGuard; ++i) EXPECT_TRUE(std::isnan(y[i])) << what << ": wrote past y";
  y.resize(count);
  return y;
}

std::unique_ptr<LtGemm> MakeGemm() {
  absl::StatusOr<std::unique_ptr<LtGemm>> gemm = LtGemm::Create(kWorkspaceBytes);
  EXPECT_TRUE(gemm.ok()) << gemm.status();
  return gemm.ok() ? std::move(*gemm) : nullptr;
}

TEST(LtGemmTest, MatchesReference) {
  GANTRY_REQUIRE_GPU();
  std::unique_ptr<LtGemm> gemm = MakeGemm();
  ASSERT_NE(gemm, nullptr);
  for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
    for (int64_t m : {1, 7, 64, 300}) {
      for (int64_t n : {8, 64, 1024, 264}) {
        for (int64_t k : {8, 64, 1024, 264}) {
          const Operands o = MakeOperands(dtype, m, n, k);
          const std::vector<double> product = Product(o);
          std::mt19937 rng(static_cast<uint32_t>(m * 31 + n * 7 + k));
          // A residual stream's magnitude: larger than the product, so a lost add shows.
          const std::vector<float> residual = RandomValues(rng, dtype, static_cast<size_t>(m * n), -2.0f, 2.0f);
          const DeviceBuffer d_residual = UploadAs(dtype, residual);
          for (bool bias : {false, true}) {
            for (LtEpilogue epilogue : {LtEpilogue::kNone, LtEpilogue::kGelu}) {
              const LtGemmArgs args = ArgsFor(o, bias, epilogue);
              const std::vector<float> y = RunGemm(*gemm, args);
              EXPECT_LT(RelativeError(y, Expected(o, product, bias, epilogue)), RelativeTolerance(dtype, epilogue))
                  << Describe(args);
            }
            LtGemmArgs with_residual = ArgsFor(o, bias, LtEpilogue::kNone);
            with_residual.residual = d_residual.get();
            const std::vector<float> y = RunGemm(*gemm, with_residual);
            EXPECT_LT(RelativeError(y, Expected(o, product, bias, LtEpilogue::kNone, false, &residual)),
                      RelativeTolerance(dtype, LtEpilogue::kNone))
                << Describe(with_residual);
            EXPECT_EQ(DownloadAs(dtype, d_residual, residual.size()), residual)
                << Describe(with_residual) << ": wrote the residual";
          }
        }
      }
    }
  }
}

// A residual (beta = 1, C != D) makes another shape to tune; the tuned
// algorithm, untimed, gives the tuning call's bits. (MatchesReference checks
// y = dtype(x W^T + bias + residual) on every shape.)
TEST(LtGemmTest, TunesWithAResidualApart) {
  GANTRY_REQUIRE_GPU();
  std::unique_ptr<LtGemm> fresh = MakeGemm();
  ASSERT_NE(fresh, nullptr);
  const Operands o = MakeOperands(DType::kBFloat16, 64, 264, 64);
  std::mt19937 rng(7);
  const std::vector<float> residual = RandomValues(rng, o.dtype, static_cast<size_t>(o.m * o.n), -2.0f, 2.0f);
  const DeviceBuffer d_residual = UploadAs(o.dtype, residual);
  LtGemmArgs args = ArgsFor(o, /*bias=*/true, LtEpilogue::kNone);
  RunGemm(*fresh, args);
  EXPECT_EQ(fresh->TunedShapes(), 1u);
  args.residual = d_residual.get();
  const std::vector<float> tuned = RunGemm(*fresh, args);
  EXPECT_EQ(fresh->TunedShapes(), 2u);
  EXPECT_TRUE(fresh->TunedAlgorithm(args).has_value());
  const std::vector<float> cached = RunGemm(*fresh, args);  // the tuned algorithm, untimed: the same bits
  EXPECT_EQ(fresh->TunedShapes(), 2u);
  ASSERT_EQ(cached.size(), tuned.size());
  EXPECT_EQ(std::memcmp(cached.data(), tuned.data(), tuned.size() * sizeof(float)), 0);
  EXPECT_LT(RelativeError(tuned, Expected(o, Product(o), true, LtEpilogue::kNone, false, &residual)),
            RelativeTolerance(o.dtype, LtEpilogue::kNone));
}

TEST(LtGemmTest, TunesEachShapeOnce) {
  GANTRY_REQUIRE_GPU();
  std::unique_ptr<LtGemm> gemm = MakeGemm();
  ASSERT_NE(gemm, nullptr);
  const Operands o = MakeOperands(DType::kBFloat16, 64, 1024, 1024);
  const std::vector<double> product = Product(o);
  const LtGemmArgs args = ArgsFor(o, /*bias=*/true, LtEpilogue::kGelu);
  const double tolerance = RelativeTolerance(o.dtype, LtEpilogue::kGelu);
  EXPECT_EQ(gemm->TunedShapes(), 0u);
  EXPECT_FALSE(gemm->TunedAlgorithm(args).has_value());

  // The first call tunes; y is the chosen algorithm's result.
  const std::vector<float> tuned = RunGemm(*gemm, args);
  EXPECT_EQ(gemm->TunedShapes(), 1u);
  const std::optional<int> rank = gemm->TunedAlgorithm(args);
  ASSERT_TRUE(rank.has_value());
  EXPECT_GE(*rank, 0);
  EXPECT_LT(*rank, kLtGemmCandidates);
  EXPECT_LT(RelativeError(tuned, Expected(o, product, true, LtEpilogue::kGelu)), tolerance);

  // The second launches the cached algorithm: no tuning, the same bits.
  const std::vector<float> cached = RunGemm(*gemm, args);
  EXPECT_EQ(gemm->TunedShapes(), 1u);
  ASSERT_EQ(cached.size(), tuned.size());
  EXPECT_EQ(std::memcmp(cached.data(), tuned.data(), tuned.size() * sizeof(float)), 0)
      << "the cached algorithm's result differs from the tuned call's";

  // Another m of the same power-of-two bucket (33..64) takes the tuned
  // algorithm: no tuning, and its rows are right.
  LtGemmArgs fewer_rows = args;
  fewer_rows.m = 33;
  const std::vector<float> from_bucket = RunGemm(*gemm, fewer_rows);
  EXPECT_EQ(gemm->TunedShapes(), 1u);
  std::vector<double> expected_rows = Expected(o, product, true, LtEpilogue::kGelu);
  expected_rows.resize(static_cast<size_t>(fewer_rows.m * o.n));
  EXPECT_LT(RelativeError(from_bucket, expected_rows), tolerance);
  EXPECT_EQ(gemm->TunedAlgorithm(fewer_rows), rank);

  // Another epilogue, no bias, or a less aligned operand is another shape.
  RunGemm(*gemm, ArgsFor(o, /*bias=*/true, LtEpilogue::kNone));
  EXPECT_EQ(gemm->TunedShapes(), 2u);
  RunGemm(*gemm, ArgsFor(o, /*bias=*/false, LtEpilogue::kGelu));
  EXPECT_EQ(gemm->TunedShapes(), 3u);
  DeviceBuffer shifted(static_cast<size_t>(o.m * o.k) * 2 + 16);
  ASSERT_EQ(cudaMemcpy(static_cast<char*>(shifted.get()) + 16, o.d_x.get(), static_cast<size_t>(o.m * o.k) * 2,
                       cudaMemcpyDeviceToDevice),
            cudaSuccess);
  LtGemmArgs unaligned = args;
  unaligned.x = static_cast<char*>(shifted.get()) + 16;
  const std::vector<float> from_unaligned = RunGemm(*gemm, unaligned);
  EXPECT_EQ(gemm->TunedShapes(), 4u);
  EXPECT_LT(RelativeError(from_unaligned, Expected(o, product, true, LtEpilogue::kGelu)), tolerance);

  // Autotune off: the heuristic's first, nothing tuned, the same accuracy.
  gemm->autotune = false;
  const Operands small = MakeOperands(DType::kFloat16, 7, 264, 1024);
  const LtGemmArgs untuned = ArgsFor(small, /*bias=*/true, LtEpilogue::kNone);
  for (int call = 0; call < 2; ++call) {
    const std::vector<float> y = RunGemm(*gemm, untuned);
    EXPECT_LT(RelativeError(y, Expected(small, Product(small), true, LtEpilogue::kNone)),
              RelativeTolerance(small.dtype, LtEpilogue::kNone));
  }
  EXPECT_EQ(gemm->TunedShapes(), 4u);
  EXPECT_FALSE(gemm->TunedAlgorithm(untuned).has_value());

  // Run checks its arguments as CheckLtGemmArgs does.
  LtGemmArgs bad = args;
  bad.y = const_cast<void*>(bad.x);
  EXPECT_EQ(gemm->Run(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

// While the stream is being captured nothing is timed: the captured product
// is the heuristic's first and the shape stays untuned until a later call
// outside the capture; a tuned shape is captured with its tuned algorithm.
TEST(LtGemmTest, CaptureDoesNotTune) {
  GANTRY_REQUIRE_GPU();
  std::unique_ptr<LtGemm> gemm = MakeGemm();
  ASSERT_NE(gemm, nullptr);
  const Operands o = MakeOperands(DType::kFloat16, 64, 264, 64);
  const std::vector<double> expected = Expected(o, Product(o), /*bias=*/true, LtEpilogue::kNone);
  LtGemmArgs args = ArgsFor(o, /*bias=*/true, LtEpilogue::kNone);
  const int64_t count = o.m * o.n;
  DeviceBuffer d_y(static_cast<size_t>(count + kGuard) * 2);
  args.y = d_y.get();
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);

  for (int round = 0; round < 2; ++round) {  // untuned, then tuned
    const size_t tuned_before = gemm->TunedShapes();
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    const absl::Status captured = gemm->Run(args, stream);
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_TRUE(captured.ok()) << captured;
    EXPECT_EQ(gemm->TunedShapes(), tuned_before) << "round " << round << ": tuned while capturing";
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    d_y.Poison();
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<float> y = DownloadAs(o.dtype, d_y, static_cast<size_t>(count + kGuard));
    for (int64_t i = count; i < count + kGuard; ++i) EXPECT_TRUE(std::isnan(y[i])) << "wrote past y";
    y.resize(count);
    EXPECT_LT(RelativeError(y, expected), RelativeTolerance(o.dtype, LtEpilogue::kNone)) << "round " << round;
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);

    if (round == 0) {  // outside a capture the shape is tuned
      ASSERT_TRUE(gemm->Run(args, stream).ok());
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      EXPECT_EQ(gemm->TunedShapes(), tuned_before + 1);
    }
  }
  cudaStreamDestroy(stream);
}

// Not an assertion: which GELU the epilogue computes. Pre-activations spread
// over [-5, 3] (the bias walks the columns, the product stays small); below
// -1 the tanh and erf forms differ by 0.1% to 10% of the value, above that
// fp16 rounding hides the difference.
TEST(LtGemmTest, PrintGeluForm) {
  GANTRY_REQUIRE_GPU();
  std::unique_ptr<LtGemm> gemm = MakeGemm();
  ASSERT_NE(gemm, nullptr);
  Operands o = MakeOperands(DType::kFloat16, 64, 256, 64);
  for (int64_t j = 0; j < o.n; ++j) {
    o.bias[j] = RoundTo(o.dtype, -5.0f + 8.0f * static_cast<float>(j) / static_cast<float>(o.n - 1));
  }
  o.d_bias = UploadAs(o.dtype, o.bias);
  const std::vector<double> product = Product(o);
  const std::vector<float> y = RunGemm(*gemm, ArgsFor(o, /*bias=*/true, LtEpilogue::kGelu));
  ASSERT_EQ(y.size(), product.size());
  const std::vector<double> tanh_form = Expected(o, product, true, LtEpilogue::kGelu, /*erf_gelu=*/false);
  const std::vector<double> erf_form = Expected(o, product, true, LtEpilogue::kGelu, /*erf_gelu=*/true);
  std::vector<float> tail;
  std::vector<double> tail_tanh, tail_erf;
  for (int64_t i = 0; i < o.m; ++i) {
    for (int64_t j = 0; j < o.n; ++j) {
      if (product[i * o.n + j] + o.bias[j] >= -1.0) continue;
      tail.push_back(y[i * o.n + j]);
      tail_tanh.push_back(tanh_form[i * o.n + j]);
      tail_erf.push_back(erf_form[i * o.n + j]);
    }
  }
  EXPECT_LT(RelativeError(y, tanh_form), RelativeTolerance(o.dtype, LtEpilogue::kGelu));
  std::printf("[ GELU ] cuBLASLt GELU epilogue, fp16, relative error below -1 (%zu elements): %.2e against the tanh "
              "form, %.2e against the erf form; overall %.2e and %.2e\n",
              tail.size(), RelativeError(tail, tail_tanh), RelativeError(tail, tail_erf),
              RelativeError(y, tanh_form), RelativeError(y, erf_form));
}

// Not an assertion: the encoder's products (bge-m3, fp16, 16,384 tokens;
// every Linear has a bias, the up projection is followed by GELU) with the
// heuristic's first algorithm and with the tuned one, on random operands
// (constant ones draw less power and let the clocks run higher).
TEST(LtGemmTest, PrintTimes) {
  GANTRY_REQUIRE_GPU();
  std::unique_ptr<LtGemm> gemm = MakeGemm();
  ASSERT_NE(gemm, nullptr);
  struct Shape {
    int64_t n, k;
    LtEpilogue epilogue;
    const char* name;
  };
  const Shape shapes[] = {{3072, 1024, LtEpilogue::kNone, "qkv"},
                          {1024, 1024, LtEpilogue::kNone, "o"},
                          {4096, 1024, LtEpilogue::kGelu, "up+gelu"},
                          {1024, 4096, LtEpilogue::kNone, "down"}};
  constexpr int64_t kM = 16384;
  constexpr int kWarmup = 3, kLaunches = 20;
  const DType dtype = DType::kFloat16;
  for (const Shape& s : shapes) {
    DeviceBuffer d_x = Upload(RandomWeightBytes(dtype, kM, s.k, 1));
    DeviceBuffer d_w = Upload(RandomWeightBytes(dtype, s.n, s.k, 2));
    DeviceBuffer d_bias = Upload(RandomWeightBytes(dtype, 1, s.n, 3));
    DeviceBuffer d_y(static_cast<size_t>(kM * s.n) * 2);
    LtGemmArgs args;
    args.dtype = dtype;
    args.m = kM;
    args.n = s.n;
    args.k = s.k;
    args.x = d_x.get();
    args.w = d_w.get();
    args.bias = d_bias.get();
    args.epilogue = s.epilogue;
    args.y = d_y.get();
    auto run = [&](int) { return gemm->Run(args, nullptr).ok(); };
    gemm->autotune = false;
    const double us_first = MicrosecondsPerLaunch(kWarmup, kLaunches, run);
    gemm->autotune = true;
    const double us_tuned = MicrosecondsPerLaunch(kWarmup, kLaunches, run);  // the first warm-up call tunes
    ASSERT_GT(us_first, 0);
    ASSERT_GT(us_tuned, 0);
    const double flops = 2.0 * static_cast<double>(kM) * static_cast<double>(s.n) * static_cast<double>(s.k);
    const std::optional<int> rank = gemm->TunedAlgorithm(args);
    std::printf("[ PERF ] LtGemm %s %lld x %lld x %lld %s: heuristic's first %.1f TFLOP/s (%.1f us), tuned %.1f "
                "TFLOP/s (%.1f us, candidate #%d), %+.1f%%\n",
                DTypeName(dtype), static_cast<long long>(kM), static_cast<long long>(s.n),
                static_cast<long long>(s.k), s.name, flops / (us_first * 1e-6) / 1e12, us_first,
                flops / (us_tuned * 1e-6) / 1e12, us_tuned, rank.value_or(-1), 100.0 * (us_first / us_tuned - 1.0));
  }
}

// Host-side checks: no GPU needed (nothing is launched).
TEST(LtGemmTest, BucketsMByPowersOfTwo) {
  EXPECT_EQ(LtGemmBucketM(1), 1);
  EXPECT_EQ(LtGemmBucketM(2), 2);
  EXPECT_EQ(LtGemmBucketM(3), 4);
  EXPECT_EQ(LtGemmBucketM(33), 64);
  EXPECT_EQ(LtGemmBucketM(64), 64);
  EXPECT_EQ(LtGemmBucketM(65), 128);
  EXPECT_EQ(LtGemmBucketM(16384), 16384);
  EXPECT_EQ(LtGemmBucketM(16385), 32768);
  EXPECT_EQ(LtGemmBucketM((int64_t{1} << 31) - 1), int64_t{1} << 31);
}

TEST(LtGemmTest, RejectsInvalidArguments) {
  alignas(256) static uint8_t x[64], w[256], bias[64], y[64], residual[64];
  LtGemmArgs args;
  args.dtype = DType::kBFloat16;
  args.m = 2;
  args.n = 8;
  args.k = 8;
  args.x = x;  // 2 x 8 bf16: 32 bytes
  args.w = w;  // 8 x 8: 128 bytes
  args.bias = bias;
  args.y = y;  // 2 x 8: 32 bytes
  EXPECT_TRUE(CheckLtGemmArgs(args).ok()) << CheckLtGemmArgs(args);
  args.dtype = DType::kFloat16;
  args.epilogue = LtEpilogue::kGelu;
  EXPECT_TRUE(CheckLtGemmArgs(args).ok()) << CheckLtGemmArgs(args);
  args.bias = nullptr;
  EXPECT_TRUE(CheckLtGemmArgs(args).ok()) << CheckLtGemmArgs(args);
  LtGemmArgs with_residual = args;
  with_residual.epilogue = LtEpilogue::kNone;
  with_residual.bias = bias;
  with_residual.residual = residual;  // 2 x 8: 32 bytes
  EXPECT_TRUE(CheckLtGemmArgs(with_residual).ok()) << CheckLtGemmArgs(with_residual);
  with_residual.residual = x;  // only read, as x is: may overlap it
  EXPECT_TRUE(CheckLtGemmArgs(with_residual).ok()) << CheckLtGemmArgs(with_residual);

  // Each change makes the arguments invalid, with a message naming what.
  auto expect_invalid = [&](const char* field, const LtGemmArgs& bad) {
    const absl::Status status = CheckLtGemmArgs(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field << ": " << status;
    EXPECT_NE(status.message().find(field), std::string::npos) << "message does not name " << field << ": " << status;
  };
  auto with = [&](auto change) {
    LtGemmArgs bad = args;
    change(bad);
    return bad;
  };
  expect_invalid("float32", with([](LtGemmArgs& a) { a.dtype = DType::kFloat32; }));
  expect_invalid("dtype", with([](LtGemmArgs& a) { a.dtype = static_cast<DType>(9); }));
  expect_invalid("m 0", with([](LtGemmArgs& a) { a.m = 0; }));
  expect_invalid("n -8", with([](LtGemmArgs& a) { a.n = -8; }));
  expect_invalid("k 0", with([](LtGemmArgs& a) { a.k = 0; }));
  expect_invalid("m 2147483648", with([](LtGemmArgs& a) { a.m = int64_t{1} << 31; }));
  expect_invalid("n 12", with([](LtGemmArgs& a) { a.n = 12; }));
  expect_invalid("k 4", with([](LtGemmArgs& a) { a.k = 4; }));
  expect_invalid("epilogue", with([](LtGemmArgs& a) { a.epilogue = static_cast<LtEpilogue>(7); }));
  expect_invalid("x, w and y", with([](LtGemmArgs& a) { a.x = nullptr; }));
  expect_invalid("x, w and y", with([](LtGemmArgs& a) { a.w = nullptr; }));
  expect_invalid("x, w and y", with([](LtGemmArgs& a) { a.y = nullptr; }));
  expect_invalid("x is not 16-byte aligned", with([](LtGemmArgs& a) { a.x = x + 8; }));
  expect_invalid("w is not 16-byte aligned", with([](LtGemmArgs& a) { a.w = w + 2; }));
  expect_invalid("y is not 16-byte aligned", with([](LtGemmArgs& a) { a.y = y + 4; }));
  expect_invalid("bias is not 16-byte aligned", with([](LtGemmArgs& a) { a.bias = bias + 8; }));
  expect_invalid("y overlaps x", with([](LtGemmArgs& a) { a.y = x; }));
  expect_invalid("y overlaps x", with([](LtGemmArgs& a) { a.y = x + 16; }));  // partly
  expect_invalid("y overlaps w", with([](LtGemmArgs& a) { a.y = w + 112; }));  // its last 16 bytes
  expect_invalid("y overlaps bias", with([](LtGemmArgs& a) { a.bias = y + 16; }));  // inside y's 32 bytes
  // args has a GELU epilogue here; a residual needs none.
  expect_invalid("GELU", with([](LtGemmArgs& a) { a.residual = residual; }));
  expect_invalid("residual is not 16-byte aligned", with([](LtGemmArgs& a) {
                   a.epilogue = LtEpilogue::kNone;
                   a.residual = residual + 8;
                 }));
  expect_invalid("y overlaps residual", with([](LtGemmArgs& a) {
                   a.epilogue = LtEpilogue::kNone;
                   a.residual = y;  // in place
                 }));
  expect_invalid("y overlaps residual", with([](LtGemmArgs& a) {
                   a.epilogue = LtEpilogue::kNone;
                   a.residual = y + 16;  // partly
                 }));
  // Adjacent buffers do not overlap.
  LtGemmArgs adjacent = args;
  adjacent.x = w;       // [0, 32) of w
  adjacent.y = w + 32;  // [32, 64)
  adjacent.w = w + 64;  // [64, 192)
  adjacent.bias = w + 192;  // [192, 208)
  EXPECT_TRUE(CheckLtGemmArgs(adjacent).ok()) << CheckLtGemmArgs(adjacent);
  adjacent.epilogue = LtEpilogue::kNone;
  adjacent.residual = w + 224;  // [224, 256), after y's [32, 64)
  EXPECT_TRUE(CheckLtGemmArgs(adjacent).ok()) << CheckLtGemmArgs(adjacent);
}

}  // namespace
}  // namespace gantry::cuda
