// RmsNorm, AddLayerNorm and EmbedLayerNorm (runtime/cuda/norm.cu) against a
// double-precision CPU reference that rounds to the storage type exactly where
// the kernel (and transformers) does: the residual sum, the embedding sums,
// RmsNorm's normalised value, and the output. 16-bit
// results must then match the reference to rounding: a small relative error,
// and nearly every element bit-identical (a misplaced rounding point shows up
// as thousands of 1-ulp differences).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
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
using ::gantry::cuda::testing::ExpectRoundedMatch;
using ::gantry::cuda::testing::Store;
using ::gantry::cuda::testing::RandomValues;
using ::gantry::cuda::testing::RelativeError;
using ::gantry::cuda::testing::RoundTo;
using ::gantry::cuda::testing::Sync;
using ::gantry::cuda::testing::Upload;
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

// LayerNorm of the row s as the kernels compute it (the mean, then the
// variance about it), each output rounded to dtype, into out[0, s.size()).
void ReferenceLayerNorm(DType dtype, const std::vector<double>& s, const std::vector<float>& weight,
                        const std::vector<float>& bias, float eps, double* out) {
  const size_t dim = s.size();
  double sum = 0;
  for (double v : s) sum += v;
  const double mean = sum / dim;
  double squares = 0;
  for (double v : s) squares += (v - mean) * (v - mean);
  const double inv_std = 1.0 / std::sqrt(squares / dim + static_cast<double>(eps));
  for (size_t d = 0; d < dim; ++d) out[d] = Store(dtype, (s[d] - mean) * inv_std * weight[d] + bias[d]);
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
    for (int64_t d = 0; d < dim; ++d) {
      const size_t i = offset + r * dim + d;
      s[d] = with_residual ? Store(dtype, static_cast<double>(input[i]) + residual[i]) : input[i];
    }
    ReferenceLayerNorm(dtype, s, weight, bias, eps, &expected[r * dim]);
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

// Poisoned elements on either side of EmbedLayerNorm's output, which must
// keep their poison: 64 or 128 bytes, so the output stays 16-byte aligned.
constexpr int64_t kGuard = 32;

// One EmbedLayerNorm call: `batch` sequences of `length` random token ids
// over a vocabulary of 50, types 0/1 (with_types) or none (type row 0), and
// positions from position_offset, on a position table of exactly the rows
// that needs. The word rows carry a large common offset (mean 6, as
// CheckAddLayerNorm's rows), which a one-pass variance would lose to
// cancellation. `shift` moves the output that many elements off 16-byte
// alignment (forcing the loop path).
void CheckEmbedLayerNorm(DType dtype, int64_t batch, int64_t length, int64_t dim, int64_t position_offset,
                         bool with_types, int shift = 0) {
  constexpr int64_t kVocab = 50, kTypes = 2;
  const std::string what =
      absl::StrCat(DTypeName(dtype), " batch=", batch, " length=", length, " dim=", dim,
                   " position_offset=", position_offset, with_types ? " types" : " no types", " shift=", shift);
  std::mt19937 rng(static_cast<uint32_t>(batch * 1009 + length * 101 + dim * 13 + position_offset * 7 +
                                         (with_types ? 1 : 0) + shift * 3));
  const int64_t rows = batch * length, positions = length + position_offset;
  const size_t n = static_cast<size_t>(rows * dim);
  const float eps = position_offset == 0 ? 1e-12f : 1e-5f;  // BERT's, XLM-RoBERTa's
  const std::vector<float> word = RandomValues(rng, dtype, kVocab * dim, 5.0f, 7.0f);
  const std::vector<float> token_type = RandomValues(rng, dtype, kTypes * dim, -0.5f, 0.5f);
  const std::vector<float> position = RandomValues(rng, dtype, positions * dim, -1.0f, 1.0f);
  const std::vector<float> weight = RandomValues(rng, dtype, dim, -1.5f, 1.5f);
  const std::vector<float> bias = RandomValues(rng, dtype, dim, -0.5f, 0.5f);
  std::vector<int64_t> ids(rows), types(rows);
  std::uniform_int_distribution<int64_t> pick_id(0, kVocab - 1), pick_type(0, kTypes - 1);
  for (int64_t r = 0; r < rows; ++r) {
    ids[r] = pick_id(rng);
    types[r] = pick_type(rng);
  }
  ids[rows - 1] = kVocab - 1;  // the table's last row

  // transformers: (word + token type) first, then + position, each rounded.
  std::vector<double> expected(n), e(dim);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t type = with_types ? types[r] : 0, at = r % length + position_offset;
    for (int64_t d = 0; d < dim; ++d) {
      const double word_and_type =
          Store(dtype, static_cast<double>(word[ids[r] * dim + d]) + token_type[type * dim + d]);
      e[d] = Store(dtype, word_and_type + position[at * dim + d]);
    }
    ReferenceLayerNorm(dtype, e, weight, bias, eps, &expected[r * dim]);
  }

  const size_t es = ElementSize(dtype);
  DeviceBuffer d_ids = Upload(ids);
  DeviceBuffer d_types = Upload(types);
  DeviceBuffer d_word = UploadAs(dtype, word);
  DeviceBuffer d_token_type = UploadAs(dtype, token_type);
  DeviceBuffer d_position = UploadAs(dtype, position);
  DeviceBuffer d_weight = UploadAs(dtype, weight);
  DeviceBuffer d_bias = UploadAs(dtype, bias);
  DeviceBuffer d_output((n + 2 * kGuard + shift) * es);
  d_output.Poison();

  EmbedLayerNormArgs args;
  args.dtype = dtype;
  args.rows = rows;
  args.length = length;
  args.dim = dim;
  args.position_offset = position_offset;
  args.eps = eps;
  args.token_ids = d_ids.as<int64_t>();
  args.token_types = with_types ? d_types.as<int64_t>() : nullptr;
  args.word = d_word.get();
  args.position = d_position.get();
  args.token_type = d_token_type.get();
  args.weight = d_weight.get();
  args.bias = d_bias.get();
  args.output = d_output.as<uint8_t>() + (kGuard + shift) * es;
  ASSERT_TRUE(EmbedLayerNorm(args, nullptr).ok()) << what;
  Sync();

  const std::vector<uint8_t> bytes = Download<uint8_t>(d_output, d_output.bytes());
  const size_t begin = (kGuard + shift) * es, end = begin + n * es;
  EXPECT_EQ(std::count(bytes.begin(), bytes.begin() + begin, 0xFF), static_cast<ptrdiff_t>(begin))
      << what << ": written before the output";
  EXPECT_EQ(std::count(bytes.begin() + end, bytes.end(), 0xFF), static_cast<ptrdiff_t>(bytes.size() - end))
      << what << ": written past the output";
  const std::vector<float> output = Decode(dtype, std::vector<uint8_t>(bytes.begin() + begin, bytes.begin() + end));
  ExpectRoundedMatch(dtype, kFloat32Tolerance, output, expected, what);
}

