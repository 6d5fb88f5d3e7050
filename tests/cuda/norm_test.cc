// RmsNorm and AddLayerNorm (runtime/cuda/norm.cu) against a double-precision
// CPU reference that rounds to the storage type exactly where the kernel (and
// transformers) does: the residual sum, RmsNorm's normalised value, and the
// output. 16-bit
// results must then match the reference to rounding: a small relative error,
// and nearly every element bit-identical (a misplaced rounding point shows up
// as thousands of 1-ulp differences).
#include <cmath>
#include <cstdint>
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
using ::gantry::cuda::testing::DeviceBuffer;
using ::gantry::cuda::testing::DownloadAs;
using ::gantry::cuda::testing::ElementSize;
using ::gantry::cuda::testing::ExpectRoundedMatch;
using ::gantry::cuda::testing::Store;
using ::gantry::cuda::testing::RandomValues;
using ::gantry::cuda::testing::RelativeError;
using ::gantry::cuda::testing::RoundTo;
using ::gantry::cuda::testing::Sync;
using ::gantry::cuda::testing::UploadAs;

// float32 results are held to this; 16-bit ones as ExpectRoundedMatch says.
constexpr double kFloat32Tolerance = 1e-6;

// One RmsNorm call on random data. `offset` shifts every row buffer by that
// many elements from cudaMalloc's alignment (forcing the scalar path).
void CheckRmsNorm(DType dtype, int64_t rows, int64_t dim, bool with_residual, float eps, int offset = 0) {
  const std::string what = absl::StrCat(DTypeName(dtype), " rows=", rows, " dim=", dim,
                                        with_residual ? " residual" : "", " offset=", offset);
  std::mt19937 rng(static_cast<uint32_t>(rows * 7919 + dim * 31 + (with_residual ? 1 : 0) + offset));
  const size_t n = static_cast<size_t>(rows * dim);
  // Padded by `offset` leading elements, which the kernel must not touch.
  std::vector<float> input = RandomValues(rng, dtype, n + offset, -2.0f, 2.0f);
  std::vector<float> residual = RandomValues(rng, dtype, n + offset, -2.0f, 2.0f);
  const std::vector<float> weight = RandomValues(rng, dtype, dim, -1.5f, 1.5f);

  std::vector<double> expected(n), expected_residual(n);
  std::vector<double> s(dim);
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t d = 0; d < dim; ++d) {
      const size_t i = offset + r * dim + d;
      s[d] = with_residual ? Store(dtype, static_cast<double>(input[i]) + residual[i]) : input[i];
      expected_residual[r * dim + d] = s[d];
      sum += s[d] * s[d];
    }
    const double inv_rms = 1.0 / std::sqrt(sum / dim + static_cast<double>(eps));
    for (int64_t d = 0; d < dim; ++d) {
      expected[r * dim + d] = Store(dtype, weight[d] * Store(dtype, s[d] * inv_rms));
    }
  }

  const size_t es = ElementSize(dtype);
  DeviceBuffer d_input = UploadAs(dtype, input);
  DeviceBuffer d_residual = UploadAs(dtype, residual);
  DeviceBuffer d_weight = UploadAs(dtype, weight);
  DeviceBuffer d_output((n + offset) * es);
  d_output.Poison();

  RmsNormArgs args;
  args.dtype = dtype;
  args.rows = rows;
  args.dim = dim;
  args.eps = eps;
  args.input = d_input.as<uint8_t>() + offset * es;
  args.residual = with_residual ? d_residual.as<uint8_t>() + offset * es : nullptr;
  args.weight = d_weight.get();
  args.output = d_output.as<uint8_t>() + offset * es;
  ASSERT_TRUE(RmsNorm(args, nullptr).ok()) << what;
  Sync();

  std::vector<float> output = DownloadAs(dtype, d_output, n + offset);
  output.erase(output.begin(), output.begin() + offset);
  ExpectRoundedMatch(dtype, kFloat32Tolerance, output, expected, what + " output");
  std::vector<float> written_residual = DownloadAs(dtype, d_residual, n + offset);
  for (int i = 0; i < offset; ++i) EXPECT_EQ(written_residual[i], residual[i]) << what << " padding";
  written_residual.erase(written_residual.begin(), written_residual.begin() + offset);
  if (with_residual) {
    ExpectRoundedMatch(dtype, kFloat32Tolerance, written_residual, expected_residual, what + " residual");
  } else {
    // Not passed: must be left alone.
    EXPECT_EQ(written_residual, std::vector<float>(residual.begin() + offset, residual.end())) << what;
  }
}

TEST(RmsNormTest, MatchesReference) {
  GANTRY_REQUIRE_GPU();
  // 64/96: q/k-norm sized; 100: no 16-byte vectors; 4096/5120: Llama/Qwen
  // hidden sizes; 16384: the largest row held in registers in float32.
  for (DType dtype : AllDTypes()) {
    for (int64_t dim : {64, 96, 100, 4096, 5120, 16384}) {
      for (int64_t rows : {1, 3, 64, 300}) {
        for (bool with_residual : {false, true}) {
          CheckRmsNorm(dtype, rows, dim, with_residual, 1e-6f);
        }
      }
    }
  }
}

