// PrefillAttention against a double-precision CPU reference (plain softmax
// attention with the causal / sliding-window mask) on random inputs.
//
// Each case builds a batch of sequences with different cached prefixes and
// query counts (prompt chunks, decodes, a padding sequence), scatters their
// K/V over randomly permuted cache blocks, and fills every cache slot that no
// token owns, and a spare block that unused block-table entries name, with
// NaN: a kernel that reads past a sequence's context or a wrong block table
// entry produces NaN. The output is poisoned (NaN) before the launch, so an
// unwritten element fails too.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/cuda/kernels.h"
#include "tests/cuda/kernel_test_util.h"

namespace gantry::cuda {
namespace {

using ::gantry::cuda::testing::DeviceBuffer;
using ::gantry::cuda::testing::DownloadAs;
using ::gantry::cuda::testing::ElementSize;
using ::gantry::cuda::testing::RandomValues;
using ::gantry::cuda::testing::RelativeError;
using ::gantry::cuda::testing::Upload;
using ::gantry::cuda::testing::UploadAs;

// One sequence of a batch: `prefix` tokens cached by earlier steps, then
// `q_len` tokens of this step (its queries). {0, 0} is a padding sequence.
struct Seq {
  int prefix;
  int q_len;
};

struct Case {
  const char* name;
  DType dtype;
  int head_dim;
  int num_kv_heads;
  int group;  // query heads per KV head
  int block_size;
  std::vector<Seq> seqs;
  int sliding_window = 0;
  bool column_major = false;  // block table [max_blocks, num_seqs] as the CUDA-graph path keeps it
  float scale_mult = 1.0f;    // scale = scale_mult / sqrt(head_dim); large values give peaked softmax
  int extra_query_len = 0;    // max_query_len beyond the longest chunk: surplus thread blocks must exit
  int check_every = 1;        // the reference checks every n-th query (and the first and last 8)
};

// Decodes mixed with chunks, with and without a cached prefix, and a padding
// sequence in the middle.
const std::vector<Seq> kMixed = {{0, 1}, {0, 17}, {0, 0}, {0, 128}, {37, 64}, {500, 300}, {1000, 1}};
// Chunks longer than the windows (24, 100), over prefixes longer than them.
const std::vector<Seq> kWindowed = {{0, 130}, {0, 1}, {0, 0}, {37, 64}, {500, 300}, {1000, 1}, {90, 9}};
// A smaller mix for the widest heads, to keep the reference cheap.
const std::vector<Seq> kSmall = {{0, 1}, {0, 17}, {0, 0}, {0, 70}, {37, 64}, {200, 100}, {1000, 1}};

// fp16: the output and P are rounded to 11-bit mantissas (relative rms about
// 3e-4 each); bf16 to 8 bits (about 2.3e-3 each).
double Tolerance(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 1e-5;
    case DType::kFloat16: return 2e-3;
    case DType::kBFloat16: return 1.5e-2;
  }
  return 0;
}

// The host side of one case: inputs as the device sees them (rounded to the
// dtype) and the arguments' tables.
struct HostCase {
  int num_heads = 0;
  int64_t num_tokens = 0;
  int max_query_len = 0;
  int64_t bt_seq_stride = 0, bt_block_stride = 1;
  float scale = 0;
  std::vector<int32_t> seq_lens, query_start, block_tables;
  std::vector<float> q;                       // [num_tokens, num_heads, head_dim]
  std::vector<float> k_cache, v_cache;        // [num_blocks, block_size, num_kv_heads, head_dim]
  std::vector<std::vector<float>> keys, values;  // per sequence [seq_len, num_kv_heads, head_dim]
};

HostCase BuildCase(const Case& c, std::mt19937& rng) {
  HostCase h;
  const int num_seqs = static_cast<int>(c.seqs.size());
  const int kv = c.num_kv_heads, hd = c.head_dim, bs = c.block_size;
  const int64_t token_elems = static_cast<int64_t>(kv) * hd;
  h.num_heads = kv * c.group;
  h.scale = c.scale_mult / std::sqrt(static_cast<float>(hd));
  h.query_start.push_back(0);
  std::vector<int> blocks_of(num_seqs);
  int total_blocks = 1;  // + the spare block
  int max_blocks = 1;
  for (int s = 0; s < num_seqs; ++s) {
    const int len = c.seqs[s].prefix + c.seqs[s].q_len;
    h.seq_lens.push_back(len);
    h.query_start.push_back(h.query_start.back() + c.seqs[s].q_len);
    h.max_query_len = std::max(h.max_query_len, c.seqs[s].q_len);
    blocks_of[s] = (len + bs - 1) / bs;
    total_blocks += blocks_of[s];
    max_blocks = std::max(max_blocks, blocks_of[s]);
  }
  h.max_query_len += c.extra_query_len;
  h.num_tokens = h.query_start.back();

  // Block ids in random order; the last one is the NaN spare.
  std::vector<int32_t> ids(total_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  const int32_t spare = ids.back();
  h.block_tables.assign(static_cast<size_t>(num_seqs) * max_blocks, spare);
  if (c.column_major) {
    h.bt_seq_stride = 1;
    h.bt_block_stride = num_seqs;
  } else {
    h.bt_seq_stride = max_blocks;
    h.bt_block_stride = 1;
  }
  auto entry = [&](int s, int b) -> int32_t& { return h.block_tables[s * h.bt_seq_stride + b * h.bt_block_stride]; };
  int next = 0;
  for (int s = 0; s < num_seqs; ++s) {
    for (int b = 0; b < blocks_of[s]; ++b) entry(s, b) = ids[next++];
  }

  const size_t cache_elems = static_cast<size_t>(total_blocks) * bs * token_elems;
  h.k_cache.assign(cache_elems, std::numeric_limits<float>::quiet_NaN());
  h.v_cache.assign(cache_elems, std::numeric_limits<float>::quiet_NaN());
  h.keys.resize(num_seqs);
  h.values.resize(num_seqs);
  for (int s = 0; s < num_seqs; ++s) {
    const int len = h.seq_lens[s];
    h.keys[s] = RandomValues(rng, c.dtype, len * token_elems);
    h.values[s] = RandomValues(rng, c.dtype, len * token_elems);
    const std::vector<float>& k = h.keys[s];
    const std::vector<float>& v = h.values[s];
    for (int j = 0; j < len; ++j) {
      const int64_t slot = static_cast<int64_t>(entry(s, j / bs)) * bs + j % bs;
      std::copy_n(k.begin() + j * token_elems, token_elems, h.k_cache.begin() + slot * token_elems);
      std::copy_n(v.begin() + j * token_elems, token_elems, h.v_cache.begin() + slot * token_elems);
    }
  }
  // Queries wider than the keys: softmax logits of standard deviation about
  // 1.3 * scale_mult.
  h.q = RandomValues(rng, c.dtype, h.num_tokens * h.num_heads * hd, -4.0f, 4.0f);
  return h;
}

bool Checked(const Case& c, int i, int q_len) {
  return c.check_every == 1 || i < 8 || i >= q_len - 8 || i % c.check_every == c.check_every - 1;
}

// Reference rows of sequence s (checked queries, all heads) in `expected`,
// the matching elements of `out` in `actual`. The G heads of a KV head are
// done together so each key is read once for all of them.
void ReferenceRows(const Case& c, const HostCase& h, int s, const std::vector<float>& out,
                   std::vector<double>* expected, std::vector<float>* actual) {
  const int hd = c.head_dim, kv = c.num_kv_heads, group = c.group, q_len = c.seqs[s].q_len;
  const std::vector<float>& keys = h.keys[s];
  const std::vector<float>& values = h.values[s];
  std::vector<double> scores, acc(group * hd), qd(group * hd);
  for (int i = 0; i < q_len; ++i) {
    if (!Checked(c, i, q_len)) continue;
    const int pos = c.seqs[s].prefix + i;
    const int lo = c.sliding_window > 0 ? std::max(0, pos - c.sliding_window + 1) : 0;
    const int n = pos - lo + 1;
    const int64_t row = h.query_start[s] + i;
    for (int kv_head = 0; kv_head < kv; ++kv_head) {
      const int64_t first = (row * h.num_heads + kv_head * group) * hd;  // the group's heads are adjacent
      std::copy_n(&h.q[first], group * hd, qd.begin());
      scores.assign(static_cast<size_t>(group) * n, 0.0);
      for (int j = lo; j <= pos; ++j) {
        const float* kj = &keys[(static_cast<int64_t>(j) * kv + kv_head) * hd];
        for (int g = 0; g < group; ++g) {
          const double* qg = &qd[g * hd];
          double dot[4] = {0, 0, 0, 0};  // independent sums: one chain is latency-bound
          for (int d = 0; d < hd; d += 4) {
            for (int x = 0; x < 4; ++x) dot[x] += qg[d + x] * kj[d + x];
          }
          scores[g * n + (j - lo)] = (dot[0] + dot[1] + dot[2] + dot[3]) * h.scale;
        }
      }
      std::vector<double> sum(group, 0.0);
      for (int g = 0; g < group; ++g) {
        double* sg = &scores[g * n];
        const double max_score = *std::max_element(sg, sg + n);
        for (int x = 0; x < n; ++x) {
          sg[x] = std::exp(sg[x] - max_score);
          sum[g] += sg[x];
        }
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int j = lo; j <= pos; ++j) {
        const float* vj = &values[(static_cast<int64_t>(j) * kv + kv_head) * hd];
        for (int g = 0; g < group; ++g) {
          const double p = scores[g * n + (j - lo)];
          double* ag = &acc[g * hd];
          for (int d = 0; d < hd; ++d) ag[d] += p * vj[d];
        }
      }
      for (int g = 0; g < group; ++g) {
        for (int d = 0; d < hd; ++d) {
          expected->push_back(acc[g * hd + d] / sum[g]);
          actual->push_back(out[first + g * hd + d]);
        }
      }
    }
  }
}

void RunCase(const Case& c, uint32_t seed) {
  SCOPED_TRACE(c.name);
  std::mt19937 rng(seed);
  const HostCase h = BuildCase(c, rng);
  const int64_t out_elems = h.num_tokens * h.num_heads * c.head_dim;

  DeviceBuffer q = UploadAs(c.dtype, h.q);
  DeviceBuffer k_cache = UploadAs(c.dtype, h.k_cache);
  DeviceBuffer v_cache = UploadAs(c.dtype, h.v_cache);
  DeviceBuffer block_tables = Upload(h.block_tables);
  DeviceBuffer seq_lens = Upload(h.seq_lens);
  DeviceBuffer query_start = Upload(h.query_start);
  DeviceBuffer out(out_elems * ElementSize(c.dtype));
  out.Poison();

  PagedAttentionArgs args;
  args.dtype = c.dtype;
  args.num_seqs = static_cast<int>(c.seqs.size());
  args.num_tokens = h.num_tokens;
  args.num_heads = h.num_heads;
  args.num_kv_heads = c.num_kv_heads;
  args.head_dim = c.head_dim;
  args.block_size = c.block_size;
  args.scale = h.scale;
  args.sliding_window = c.sliding_window;
  args.q = q.get();
  args.out = out.get();
  args.k_cache = k_cache.get();
  args.v_cache = v_cache.get();
  args.block_tables = block_tables.as<int32_t>();
  args.bt_seq_stride = h.bt_seq_stride;
  args.bt_block_stride = h.bt_block_stride;
  args.seq_lens = seq_lens.as<int32_t>();
  args.query_start = query_start.as<int32_t>();
  args.max_query_len = h.max_query_len;
  const absl::Status status = PrefillAttention(args, nullptr);
  ASSERT_TRUE(status.ok()) << status;
  ::gantry::cuda::testing::Sync();
  const std::vector<float> result = DownloadAs(c.dtype, out, out_elems);

  // Every row belongs to some sequence: all must be written, and finite.
  const int64_t bad = std::count_if(result.begin(), result.end(), [](float x) { return !std::isfinite(x); });
  EXPECT_EQ(bad, 0) << "of " << out_elems << " output elements are not finite";

  double worst = 0;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    if (c.seqs[s].q_len == 0) continue;
    std::vector<double> expected;
    std::vector<float> actual;
    ReferenceRows(c, h, static_cast<int>(s), result, &expected, &actual);
    const double error = RelativeError(actual, expected);
    worst = std::max(worst, error);
    EXPECT_LT(error, Tolerance(c.dtype)) << "sequence " << s << " (prefix " << c.seqs[s].prefix << ", "
                                         << c.seqs[s].q_len << " queries)";
  }
  std::printf("  %-36s worst relative error %.3g\n", c.name, worst);
}

void RunCases(const std::vector<Case>& cases) {
  for (size_t i = 0; i < cases.size(); ++i) RunCase(cases[i], 1000 + static_cast<uint32_t>(i));
}

constexpr DType kF32 = DType::kFloat32;
constexpr DType kF16 = DType::kFloat16;
constexpr DType kBF16 = DType::kBFloat16;

// {name, dtype, head_dim, kv heads, group, block_size, seqs, window, column-major, scale x, extra max_query_len}
std::vector<Case> MixedBatchCases() {
  return {
      {"f32_d128_g4_bs16", kF32, 128, 2, 4, 16, kMixed},
      {"f16_d128_g4_bs16", kF16, 128, 2, 4, 16, kMixed},
      {"bf16_d128_g4_bs16_padded_grid", kBF16, 128, 2, 4, 16, kMixed, 0, false, 1.0f, 40},
      {"bf16_d64_g1_bs1_colmajor", kBF16, 64, 3, 1, 1, kMixed, 0, true},
      {"f16_d64_g4_bs7_colmajor", kF16, 64, 2, 4, 7, kMixed, 0, true},
      {"f32_d64_g4_bs16_colmajor", kF32, 64, 2, 4, 16, kMixed, 0, true},
      {"f16_d32_g8_bs7", kF16, 32, 2, 8, 7, kMixed},
      {"bf16_d32_g3_bs7", kBF16, 32, 1, 3, 7, kMixed},
      {"f32_d32_g8_bs1", kF32, 32, 1, 8, 1, kMixed},
      {"bf16_d16_g3_bs16_colmajor", kBF16, 16, 2, 3, 16, kMixed, 0, true},
      {"f16_d16_g1_bs1", kF16, 16, 1, 1, 1, kMixed},
      {"f32_d16_g3_bs7", kF32, 16, 1, 3, 7, kMixed},
      {"f16_d256_g3_bs7", kF16, 256, 1, 3, 7, kSmall},
      {"bf16_d256_g8_bs16_colmajor", kBF16, 256, 1, 8, 16, kSmall, 0, true},
      {"f32_d256_g1_bs16", kF32, 256, 2, 1, 16, kSmall},
      // Peaked softmax: the running maximum moves a lot between key tiles.
      {"f16_d64_g4_bs16_peaked", kF16, 64, 1, 4, 16, kMixed, 0, false, 8.0f},
      {"bf16_d128_g8_bs16_peaked", kBF16, 128, 1, 8, 16, kSmall, 0, false, 8.0f},
      {"f32_d64_g3_bs1_peaked", kF32, 64, 1, 3, 1, kSmall, 0, false, 8.0f},
  };
}

std::vector<Case> SlidingWindowCases() {
  return {
      {"bf16_d128_g4_bs16_w24", kBF16, 128, 2, 4, 16, kWindowed, 24},
      {"f16_d128_g4_bs7_w100_colmajor", kF16, 128, 2, 4, 7, kWindowed, 100, true},
      {"f16_d64_g3_bs7_w100", kF16, 64, 1, 3, 7, kWindowed, 100},
      {"bf16_d32_g8_bs1_w24_colmajor", kBF16, 32, 1, 8, 1, kWindowed, 24, true},
      {"bf16_d16_g1_bs16_w100", kBF16, 16, 2, 1, 16, kWindowed, 100},
      {"f16_d256_g4_bs16_w24", kF16, 256, 1, 4, 16, kWindowed, 24},
      {"bf16_d256_g3_bs7_w100_peaked", kBF16, 256, 1, 3, 7, kWindowed, 100, false, 8.0f},
      {"f32_d64_g8_bs1_w24", kF32, 64, 1, 8, 1, kWindowed, 24},
      {"f32_d128_g4_bs7_w100_colmajor", kF32, 128, 2, 4, 7, kWindowed, 100, true},
  };
}

TEST(PrefillAttentionTest, MixedBatches) {
  GANTRY_REQUIRE_GPU();
  RunCases(MixedBatchCases());
}

TEST(PrefillAttentionTest, SlidingWindows) {
  GANTRY_REQUIRE_GPU();
  RunCases(SlidingWindowCases());
}

TEST(PrefillAttentionTest, LongPrompt) {
  GANTRY_REQUIRE_GPU();
  // The reference checks every 16th query (and the first and last 8): the
  // whole prompt would cost it ~17 GFLOP.
  Case c{"bf16_d128_g4_bs16_prompt4096", kBF16, 128, 2, 4, 16, {{0, 4096}}};
  c.check_every = 16;
  RunCase(c, 7);
}

TEST(PrefillAttentionTest, MoreSequencesThanGridZ) {
  GANTRY_REQUIRE_GPU();
  // 70000 sequences: past the grid's z limit (65535), so some blocks take a
  // second sequence. Short prefixes, chunks of 1 or 2 queries; one head
  // keeps the host side cheap.
  std::vector<Seq> seqs;
  for (int i = 0; i < 70000; ++i) seqs.push_back({i % 5, 1 + i % 2});
  RunCase({"bf16_d16_g1_bs1_70000_seqs", kBF16, 16, 1, 1, 1, seqs}, 11);
  RunCase({"f32_d16_g1_bs7_70000_seqs", kF32, 16, 1, 1, 7, seqs}, 12);
}

TEST(PrefillAttentionTest, RejectsBadArguments) {
  GANTRY_REQUIRE_GPU();
  DeviceBuffer buffer(4096);
  PagedAttentionArgs args;
  args.dtype = DType::kBFloat16;
  args.num_seqs = 1;
  args.num_tokens = 1;
  args.num_heads = 4;
  args.num_kv_heads = 2;
  args.head_dim = 64;
  args.block_size = 16;
  args.q = buffer.get();
  args.out = buffer.get();
  args.k_cache = buffer.get();
  args.v_cache = buffer.get();
  args.block_tables = buffer.as<int32_t>();
  args.seq_lens = buffer.as<int32_t>();
  args.query_start = buffer.as<int32_t>();
  args.max_query_len = 1;

  PagedAttentionArgs bad = args;
  bad.head_dim = 48;
  EXPECT_EQ(PrefillAttention(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = args;
  bad.query_start = nullptr;
  EXPECT_EQ(PrefillAttention(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gantry::cuda
