// SiluMul (runtime/cuda/activation.cu) against a double-precision CPU
// reference that rounds silu(gate) to the storage type before the product, as
// transformers' act_fn(gate) * up does. Gates include large magnitudes
// (+-30: silu saturates to the gate or to ~0) besides the usual range.
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

// One SiluMul call on random data; `offset` shifts both buffers by that many
// elements from cudaMalloc's alignment (forcing the scalar path).
void CheckSiluMul(DType dtype, int64_t rows, int64_t dim, int offset = 0) {
  const std::string what = absl::StrCat(DTypeName(dtype), " rows=", rows, " dim=", dim, " offset=", offset);
  std::mt19937 rng(static_cast<uint32_t>(rows * 131 + dim + offset));
  const size_t n = static_cast<size_t>(rows * dim);
  std::vector<float> gate_up = RandomValues(rng, dtype, 2 * n + offset, -6.0f, 6.0f);
  // Saturated gates, in both halves of the vectors.
  const float extremes[] = {-30.0f, 30.0f, -12.0f, 12.0f};
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t d = r % 13; d < dim; d += 13) gate_up[offset + r * 2 * dim + d] = extremes[(r + d) % 4];
  }

  std::vector<double> expected(n);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t d = 0; d < dim; ++d) {
      const double g = gate_up[offset + r * 2 * dim + d], u = gate_up[offset + r * 2 * dim + dim + d];
      expected[r * dim + d] = Store(dtype, Store(dtype, g / (1.0 + std::exp(-g))) * u);
    }
  }

  const size_t es = ElementSize(dtype);
  DeviceBuffer d_gate_up = UploadAs(dtype, gate_up);
  DeviceBuffer d_output((n + offset) * es);
  d_output.Poison();

  SiluMulArgs args;
  args.dtype = dtype;
  args.rows = rows;
  args.dim = dim;
  args.gate_up = d_gate_up.as<uint8_t>() + offset * es;
  args.output = d_output.as<uint8_t>() + offset * es;
  ASSERT_TRUE(SiluMul(args, nullptr).ok()) << what;
  Sync();

  std::vector<float> output = DownloadAs(dtype, d_output, n + offset);
  output.erase(output.begin(), output.begin() + offset);
  ExpectRoundedMatch(dtype, kFloat32Tolerance, output, expected, what);
}

TEST(SiluMulTest, MatchesReference) {
  GANTRY_REQUIRE_GPU();
  // 14336: Llama 3 8B, 18944: Qwen2 7B; 176 and 256 small; 100 and 33 allow
  // no 16-byte vectors (the scalar path).
  for (DType dtype : AllDTypes()) {
    for (int64_t dim : {176, 256, 14336, 18944, 100, 33}) {
      for (int64_t rows : {1, 7, 64}) CheckSiluMul(dtype, rows, dim);
    }
  }
}

TEST(SiluMulTest, UnalignedPointersUseScalarPath) {
  GANTRY_REQUIRE_GPU();
  for (DType dtype : AllDTypes()) CheckSiluMul(dtype, 5, 4096, /*offset=*/1);
}

TEST(SiluMulTest, RejectsInvalidArguments) {
  GANTRY_REQUIRE_GPU();
  DeviceBuffer gate_up(1024), output(1024);
  SiluMulArgs args;
  args.rows = 1;
  args.dim = 0;
  args.gate_up = gate_up.get();
  args.output = output.get();
  EXPECT_EQ(SiluMul(args, nullptr).code(), absl::StatusCode::kInvalidArgument);

  args.dim = 16;
  args.output = nullptr;
  EXPECT_EQ(SiluMul(args, nullptr).code(), absl::StatusCode::kInvalidArgument);

  args.output = output.get();
  args.rows = -1;
  EXPECT_EQ(SiluMul(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gantry::cuda