TEST(RmsNormTest, OddAndVeryLargeDims) {
  GANTRY_REQUIRE_GPU();
  // 5001: scalar path looping over the row; 12288 and 24576: register path
  // with 2-8 vectors per thread; 40000: rows too big for registers (streamed).
  for (DType dtype : AllDTypes()) {
    for (int64_t dim : {8, 5001, 12288, 24576, 40000}) {
      for (bool with_residual : {false, true}) {
        CheckRmsNorm(dtype, 3, dim, with_residual, 1e-5f);
      }
    }
  }
}

TEST(RmsNormTest, UnalignedPointersUseScalarPath) {
  GANTRY_REQUIRE_GPU();
  for (DType dtype : AllDTypes()) {
    for (bool with_residual : {false, true}) {
      CheckRmsNorm(dtype, 5, 4096, with_residual, 1e-6f, /*offset=*/1);
    }
  }
}

TEST(RmsNormTest, ZeroRowsIsANoOp) {
  GANTRY_REQUIRE_GPU();
  DeviceBuffer buffer(64);
  RmsNormArgs args;
  args.rows = 0;
  args.dim = 16;
  args.input = buffer.get();
  args.weight = buffer.get();
  args.output = buffer.as<uint8_t>() + 32;
  EXPECT_TRUE(RmsNorm(args, nullptr).ok());
}

