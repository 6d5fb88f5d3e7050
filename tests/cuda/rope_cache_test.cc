// RopeAndCacheWrite (runtime/cuda/rope_cache.cu) against a double-precision
// CPU reference that rounds to the storage type where transformers does: cos
// and sin, each product, the sum, and (Qwen3) the per-head norm's normalised
// value and weighted output. Checks q_out, k and v at their cache slots, and
// that slots no token maps to (and tokens with slot -1) leave the cache as it
// was.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
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
using ::gantry::cuda::testing::InverseFrequencies;
using ::gantry::cuda::testing::Store;
using ::gantry::cuda::testing::RandomValues;
using ::gantry::cuda::testing::RelativeError;
using ::gantry::cuda::testing::RoundTo;
using ::gantry::cuda::testing::Sync;
using ::gantry::cuda::testing::Upload;
using ::gantry::cuda::testing::UploadAs;

// float32 results are held to this; 16-bit ones as ExpectRoundedMatch says.
constexpr double kFloat32Tolerance = 1e-5;

struct RopeCase {
  int num_heads, num_kv_heads, head_dim;
  float theta;
  bool qk_norm;
  int num_tokens;
};

std::string Describe(DType dtype, const RopeCase& c) {
  return absl::StrCat(DTypeName(dtype), " heads=", c.num_heads, "/", c.num_kv_heads, " head_dim=", c.head_dim,
                      " theta=", c.theta, c.qk_norm ? " qk_norm" : "", " tokens=", c.num_tokens);
}

