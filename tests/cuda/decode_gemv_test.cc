// DecodeGemv (runtime/cuda/decode_gemv.cu) against a double-precision CPU
// reference that rounds where the kernel (and transformers) round: the
// normalised input, the product plus bias, then the epilogue (residual add,
// SiLU(gate) * up, or the widening to float32). Covers both 16-bit dtypes,
// every output and the fused RMSNorm on small and odd shapes (k not a
// multiple of a stage, n odd or not a multiple of 16, one weight row) with
// 1, 3 and 4 input rows, the Llama 3 8B shapes, batch invariance (each row
// bitwise as alone), the same bits with weights prefetched into L2, argument errors (checked on the host, so they run
// without a GPU too), and prints the bandwidth each 8B shape reaches at 1 to
// 4 rows. kRopeCache is checked bit for bit against kStore followed by
// RopeAndCacheWrite (rope_cache_test.cc checks that kernel against its own
// reference).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/cuda/kernels.h"
#include "tests/cuda/kernel_test_util.h"

namespace gantry::cuda {
namespace {

using ::gantry::cuda::testing::CheckedRows;
using ::gantry::cuda::testing::DeviceBuffer;
using ::gantry::cuda::testing::Download;
using ::gantry::cuda::testing::DownloadAs;
using ::gantry::cuda::testing::ElementSize;
using ::gantry::cuda::testing::MicrosecondsPerLaunch;
using ::gantry::cuda::testing::Encode;
using ::gantry::cuda::testing::InverseFrequencies;
using ::gantry::cuda::testing::RandomValues;
using ::gantry::cuda::testing::RandomWeightBytes;
using ::gantry::cuda::testing::RelativeError;
using ::gantry::cuda::testing::Store;
using ::gantry::cuda::testing::Sync;
using ::gantry::cuda::testing::Upload;
using ::gantry::cuda::testing::UploadAs;
using ::gantry::cuda::testing::WeightRow;

struct Case {
  DType dtype = DType::kBFloat16;
  int64_t n = 0, k = 0;
  GemvOutput output = GemvOutput::kStore;
  bool norm = false;
  bool bias = false;
  int64_t rows = 1;
};

const char* OutputName(GemvOutput output) {
  switch (output) {
    case GemvOutput::kStore: return "store";
    case GemvOutput::kAddToResidual: return "add_to_residual";
    case GemvOutput::kSiluMul: return "silu_mul";
    case GemvOutput::kFloat32: return "float32";
    case GemvOutput::kRopeCache: return "rope_cache";
  }
  return "?";
}

std::string Describe(const Case& c) {
  return absl::StrCat(DTypeName(c.dtype), " rows=", c.rows, " n=", c.n, " k=", c.k, " ", OutputName(c.output),
                      c.norm ? " norm" : "", c.bias ? " bias" : "");
}

// Output elements of a row and their storage type.
int64_t OutputCount(const Case& c) { return c.output == GemvOutput::kSiluMul ? c.n / 2 : c.n; }
DType OutputType(const Case& c) { return c.output == GemvOutput::kFloat32 ? DType::kFloat32 : c.dtype; }

// 16-bit outputs: one rounding of a float32 dot product against the double
// reference's; SiLU and the residual add round once more.
double RelativeTolerance(DType dtype) { return dtype == DType::kFloat16 ? 2e-3 : 8e-3; }

// A case's random inputs: x and the residual stream have `rows` rows.
struct Inputs {
  std::vector<uint8_t> weights;       // [n, k] encoded
  std::vector<float> x;               // [rows, k]
  std::vector<float> norm_weight;     // [k]
  std::vector<float> bias;            // [n]
  std::vector<float> residual;        // [rows, n]
  float eps = 1e-5f;
};

uint64_t SeedOf(const Case& c) {
  return static_cast<uint64_t>(c.n * 7919 + c.k * 131 + static_cast<int>(c.output) * 17 + c.norm * 5 + c.bias +
                               static_cast<int>(c.dtype) * 1000003);
}

Inputs MakeInputs(const Case& c, const std::vector<uint8_t>* weights = nullptr) {
  const uint64_t seed = SeedOf(c);
  std::mt19937 rng(static_cast<uint32_t>(seed + 97 * c.rows));
  Inputs in;
  // The residual stream is larger than 1 (so the norm scales it), the norm
  // weight near 1 like a trained one.
  in.x = RandomValues(rng, c.dtype, static_cast<size_t>(c.rows * c.k), c.norm ? -4.0f : -1.0f, c.norm ? 4.0f : 1.0f);
  in.norm_weight = RandomValues(rng, c.dtype, static_cast<size_t>(c.k), 0.5f, 1.5f);
  in.bias = RandomValues(rng, c.dtype, static_cast<size_t>(c.n), -0.5f, 0.5f);
  in.residual = RandomValues(rng, c.dtype, static_cast<size_t>(c.rows * c.n), -1.0f, 1.0f);
  in.weights = weights != nullptr ? *weights : RandomWeightBytes(c.dtype, c.n, c.k, seed);
  return in;
}

// The case's arguments but its output, over the uploaded inputs.
DecodeGemvArgs ArgsFor(const Case& c, const Inputs& in, const DeviceBuffer& x, const DeviceBuffer& w,
                       const DeviceBuffer& norm_weight, const DeviceBuffer& bias) {
  DecodeGemvArgs args;
  args.dtype = c.dtype;
  args.rows = c.rows;
  args.n = c.n;
  args.k = c.k;
  args.w = w.get();
  args.bias = c.bias ? bias.get() : nullptr;
  args.x = x.get();
  args.norm_weight = c.norm ? norm_weight.get() : nullptr;
  args.eps = in.eps;
  return args;
}

// Runs DecodeGemv on the case; returns y [rows, outputs] as floats, having
// checked that nothing past it was written.
std::vector<float> RunDecodeGemv(const Case& c, const Inputs& in, int l2_prefetch_units = 0) {
  const std::string what = Describe(c);
  DeviceBuffer d_x = UploadAs(c.dtype, in.x), d_w = Upload(in.weights), d_norm = UploadAs(c.dtype, in.norm_weight),
               d_bias = UploadAs(c.dtype, in.bias);
  const DType out_type = OutputType(c);
  const int64_t out_count = c.rows * OutputCount(c);
  constexpr int64_t kGuard = 64;  // elements after y that must stay as they were
  DeviceBuffer d_y((out_count + kGuard) * ElementSize(out_type));
  d_y.Poison();
  if (c.output == GemvOutput::kAddToResidual) {
    const std::vector<uint8_t> bytes = Encode(c.dtype, in.residual);
    EXPECT_EQ(cudaMemcpy(d_y.get(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  DecodeGemvArgs args = ArgsFor(c, in, d_x, d_w, d_norm, d_bias);
  args.output = c.output;
  args.y = d_y.get();
  args.l2_prefetch_units = l2_prefetch_units;
  const absl::Status status = DecodeGemv(args, nullptr);
  EXPECT_TRUE(status.ok()) << what << ": " << status;
  if (!status.ok()) return {};
  Sync();
  std::vector<float> y = DownloadAs(out_type, d_y, static_cast<size_t>(out_count + kGuard));
  for (int64_t i = out_count; i < out_count + kGuard; ++i) EXPECT_TRUE(std::isnan(y[i])) << what << ": wrote past y";
  y.resize(out_count);
  return y;
}

void CheckDecodeGemv(const Case& c, const std::vector<uint8_t>* weights = nullptr) {
  const std::string what = Describe(c);
  const Inputs in = MakeInputs(c, weights);
  const std::vector<float> y = RunDecodeGemv(c, in);
  ASSERT_EQ(static_cast<int64_t>(y.size()), c.rows * OutputCount(c)) << what;
  for (size_t i = 0; i < y.size(); ++i) ASSERT_TRUE(std::isfinite(y[i])) << what << ": y[" << i << "] = " << y[i];

  std::mt19937 rng(static_cast<uint32_t>(SeedOf(c)));
  std::vector<float> actual;
  std::vector<double> expected;
  for (int64_t r = 0; r < c.rows; ++r) {
    // Row r's input as the kernel multiplies it.
    const float* x = in.x.data() + r * c.k;
    std::vector<double> input(x, x + c.k);
    if (c.norm) {
      double squares = 0;
      for (int64_t i = 0; i < c.k; ++i) squares += static_cast<double>(x[i]) * x[i];
      const double inv_rms = 1.0 / std::sqrt(squares / static_cast<double>(c.k) + in.eps);
      for (int64_t i = 0; i < c.k; ++i) input[i] = Store(c.dtype, in.norm_weight[i] * Store(c.dtype, x[i] * inv_rms));
    }
    auto dot = [&](int64_t col) {
      const std::vector<float> w_row = WeightRow(c.dtype, in.weights, c.k, col);
      double sum = c.bias ? in.bias[col] : 0.0;
      for (int64_t i = 0; i < c.k; ++i) sum += input[i] * w_row[i];
      return Store(c.dtype, sum);
    };
    for (int64_t i : CheckedRows(OutputCount(c), rng)) {
      double value = 0;
      switch (c.output) {
        case GemvOutput::kStore:
        case GemvOutput::kFloat32: value = dot(i); break;
        case GemvOutput::kAddToResidual: value = Store(c.dtype, in.residual[r * c.n + i] + dot(i)); break;
        case GemvOutput::kSiluMul: {
          const double gate = dot(i), up = dot(i + c.n / 2);
          value = Store(c.dtype, Store(c.dtype, gate / (1.0 + std::exp(-gate))) * up);
          break;
        }
        case GemvOutput::kRopeCache: ADD_FAILURE() << "kRopeCache has its own check"; break;
      }
      expected.push_back(value);
      actual.push_back(y[r * OutputCount(c) + i]);
    }
  }
  EXPECT_LT(RelativeError(actual, expected), RelativeTolerance(c.dtype)) << what;
}

const std::vector<GemvOutput>& AllOutputs() {
  static const std::vector<GemvOutput> all = {GemvOutput::kStore, GemvOutput::kAddToResidual, GemvOutput::kSiluMul,
                                               GemvOutput::kFloat32};
  return all;
}

TEST(DecodeGemvTest, SmallShapesEveryOutput) {
  GANTRY_REQUIRE_GPU();
  // (n, k): test-model projections, one chunk (k = 2048: 256 vectors), k
  // ending inside a chunk (264, 2056, 3000 rounded to 8), odd n, n = 2.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {64, 64}, {176, 64}, {512, 96}, {2, 8}, {96, 256}, {33, 264}, {40, 2048}, {24, 2056}, {300, 4096}, {18, 3000},
  };
  for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
    for (const auto& [n, k] : shapes) {
      for (GemvOutput output : AllOutputs()) {
        if (output == GemvOutput::kSiluMul && n % 2 != 0) continue;
        for (bool norm : {false, true}) {
          for (bool bias : {false, true}) {
            for (int64_t rows : {1, 3, 4}) CheckDecodeGemv({dtype, n, k, output, norm, bias, rows});
          }
        }
      }
    }
  }
}

// Llama 3 8B at batch 1, as the decode step uses them: qkv after the input
// norm, o into the residual, gate/up after the post-attention norm with
// SiLU, down into the residual, lm_head after the final norm to float32.
struct ModelShape {
  int64_t n, k;
  GemvOutput output;
  bool norm;
};
const std::vector<ModelShape>& ModelShapes() {
  static const std::vector<ModelShape> shapes = {{6144, 4096, GemvOutput::kStore, true},
                                                 {4096, 4096, GemvOutput::kAddToResidual, false},
                                                 {28672, 4096, GemvOutput::kSiluMul, true},
                                                 {4096, 14336, GemvOutput::kAddToResidual, false},
                                                 {128256, 4096, GemvOutput::kFloat32, true}};
  return shapes;
}

TEST(DecodeGemvTest, ModelShapesBf16) {
  GANTRY_REQUIRE_GPU();
  for (const ModelShape& s : ModelShapes()) {
    const std::vector<uint8_t> weights =
        RandomWeightBytes(DType::kBFloat16, s.n, s.k, static_cast<uint64_t>(s.n + s.k));
    for (int64_t rows : {1, 4}) {
      CheckDecodeGemv({DType::kBFloat16, s.n, s.k, s.output, s.norm, /*bias=*/s.n == 6144, rows}, &weights);
    }
  }
}

// Batch invariance: each row of a many-row call is bit for bit what the
// kernel gives for that row alone, for every row count and output, with k
// small and large (a normalised k = 32768 input fills shared memory at one
// row, so 4 rows take four launches).
TEST(DecodeGemvTest, EachRowIsWhatItIsAlone) {
  GANTRY_REQUIRE_GPU();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{96, 264}, {300, 4096}, {40, 32768}};
  for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
    for (const auto& [n, k] : shapes) {
      for (GemvOutput output : AllOutputs()) {
        for (int64_t rows = 2; rows <= kDecodeGemvMaxRows; ++rows) {
          const Case batch{dtype, n, k, output, /*norm=*/output != GemvOutput::kAddToResidual, /*bias=*/true, rows};
          const Inputs in = MakeInputs(batch);
          const std::vector<float> together = RunDecodeGemv(batch, in);
          ASSERT_EQ(static_cast<int64_t>(together.size()), rows * OutputCount(batch)) << Describe(batch);
          for (int64_t r = 0; r < rows; ++r) {
            Case one = batch;
            one.rows = 1;
            Inputs alone = in;
            alone.x.assign(in.x.begin() + r * k, in.x.begin() + (r + 1) * k);
            alone.residual.assign(in.residual.begin() + r * n, in.residual.begin() + (r + 1) * n);
            const std::vector<float> y = RunDecodeGemv(one, alone);
            const int64_t width = OutputCount(batch);
            const std::vector<float> row(together.begin() + r * width, together.begin() + (r + 1) * width);
            ASSERT_EQ(y.size(), row.size());
            // Bitwise: memcmp also tells -0 from 0 and compares NaN payloads.
            EXPECT_EQ(std::memcmp(y.data(), row.data(), y.size() * sizeof(float)), 0)
                << Describe(batch) << ": row " << r << " differs from the same row alone";
          }
        }
      }
    }
  }
}

// Asking units into L2 before the dependency wait is a hint: the same bits
// for every output, whether a block has fewer units than asked or more.
TEST(DecodeGemvTest, L2PrefetchGivesTheSameBits) {
  GANTRY_REQUIRE_GPU();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{96, 264}, {300, 4096}, {4096, 4096}, {40, 32768}};
  for (DType dtype : {DType::kBFloat16, DType::kFloat16}) {
    for (const auto& [n, k] : shapes) {
      for (GemvOutput output : AllOutputs()) {
        for (int64_t rows : {1, 4}) {
          const Case c{dtype, n, k, output, /*norm=*/output != GemvOutput::kAddToResidual, /*bias=*/true, rows};
          const Inputs in = MakeInputs(c);
          const std::vector<float> plain = RunDecodeGemv(c, in);
          for (int units : {1, 2, kDecodeGemvMaxL2PrefetchUnits}) {
            const std::vector<float> prefetched = RunDecodeGemv(c, in, units);
            ASSERT_EQ(prefetched.size(), plain.size()) << Describe(c);
            EXPECT_EQ(std::memcmp(prefetched.data(), plain.data(), plain.size() * sizeof(float)), 0)
                << Describe(c) << ": " << units << " units prefetched change the result";
          }
        }
      }
    }
  }
}

// kRopeCache: the qkv product with RopeAndCacheWrite in its epilogue.
struct RopeCase {
  DType dtype = DType::kBFloat16;
  int heads = 0, kv_heads = 0, head_dim = 0;
  int64_t k = 0;
  int64_t rows = 1;
  bool norm = true, bias = false;
};

std::string Describe(const RopeCase& c) {
  return absl::StrCat(DTypeName(c.dtype), " rows=", c.rows, " heads=", c.heads, "/", c.kv_heads,
                      " head_dim=", c.head_dim, " k=", c.k, c.norm ? " norm" : "", c.bias ? " bias" : "");
}

// The product's part of a case: the qkv projection as kStore would take it.
Case AsCase(const RopeCase& c) {
  return {c.dtype, static_cast<int64_t>(c.heads + 2 * c.kv_heads) * c.head_dim, c.k, GemvOutput::kStore, c.norm,
          c.bias, c.rows};
}

// Where one way of computing a case leaves q and the caches (raw bytes).
struct RopeResult {
  std::vector<uint8_t> q, k_cache, v_cache;
};

// The case through kRopeCache (fused) or through kStore then
// RopeAndCacheWrite, from the same inputs and the same poisoned caches.
RopeResult RunRope(const RopeCase& c, const Inputs& in, bool fused) {
  const std::string what = absl::StrCat(Describe(c), fused ? " fused" : " apart");
  const int64_t n = AsCase(c).n;
  // Positions from 0 to past 100k (sincosf's slow path); row 1 maps to no
  // slot (a padded row), the others to scattered slots of 4 * rows.
  const std::vector<int32_t> all_positions = {5, 0, 131071, 4097};
  const std::vector<int64_t> all_slots = {3, -1, 14, 9};
  const std::vector<int32_t> positions(all_positions.begin(), all_positions.begin() + c.rows);
  const std::vector<int64_t> slots(all_slots.begin(), all_slots.begin() + c.rows);
  const int64_t num_slots = 16;
  const size_t cache_bytes = static_cast<size_t>(num_slots) * c.kv_heads * c.head_dim * ElementSize(c.dtype);
  const size_t q_bytes = static_cast<size_t>(c.rows) * c.heads * c.head_dim * ElementSize(c.dtype);

  DeviceBuffer d_x = UploadAs(c.dtype, in.x), d_w = Upload(in.weights), d_norm = UploadAs(c.dtype, in.norm_weight),
               d_bias = UploadAs(c.dtype, in.bias), d_positions = Upload(positions), d_slots = Upload(slots),
               d_inv_freq = Upload(InverseFrequencies(c.head_dim, 500000.0f));
  DeviceBuffer d_q(q_bytes), d_k(cache_bytes), d_v(cache_bytes), d_qkv(static_cast<size_t>(c.rows * n) * 2);
  d_q.Poison();
  d_k.Poison();
  d_v.Poison();

  RopeCacheArgs rope;
  rope.dtype = c.dtype;
  rope.num_tokens = c.rows;
  rope.num_heads = c.heads;
  rope.num_kv_heads = c.kv_heads;
  rope.head_dim = c.head_dim;
  rope.positions = d_positions.as<int32_t>();
  rope.slot_mapping = d_slots.as<int64_t>();
  rope.inv_freq = d_inv_freq.as<float>();
  rope.q_out = d_q.get();
  rope.k_cache = d_k.get();
  rope.v_cache = d_v.get();

  DecodeGemvArgs args = ArgsFor(AsCase(c), in, d_x, d_w, d_norm, d_bias);
  if (fused) {
    args.output = GemvOutput::kRopeCache;
    args.rope = &rope;
    const absl::Status status = DecodeGemv(args, nullptr);
    EXPECT_TRUE(status.ok()) << what << ": " << status;
  } else {
    args.output = GemvOutput::kStore;
    args.y = d_qkv.get();
    const absl::Status product = DecodeGemv(args, nullptr);
    EXPECT_TRUE(product.ok()) << what << ": " << product;
    rope.qkv = d_qkv.get();
    const absl::Status rotated = RopeAndCacheWrite(rope, nullptr);
    EXPECT_TRUE(rotated.ok()) << what << ": " << rotated;
  }
  Sync();
  return {Download<uint8_t>(d_q, q_bytes), Download<uint8_t>(d_k, cache_bytes), Download<uint8_t>(d_v, cache_bytes)};
}

void CheckRopeCache(const RopeCase& c) {
  const std::string what = Describe(c);
  const Inputs in = MakeInputs(AsCase(c));
  const RopeResult fused = RunRope(c, in, true), apart = RunRope(c, in, false);
  // Bitwise, caches and q alike; then that the comparison meant something:
  // q was written (no 0xFF left), and so were row 0's cache slots.
  EXPECT_TRUE(fused.q == apart.q) << what << ": q differs";
  EXPECT_TRUE(fused.k_cache == apart.k_cache) << what << ": the key cache differs";
  EXPECT_TRUE(fused.v_cache == apart.v_cache) << what << ": the value cache differs";
  const size_t slot_bytes = static_cast<size_t>(c.kv_heads) * c.head_dim * ElementSize(c.dtype);
  auto written = [](const uint8_t* p, size_t bytes) {
    for (size_t i = 0; i + 1 < bytes; i += 2) {
      if (p[i] == 0xFF && p[i + 1] == 0xFF) return false;
    }
    return true;
  };
  EXPECT_TRUE(written(fused.q.data(), fused.q.size())) << what << ": q not fully written";
  EXPECT_TRUE(written(fused.k_cache.data() + 3 * slot_bytes, slot_bytes)) << what << ": row 0's key not written";
  EXPECT_TRUE(written(fused.v_cache.data() + 3 * slot_bytes, slot_bytes)) << what << ": row 0's value not written";
}

TEST(DecodeGemvTest, RopeCacheIsStoreThenRope) {
  GANTRY_REQUIRE_GPU();
  // Head sizes 64 and 128 (and 16, one unit a head half), GQA ratios 1, 4
  // and 8; 1 to 4 rows; with and without the input norm and a bias (Qwen2);
  // the 8B shape at the end.
  const std::vector<RopeCase> cases = {
      {DType::kBFloat16, 4, 4, 64, 256}, {DType::kBFloat16, 8, 2, 128, 264}, {DType::kBFloat16, 16, 2, 64, 1024},
      {DType::kFloat16, 4, 4, 128, 512}, {DType::kFloat16, 8, 1, 16, 128},   {DType::kBFloat16, 32, 8, 128, 4096},
  };
  for (const RopeCase& base : cases) {
    for (int64_t rows = 1; rows <= kDecodeGemvMaxRows; ++rows) {
      for (bool bias : {false, true}) {
        RopeCase c = base;
        c.rows = rows;
        c.bias = bias;
        c.norm = !(bias && rows == 2);  // one plain input per shape
        CheckRopeCache(c);
      }
    }
  }
}

// Not an assertion: time per launch and weight bandwidth of the 8B shapes,
// back to back over 4 weight buffers in rotation (L2 cannot hold them
// between launches, as in a real step).
TEST(DecodeGemvTest, PrintBandwidth) {
  GANTRY_REQUIRE_GPU();
  constexpr int kBuffers = 4, kWarmup = 8, kLaunches = 50;
  std::mt19937 rng(7);
  for (const ModelShape& s : ModelShapes()) {
    const size_t w_bytes = static_cast<size_t>(s.n * s.k) * 2;
    std::vector<DeviceBuffer> weights;
    for (int b = 0; b < kBuffers; ++b) {
      weights.emplace_back(w_bytes);
      ASSERT_EQ(cudaMemset(weights.back().get(), 0x3C, w_bytes), cudaSuccess);  // bf16 0.0115
    }
    for (int64_t rows : {1, 2, 4}) {
      DeviceBuffer d_x = UploadAs(DType::kBFloat16, RandomValues(rng, DType::kBFloat16, rows * s.k));
      DeviceBuffer d_norm = UploadAs(DType::kBFloat16, RandomValues(rng, DType::kBFloat16, s.k, 0.5f, 1.5f));
      DeviceBuffer d_y(rows * s.n * 4);
      ASSERT_EQ(cudaMemset(d_y.get(), 0, rows * s.n * 4), cudaSuccess);
      DecodeGemvArgs args;
      args.dtype = DType::kBFloat16;
      args.rows = rows;
      args.n = s.n;
      args.k = s.k;
      args.x = d_x.get();
      args.norm_weight = s.norm ? d_norm.get() : nullptr;
      args.output = s.output;
      args.y = d_y.get();
      const double us = MicrosecondsPerLaunch(kWarmup, kLaunches, [&](int i) {
        args.w = weights[i % kBuffers].get();
        return DecodeGemv(args, nullptr).ok();
      });
      ASSERT_GT(us, 0);
      std::printf("[ PERF ] DecodeGemv %lld rows x %lld x %lld %s%s: %.1f us, %.0f GB/s of weights\n",
                  static_cast<long long>(rows), static_cast<long long>(s.n), static_cast<long long>(s.k),
                  OutputName(s.output), s.norm ? " norm" : "", us, static_cast<double>(w_bytes) / (us * 1e-6) / 1e9);
    }
  }
}

// Host-side checks: no GPU needed (nothing is launched).
TEST(DecodeGemvTest, RejectsInvalidArguments) {
  alignas(16) static uint8_t x[64], w[256], norm[64], y[64];
  DecodeGemvArgs args;
  args.dtype = DType::kBFloat16;
  args.n = 4;
  args.k = 16;
  args.x = x;
  args.w = w;
  args.y = y;
  auto code = [&] { return DecodeGemv(args, nullptr).code(); };

  args.dtype = DType::kFloat32;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(DecodeGemvSupports(DType::kFloat32, 4096));
  args.dtype = DType::kBFloat16;
  args.k = 12;  // not a multiple of 8
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);
  args.k = kDecodeGemvMaxK + 8;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);
  args.k = 16;
  args.n = 0;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);
  args.n = 4;
  args.rows = 0;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);
  args.rows = kDecodeGemvMaxRows + 1;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);
  args.rows = 1;
  args.n = 3;
  args.output = GemvOutput::kSiluMul;  // gate and up rows need an even n
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);
  args.n = 4;
  args.output = GemvOutput::kStore;
  args.x = x + 2;  // misaligned
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);
  args.x = x;
  args.norm_weight = norm + 8;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);
  args.norm_weight = nullptr;
  args.y = x;  // aliases x
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);
  args.y = y;
  for (int units : {-1, kDecodeGemvMaxL2PrefetchUnits + 1}) {
    args.l2_prefetch_units = units;
    const absl::Status status = DecodeGemv(args, nullptr);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << units;
    EXPECT_NE(status.message().find("l2_prefetch_units"), std::string::npos) << status;
  }
  args.l2_prefetch_units = 0;
  args.y = nullptr;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);

  // kRopeCache: rope set, y null, n the heads' rows, head_dim a multiple of
  // 16, no per-head norm, every destination set.
  alignas(16) static uint8_t w_rope[64 * 16 * 2], q[64], k_cache[64], v_cache[64], norms[64];
  static int32_t positions[1];
  static int64_t slots[1];
  static float inv_freq[8];
  RopeCacheArgs rope;
  rope.dtype = DType::kBFloat16;
  rope.num_tokens = 1;
  rope.num_heads = 2;
  rope.num_kv_heads = 1;
  rope.head_dim = 16;
  rope.positions = positions;
  rope.slot_mapping = slots;
  rope.inv_freq = inv_freq;
  rope.q_out = q;
  rope.k_cache = k_cache;
  rope.v_cache = v_cache;
  args.w = w_rope;
  args.n = 64;
  args.output = GemvOutput::kRopeCache;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);  // no rope
  args.rope = &rope;
  args.y = y;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);  // y set
  args.y = nullptr;
  args.n = 48;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);  // n is not (2 + 2 * 1) * 16
  args.n = 64;
  rope.head_dim = 8;
  args.n = 32;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);  // head_dim not a multiple of 16
  rope.head_dim = 16;
  args.n = 64;
  rope.q_norm = norms;
  rope.k_norm = norms;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);  // per-head norms are not fused
  rope.q_norm = rope.k_norm = nullptr;
  rope.num_tokens = 2;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);  // rows disagree
  rope.num_tokens = 1;
  rope.v_cache = nullptr;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);
  rope.v_cache = v_cache;
  rope.q_out = x;  // aliases the input
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);
  rope.q_out = q;
  rope.dtype = DType::kFloat16;
  EXPECT_EQ(code(), absl::StatusCode::kInvalidArgument);

  EXPECT_TRUE(DecodeGemvSupports(DType::kBFloat16, 4096));
  EXPECT_TRUE(DecodeGemvSupports(DType::kFloat16, 14336));
}

}  // namespace
}  // namespace gantry::cuda