TEST(EmbedLayerNormTest, MatchesReference) {
  GANTRY_REQUIRE_GPU();
  // Register path: 64, 768 and 1024 one vector per thread, 4096 and 8192
  // one and two (16-bit) or two and four (float32). Loop path: 100 (no
  // 16-byte vectors) and 20000 (past the registers).
  // Three sequences of 7 tokens, and a single token; BERT's positions from 0
  // and XLM-RoBERTa's from 2; with and without token types.
  for (DType dtype : AllDTypes()) {
    for (int64_t dim : {64, 100, 768, 1024, 4096, 8192, 20000}) {
      for (const auto& [batch, length] : {std::pair<int64_t, int64_t>{3, 7}, {1, 1}}) {
        for (int64_t position_offset : {0, 2}) {
          for (bool with_types : {false, true}) {
            CheckEmbedLayerNorm(dtype, batch, length, dim, position_offset, with_types);
          }
        }
      }
    }
  }
}

TEST(EmbedLayerNormTest, UnalignedOutputUsesLoopPath) {
  GANTRY_REQUIRE_GPU();
  for (DType dtype : AllDTypes()) {
    CheckEmbedLayerNorm(dtype, 3, 7, 1024, 2, /*with_types=*/true, /*shift=*/1);
  }
}

// No GPU needed below: these calls fail their checks, or have no rows, before
// anything is launched, so the pointers are never read.

TEST(EmbedLayerNormTest, ZeroRowsIsANoOp) {
  EmbedLayerNormArgs args;  // every pointer null
  args.length = 7;
  args.dim = 768;
  EXPECT_TRUE(EmbedLayerNorm(args, nullptr).ok());
}

TEST(EmbedLayerNormTest, RejectsInvalidArguments) {
  alignas(16) static uint8_t memory[1024];
  EmbedLayerNormArgs valid;
  valid.rows = 6;
  valid.length = 3;
  valid.dim = 16;
  valid.token_ids = reinterpret_cast<const int64_t*>(memory);
  valid.token_types = reinterpret_cast<const int64_t*>(memory + 64);
  valid.word = memory + 128;
  valid.position = memory + 256;
  valid.token_type = memory + 384;
  valid.weight = memory + 512;
  valid.bias = memory + 640;
  valid.output = memory + 768;
  // Each case changes one field; the error must name what is wrong.
  auto expect_invalid = [&](const EmbedLayerNormArgs& args, const std::string& names) {
    const absl::Status status = EmbedLayerNorm(args, nullptr);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << names;
    EXPECT_NE(std::string(status.message()).find(names), std::string::npos) << status.message();
  };
  EmbedLayerNormArgs args = valid;
  args.dtype = static_cast<DType>(7);
  expect_invalid(args, "dtype");
  args = valid;
  args.dim = 0;
  expect_invalid(args, "shape");
  args = valid;
  args.rows = -1;
  expect_invalid(args, "shape");
  args = valid;
  args.length = 0;
  expect_invalid(args, "length");
  args = valid;
  args.rows = 7;  // not batch * length
  expect_invalid(args, "length");
  args = valid;
  args.position_offset = -1;
  expect_invalid(args, "position_offset");
  args = valid;
  args.eps = -1.0f;
  expect_invalid(args, "eps");
  args = valid;
  args.eps = NAN;
  expect_invalid(args, "eps");
  // Each pointer but token_types (which may be null) cleared in turn.
  const std::vector<void (*)(EmbedLayerNormArgs&)> clear_one = {
      [](EmbedLayerNormArgs& a) { a.token_ids = nullptr; },  [](EmbedLayerNormArgs& a) { a.word = nullptr; },
      [](EmbedLayerNormArgs& a) { a.position = nullptr; },   [](EmbedLayerNormArgs& a) { a.token_type = nullptr; },
      [](EmbedLayerNormArgs& a) { a.weight = nullptr; },     [](EmbedLayerNormArgs& a) { a.bias = nullptr; },
      [](EmbedLayerNormArgs& a) { a.output = nullptr; },
  };
  for (auto clear : clear_one) {
    args = valid;
    clear(args);
    expect_invalid(args, "must be set");
  }
  args = valid;
  args.output = memory + 128;  // the word table
  expect_invalid(args, "aliases");
}

}  // namespace
}  // namespace gantry::cuda