void CheckRope(DType dtype, const RopeCase& c) {
  const std::string what = Describe(dtype, c);
  std::mt19937 rng(static_cast<uint32_t>(c.num_heads * 1000 + c.num_kv_heads * 100 + c.head_dim + c.num_tokens));
  const int tokens = c.num_tokens, heads = c.num_heads, kv_heads = c.num_kv_heads, dim = c.head_dim;
  const int half = dim / 2;
  const int row = (heads + 2 * kv_heads) * dim;
  constexpr float kEps = 1e-6f;

  const std::vector<float> qkv = RandomValues(rng, dtype, static_cast<size_t>(tokens) * row, -2.0f, 2.0f);
  const std::vector<float> q_norm = RandomValues(rng, dtype, dim, 0.5f, 1.5f);
  const std::vector<float> k_norm = RandomValues(rng, dtype, dim, 0.5f, 1.5f);
  const std::vector<float> inv_freq = InverseFrequencies(dim, c.theta);

  // Positions 0, 1, and large ones (the top of a 128K context) first.
  std::vector<int32_t> positions(tokens);
  const int32_t fixed[] = {0, 1, 100000, 131071, 4095};
  std::uniform_int_distribution<int32_t> any_position(0, 131071);
  for (int t = 0; t < tokens; ++t) positions[t] = t < 5 ? fixed[t] : any_position(rng);

  // Distinct slots out of twice as many as tokens; every third token from the
  // second on is not written (-1), like a padding row.
  const int64_t block_size = 16;
  const int64_t num_slots = (2 * tokens + block_size - 1) / block_size * block_size;
  std::vector<int64_t> all_slots(num_slots);
  std::iota(all_slots.begin(), all_slots.end(), 0);
  std::shuffle(all_slots.begin(), all_slots.end(), rng);
  std::vector<int64_t> slot_mapping(tokens);
  for (int t = 0; t < tokens; ++t) slot_mapping[t] = (t % 3 == 1) ? -1 : all_slots[t];

  // The caches start with a known pattern; the kernel writes only mapped slots.
  const size_t cache_elements = static_cast<size_t>(num_slots) * kv_heads * dim;
  const std::vector<float> k_cache_before = RandomValues(rng, dtype, cache_elements, -8.0f, 8.0f);
  const std::vector<float> v_cache_before = RandomValues(rng, dtype, cache_elements, -8.0f, 8.0f);

  // The reference.
  std::vector<double> expected_q(static_cast<size_t>(tokens) * heads * dim);
  std::vector<double> expected_k(k_cache_before.begin(), k_cache_before.end());
  std::vector<double> expected_v(v_cache_before.begin(), v_cache_before.end());
  std::vector<bool> written(static_cast<size_t>(num_slots), false);
  std::vector<double> cos_t(half), sin_t(half), y(dim);
  // Normalises (optionally) and rotates the head at x into out.
  auto rotate = [&](const float* x, const std::vector<float>* norm, double* out) {
    for (int d = 0; d < dim; ++d) y[d] = x[d];
    if (norm != nullptr) {
      double sum = 0;
      for (int d = 0; d < dim; ++d) sum += y[d] * y[d];
      const double inv_rms = 1.0 / std::sqrt(sum / dim + static_cast<double>(kEps));
      for (int d = 0; d < dim; ++d) y[d] = Store(dtype, (*norm)[d] * Store(dtype, y[d] * inv_rms));
    }
    for (int i = 0; i < half; ++i) {
      out[i] = Store(dtype, Store(dtype, y[i] * cos_t[i]) - Store(dtype, y[i + half] * sin_t[i]));
      out[i + half] = Store(dtype, Store(dtype, y[i + half] * cos_t[i]) + Store(dtype, y[i] * sin_t[i]));
    }
  };
  for (int t = 0; t < tokens; ++t) {
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];  // float32, as transformers
      cos_t[i] = Store(dtype, std::cos(static_cast<double>(angle)));
      sin_t[i] = Store(dtype, std::sin(static_cast<double>(angle)));
    }
    const float* x = &qkv[static_cast<size_t>(t) * row];
    for (int h = 0; h < heads; ++h) {
      rotate(x + h * dim, c.qk_norm ? &q_norm : nullptr, &expected_q[(static_cast<size_t>(t) * heads + h) * dim]);
    }
    const int64_t slot = slot_mapping[t];
    if (slot < 0) continue;
    written[slot] = true;
    for (int h = 0; h < kv_heads; ++h) {
      const size_t at = (static_cast<size_t>(slot) * kv_heads + h) * dim;
      rotate(x + (heads + h) * dim, c.qk_norm ? &k_norm : nullptr, &expected_k[at]);
      for (int d = 0; d < dim; ++d) expected_v[at + d] = x[(heads + kv_heads + h) * dim + d];
    }
  }

  DeviceBuffer d_qkv = UploadAs(dtype, qkv);
  DeviceBuffer d_positions = Upload(positions);
  DeviceBuffer d_slots = Upload(slot_mapping);
  DeviceBuffer d_inv_freq = Upload(inv_freq);
  DeviceBuffer d_q_norm = UploadAs(dtype, q_norm);
  DeviceBuffer d_k_norm = UploadAs(dtype, k_norm);
  DeviceBuffer d_k_cache = UploadAs(dtype, k_cache_before);
  DeviceBuffer d_v_cache = UploadAs(dtype, v_cache_before);
  DeviceBuffer d_q_out(expected_q.size() * ElementSize(dtype));
  d_q_out.Poison();

  RopeCacheArgs args;
  args.dtype = dtype;
  args.num_tokens = tokens;
  args.num_heads = heads;
  args.num_kv_heads = kv_heads;
  args.head_dim = dim;
  args.qkv = d_qkv.get();
  args.positions = d_positions.as<int32_t>();
  args.slot_mapping = d_slots.as<int64_t>();
  args.inv_freq = d_inv_freq.as<float>();
  args.q_norm = c.qk_norm ? d_q_norm.get() : nullptr;
  args.k_norm = c.qk_norm ? d_k_norm.get() : nullptr;
  args.norm_eps = kEps;
  args.q_out = d_q_out.get();
  args.k_cache = d_k_cache.get();
  args.v_cache = d_v_cache.get();
  ASSERT_TRUE(RopeAndCacheWrite(args, nullptr).ok()) << what;
  Sync();

  ExpectRoundedMatch(dtype, kFloat32Tolerance, DownloadAs(dtype, d_q_out, expected_q.size()), expected_q, what + " q_out");

  // k and v at the written slots; every other slot bit-for-bit as before.
  const std::vector<float> k_cache = DownloadAs(dtype, d_k_cache, cache_elements);
  const std::vector<float> v_cache = DownloadAs(dtype, d_v_cache, cache_elements);
  const size_t slot_elements = static_cast<size_t>(kv_heads) * dim;
  std::vector<float> k_written, v_written;
  std::vector<double> k_expected, v_expected;
  int untouched_changed = 0;
  for (int64_t s = 0; s < num_slots; ++s) {
    for (size_t e = s * slot_elements; e < (s + 1) * slot_elements; ++e) {
      if (written[s]) {
        k_written.push_back(k_cache[e]);
        k_expected.push_back(expected_k[e]);
        v_written.push_back(v_cache[e]);
        v_expected.push_back(expected_v[e]);
      } else if (k_cache[e] != k_cache_before[e] || v_cache[e] != v_cache_before[e]) {
        ++untouched_changed;
      }
    }
  }
  ASSERT_FALSE(k_written.empty()) << what;
  EXPECT_EQ(untouched_changed, 0) << what << ": unmapped cache slots were written";
  ExpectRoundedMatch(dtype, kFloat32Tolerance, k_written, k_expected, what + " k_cache");
  // v is copied, not computed: exact.
  std::vector<float> v_expected_f(v_expected.begin(), v_expected.end());
  EXPECT_EQ(v_written, v_expected_f) << what << " v_cache";
}