TEST(RmsNormTest, RejectsInvalidArguments) {
  GANTRY_REQUIRE_GPU();
  DeviceBuffer input(1024), weight(1024), output(1024);
  RmsNormArgs args;
  args.rows = 1;
  args.dim = 0;
  args.input = input.get();
  args.weight = weight.get();
  args.output = output.get();
  EXPECT_EQ(RmsNorm(args, nullptr).code(), absl::StatusCode::kInvalidArgument);

  args.dim = 16;
  args.output = input.get();  // aliases the input
  EXPECT_EQ(RmsNorm(args, nullptr).code(), absl::StatusCode::kInvalidArgument);

  args.output = output.get();
  args.weight = nullptr;
  EXPECT_EQ(RmsNorm(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

// Where AddLayerNorm writes its output.
enum class LayerNormOut { kOwnBuffer, kOverInput, kOverResidual };

// One AddLayerNorm call on random data; `offset` as in CheckRmsNorm. The
// rows get a large common offset (mean 6, spread 1) as a hidden state can
// have, which a one-pass variance would lose to cancellation.
// with_residual = false: residual is nullptr, a plain LayerNorm of input.
void CheckAddLayerNorm(DType dtype, int64_t rows, int64_t dim, float eps, LayerNormOut where, int offset = 0,
                       bool with_residual = true) {
  const std::string what = absl::StrCat(DTypeName(dtype), " rows=", rows, " dim=", dim, " out=",
                                        static_cast<int>(where), " offset=", offset,
                                        with_residual ? "" : " no residual");
  std::mt19937 rng(static_cast<uint32_t>(rows * 131 + dim * 17 + static_cast<int>(where) * 7 + offset));
  const size_t n = static_cast<size_t>(rows * dim);
  std::vector<float> input = RandomValues(rng, dtype, n + offset, 5.0f, 7.0f);
  std::vector<float> residual = RandomValues(rng, dtype, n + offset, -1.0f, 1.0f);
  const std::vector<float> weight = RandomValues(rng, dtype, dim, -1.5f, 1.5f);
  const std::vector<float> bias = RandomValues(rng, dtype, dim, -0.5f, 0.5f);

  std::vector<double> expected(n), s(dim);
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t d = 0; d < dim; ++d) {
      const size_t i = offset + r * dim + d;
      s[d] = with_residual ? Store(dtype, static_cast<double>(input[i]) + residual[i]) : input[i];
      sum += s[d];
    }
    const double mean = sum / dim;
    double squares = 0;
    for (int64_t d = 0; d < dim; ++d) squares += (s[d] - mean) * (s[d] - mean);
    const double inv_std = 1.0 / std::sqrt(squares / dim + static_cast<double>(eps));
    for (int64_t d = 0; d < dim; ++d) {
      expected[r * dim + d] = Store(dtype, (s[d] - mean) * inv_std * weight[d] + bias[d]);
    }
  }

  const size_t es = ElementSize(dtype);
  DeviceBuffer d_input = UploadAs(dtype, input);
  DeviceBuffer d_residual = UploadAs(dtype, residual);
  DeviceBuffer d_weight = UploadAs(dtype, weight);
  DeviceBuffer d_bias = UploadAs(dtype, bias);
  DeviceBuffer d_output((n + offset) * es);
  d_output.Poison();
  DeviceBuffer& written = where == LayerNormOut::kOverInput      ? d_input
                          : where == LayerNormOut::kOverResidual ? d_residual
                                                                 : d_output;

  AddLayerNormArgs args;
  args.dtype = dtype;
  args.rows = rows;
  args.dim = dim;
  args.eps = eps;
  args.input = d_input.as<uint8_t>() + offset * es;
  args.residual = with_residual ? d_residual.as<uint8_t>() + offset * es : nullptr;
  args.weight = d_weight.get();
  args.bias = d_bias.get();
  args.output = written.as<uint8_t>() + offset * es;
  ASSERT_TRUE(AddLayerNorm(args, nullptr).ok()) << what;
  Sync();

  std::vector<float> output = DownloadAs(dtype, written, n + offset);
  output.erase(output.begin(), output.begin() + offset);
  ExpectRoundedMatch(dtype, kFloat32Tolerance, output, expected, what);
  if (where != LayerNormOut::kOverResidual) {  // an operand it does not write is left alone
    EXPECT_EQ(DownloadAs(dtype, d_residual, n + offset), residual) << what;
  }
}

TEST(AddLayerNormTest, MatchesReference) {
  GANTRY_REQUIRE_GPU();
  // 768/1024: BERT-base/large hidden sizes; 100: no 16-byte vectors; 4096
  // and 8192: two and four vectors per thread; 20000: past the registers.
  for (DType dtype : AllDTypes()) {
    for (int64_t dim : {64, 100, 768, 1024, 4096, 8192, 20000}) {
      for (int64_t rows : {1, 3, 300}) {
        CheckAddLayerNorm(dtype, rows, dim, 1e-12f, LayerNormOut::kOwnBuffer);
      }
    }
  }
}

TEST(AddLayerNormTest, WritesInPlaceOverEitherOperand) {
  GANTRY_REQUIRE_GPU();
  for (DType dtype : AllDTypes()) {
    for (int64_t dim : {100, 1024, 20000}) {
      CheckAddLayerNorm(dtype, 65, dim, 1e-5f, LayerNormOut::kOverInput);
      CheckAddLayerNorm(dtype, 65, dim, 1e-5f, LayerNormOut::kOverResidual);
    }
  }
}

// residual == nullptr (the sum already made in a product's epilogue): a
// plain LayerNorm of input, on the register path (64, 1024, 8192: one, one
// and two to four vectors per thread) and the loop path (100: no vectors;
// 20000: past the registers; a misaligned input), also written over input.
TEST(AddLayerNormTest, WithoutResidualIsLayerNormOfInput) {
  GANTRY_REQUIRE_GPU();
  for (DType dtype : AllDTypes()) {
    for (int64_t dim : {64, 100, 1024, 8192, 20000}) {
      for (int64_t rows : {1, 300}) {
        CheckAddLayerNorm(dtype, rows, dim, 1e-12f, LayerNormOut::kOwnBuffer, /*offset=*/0, /*with_residual=*/false);
      }
      CheckAddLayerNorm(dtype, 65, dim, 1e-5f, LayerNormOut::kOverInput, /*offset=*/0, /*with_residual=*/false);
    }
    CheckAddLayerNorm(dtype, 5, 1024, 1e-12f, LayerNormOut::kOwnBuffer, /*offset=*/1, /*with_residual=*/false);
  }
}

TEST(AddLayerNormTest, UnalignedPointersUseScalarPath) {
  GANTRY_REQUIRE_GPU();
  for (DType dtype : AllDTypes()) CheckAddLayerNorm(dtype, 5, 1024, 1e-12f, LayerNormOut::kOwnBuffer, /*offset=*/1);
}

TEST(AddLayerNormTest, RejectsInvalidArguments) {
  GANTRY_REQUIRE_GPU();
  DeviceBuffer buffer(4096);
  AddLayerNormArgs args;
  args.rows = 2;
  args.dim = 16;
  args.input = buffer.get();
  args.residual = buffer.as<uint8_t>() + 256;
  args.weight = buffer.as<uint8_t>() + 512;
  args.bias = buffer.as<uint8_t>() + 768;
  args.output = buffer.as<uint8_t>() + 1024;
  EXPECT_TRUE(AddLayerNorm(args, nullptr).ok());
  Sync();
  args.residual = nullptr;  // allowed: a plain LayerNorm
  EXPECT_TRUE(AddLayerNorm(args, nullptr).ok());
  Sync();
  args.residual = buffer.as<uint8_t>() + 256;
  args.input = nullptr;
  EXPECT_EQ(AddLayerNorm(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
  args.input = buffer.get();
  args.bias = nullptr;
  EXPECT_EQ(AddLayerNorm(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
  args.bias = buffer.as<uint8_t>() + 768;
  args.dim = 0;
  EXPECT_EQ(AddLayerNorm(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
  args.dim = 16;
  args.eps = -1.0f;
  EXPECT_EQ(AddLayerNorm(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gantry::cuda