TEST(RopeAndCacheWriteTest, MatchesReference) {
  GANTRY_REQUIRE_GPU();
  const RopeCase cases[] = {
      {32, 8, 128, 500000.0f, false, 37},  // Llama 3 8B
      {32, 8, 128, 500000.0f, false, 1},   // its decode step: a single token
      {6, 2, 16, 10000.0f, false, 9},      // small
      {4, 1, 16, 10000.0f, false, 6},      // Mistral-ish grouping, one KV head
      {4, 2, 32, 10000.0f, true, 11},      // Qwen3-shaped, q/k norm
      {32, 8, 128, 1000000.0f, true, 23},  // Qwen3 8B
      {8, 2, 80, 10000.0f, false, 13},     // head_dim 80: 40 pairs, two per lane for some
      {8, 8, 64, 10000.0f, false, 7},      // no grouping
      {12, 4, 96, 10000.0f, true, 5},      // head_dim 96 with norm
      {8, 4, 256, 10000.0f, true, 8},      // head_dim 256: four pairs per lane
      {3, 1, 18, 10000.0f, true, 4},       // odd half (9 pairs)
  };
  for (DType dtype : AllDTypes()) {
    for (const RopeCase& c : cases) CheckRope(dtype, c);
  }
}

TEST(RopeAndCacheWriteTest, RejectsInvalidArguments) {
  GANTRY_REQUIRE_GPU();
  DeviceBuffer buffer(4096);
  RopeCacheArgs args;
  args.num_tokens = 1;
  args.num_heads = 4;
  args.num_kv_heads = 2;
  args.head_dim = 15;  // odd
  args.qkv = buffer.get();
  args.positions = buffer.as<int32_t>();
  args.slot_mapping = buffer.as<int64_t>();
  args.inv_freq = buffer.as<float>();
  args.q_out = buffer.get();
  args.k_cache = buffer.get();
  args.v_cache = buffer.get();
  EXPECT_EQ(RopeAndCacheWrite(args, nullptr).code(), absl::StatusCode::kInvalidArgument);

  args.head_dim = 512;  // too wide
  EXPECT_EQ(RopeAndCacheWrite(args, nullptr).code(), absl::StatusCode::kInvalidArgument);

  args.head_dim = 16;
  args.q_norm = buffer.get();  // without k_norm
  EXPECT_EQ(RopeAndCacheWrite(args, nullptr).code(), absl::StatusCode::kInvalidArgument);

  args.q_norm = nullptr;
  args.inv_freq = nullptr;
  EXPECT_EQ(RopeAndCacheWrite(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gantry::cuda
