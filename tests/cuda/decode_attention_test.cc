// DecodeAttention against a CPU reference in double: one query per sequence
// over a paged cache whose blocks sit at random places, for every dtype and
// head_dim, grouped-query ratios, block sizes, split counts (idle splits
// included, and contexts at multiples of the 16-key share), sliding windows,
// padding sequences, both block-table layouts, a 32k-token context and a
// batch of 64. Cache rows the query must not see (past the sequence end,
// before the window, unused blocks) hold NaN, so a kernel that reads one
// fails; the output and the workspace's scratch are poisoned, and its split
// counters must be back at zero after every launch (they are reused by the
// next launch or graph replay).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "runtime/cuda/kernels.h"
#include "tests/cuda/kernel_test_util.h"

namespace gantry::cuda {
namespace {

using ::gantry::cuda::testing::AllDTypes;
using ::gantry::cuda::testing::DeviceBuffer;
using ::gantry::cuda::testing::Download;
using ::gantry::cuda::testing::DownloadAs;
using ::gantry::cuda::testing::ElementSize;
using ::gantry::cuda::testing::RandomValues;
using ::gantry::cuda::testing::RelativeError;
using ::gantry::cuda::testing::Sync;
using ::gantry::cuda::testing::Tolerance;
using ::gantry::cuda::testing::Upload;
using ::gantry::cuda::testing::UploadAs;

constexpr int kH200Sms = 132;  // split counts as the runtime picks them on an H200

struct Case {
  std::string name;
  DType dtype = DType::kBFloat16;
  int head_dim = 128;
  int num_kv_heads = 2;
  int group = 4;  // query heads per KV head
  int block_size = 16;
  std::vector<int> seq_lens;
  int num_splits = 1;
  int sliding_window = 0;
  bool column_major = false;  // block tables as the CUDA-graph path keeps them
  float scale_factor = 2.0f;  // scale = scale_factor / sqrt(head_dim): a peaked softmax
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

const char* ShortName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "f32";
    case DType::kFloat16: return "f16";
    case DType::kBFloat16: return "bf16";
  }
  return "unknown";
}

std::string CaseName(const Case& c, const std::string& prefix) {
  std::string name = prefix + "_" + ShortName(c.dtype) + "_hd" + std::to_string(c.head_dim) + "_kv" +
                     std::to_string(c.num_kv_heads) + "_g" + std::to_string(c.group) + "_bs" +
                     std::to_string(c.block_size) + "_s" + std::to_string(c.num_splits);
  if (c.sliding_window > 0) name += "_w" + std::to_string(c.sliding_window);
  if (c.column_major) name += "_col";
  return name;
}

// Host copy of one problem. Sequence s owns blocks for capacity[s] tokens, at
// random block ids; table entries past them, and rows nobody may read, point
// at or hold NaN.
struct Problem {
  int num_seqs = 0;
  int num_heads = 0;
  int num_blocks = 0;
  int64_t bt_seq_stride = 0, bt_block_stride = 1;
  float scale = 1.0f;
  std::vector<int32_t> block_table;
  std::vector<float> q, k_cache, v_cache;

  int64_t Slot(const Case& c, int s, int j) const {
    const int32_t block = block_table[s * bt_seq_stride + static_cast<int64_t>(j / c.block_size) * bt_block_stride];
    return static_cast<int64_t>(block) * c.block_size + j % c.block_size;
  }
};

int VisibleStart(const Case& c, int len) { return c.sliding_window > 0 ? std::max(0, len - c.sliding_window) : 0; }

// fill_all: every row of the owned blocks holds data (the lengths change
// later); otherwise only the rows the query sees do, the others are NaN.
Problem MakeProblem(const Case& c, const std::vector<int>& capacity, bool fill_all, std::mt19937& rng) {
  Problem p;
  p.num_seqs = static_cast<int>(c.seq_lens.size());
  p.num_heads = c.num_kv_heads * c.group;
  p.scale = c.scale_factor / std::sqrt(static_cast<float>(c.head_dim));

  std::vector<int> blocks(p.num_seqs);
  int max_blocks = 1, total = 1;  // one spare block: the NaN-filled target of unused entries
  for (int s = 0; s < p.num_seqs; ++s) {
    blocks[s] = (capacity[s] + c.block_size - 1) / c.block_size;
    max_blocks = std::max(max_blocks, blocks[s]);
    total += blocks[s];
  }
  p.num_blocks = total;
  std::vector<int32_t> ids(total);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  const int32_t spare = ids.back();

  const int padded_batch = c.column_major ? p.num_seqs + 3 : p.num_seqs;
  if (c.column_major) {
    p.bt_seq_stride = 1;
    p.bt_block_stride = padded_batch;
  } else {
    p.bt_seq_stride = max_blocks;
    p.bt_block_stride = 1;
  }
  p.block_table.assign(static_cast<size_t>(padded_batch) * max_blocks, spare);
  int next = 0;
  for (int s = 0; s < p.num_seqs; ++s) {
    for (int b = 0; b < blocks[s]; ++b) p.block_table[s * p.bt_seq_stride + b * p.bt_block_stride] = ids[next++];
  }

  const size_t row = static_cast<size_t>(c.num_kv_heads) * c.head_dim;  // one token, all KV heads
  const float nan = std::numeric_limits<float>::quiet_NaN();
  p.k_cache.assign(static_cast<size_t>(total) * c.block_size * row, nan);
  p.v_cache.assign(p.k_cache.size(), nan);
  for (int s = 0; s < p.num_seqs; ++s) {
    const int len = c.seq_lens[s];
    const int lo = VisibleStart(c, len);
    for (int j = 0; j < capacity[s]; ++j) {
      if (!fill_all && (j < lo || j >= len)) continue;
      const size_t at = static_cast<size_t>(p.Slot(c, s, j)) * row;
      const std::vector<float> k = RandomValues(rng, c.dtype, row);
      const std::vector<float> v = RandomValues(rng, c.dtype, row);
      std::copy(k.begin(), k.end(), p.k_cache.begin() + at);
      std::copy(v.begin(), v.end(), p.v_cache.begin() + at);
    }
  }
  p.q = RandomValues(rng, c.dtype, static_cast<size_t>(p.num_seqs) * p.num_heads * c.head_dim);
  return p;
}

// [num_seqs, num_heads, head_dim] in double; padding sequences give zeros.
std::vector<double> Reference(const Case& c, const Problem& p, const std::vector<int>& lens) {
  const int hd = c.head_dim, kv_heads = c.num_kv_heads;
  std::vector<double> out(static_cast<size_t>(p.num_seqs) * p.num_heads * hd, 0.0);
  std::vector<const float*> k_rows, v_rows;
  std::vector<double> scores, acc(hd);
  for (int s = 0; s < p.num_seqs; ++s) {
    const int len = lens[s];
    if (len <= 0) continue;
    const int lo = VisibleStart(c, len);
    for (int kv = 0; kv < kv_heads; ++kv) {
      k_rows.clear();
      v_rows.clear();
      for (int j = lo; j < len; ++j) {
        const size_t at = (static_cast<size_t>(p.Slot(c, s, j)) * kv_heads + kv) * hd;
        k_rows.push_back(&p.k_cache[at]);
        v_rows.push_back(&p.v_cache[at]);
      }
      scores.resize(k_rows.size());
      for (int g = 0; g < c.group; ++g) {
        const int h = kv * c.group + g;
        const float* q = &p.q[(static_cast<size_t>(s) * p.num_heads + h) * hd];
        double max_score = -INFINITY;
        for (size_t j = 0; j < k_rows.size(); ++j) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += static_cast<double>(q[d]) * k_rows[j][d];
          scores[j] = static_cast<double>(p.scale) * dot;
          max_score = std::max(max_score, scores[j]);
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        double sum = 0;
        for (size_t j = 0; j < k_rows.size(); ++j) {
          const double w = std::exp(scores[j] - max_score);
          sum += w;
          for (int d = 0; d < hd; ++d) acc[d] += w * v_rows[j][d];
        }
        double* o = &out[(static_cast<size_t>(s) * p.num_heads + h) * hd];
        for (int d = 0; d < hd; ++d) o[d] = acc[d] / sum;
      }
    }
  }
  return out;
}

// Bytes of the workspace's arrival counters (kernels.h): they come first.
size_t CounterBytes(int num_seqs, int num_heads) {
  return 4 * ((static_cast<size_t>(num_seqs) * num_heads + 3) / 4 * 4);
}

// The problem on the device, with the output poisoned and, for several
// splits, a workspace whose counters are zero and whose scratch is poisoned.
struct DeviceProblem {
  DeviceBuffer q, k_cache, v_cache, block_table, seq_lens, out, workspace;
  size_t counter_bytes = 0;
  PagedAttentionArgs args;

  DeviceProblem(const Case& c, const Problem& p) {
    q = UploadAs(c.dtype, p.q);
    k_cache = UploadAs(c.dtype, p.k_cache);
    v_cache = UploadAs(c.dtype, p.v_cache);
    block_table = Upload(p.block_table);
    seq_lens = Upload(std::vector<int32_t>(c.seq_lens.begin(), c.seq_lens.end()));
    out = DeviceBuffer(static_cast<size_t>(p.num_seqs) * p.num_heads * c.head_dim * ElementSize(c.dtype));
    out.Poison();
    if (c.num_splits > 1) {
      workspace = DeviceBuffer(DecodeAttentionWorkspaceBytes(p.num_seqs, p.num_heads, c.head_dim, c.num_splits));
      counter_bytes = CounterBytes(p.num_seqs, p.num_heads);
      workspace.Poison();
      EXPECT_EQ(cudaMemset(workspace.get(), 0, counter_bytes), cudaSuccess);
    }
    args.dtype = c.dtype;
    args.num_seqs = p.num_seqs;
    args.num_tokens = p.num_seqs;
    args.num_heads = p.num_heads;
    args.num_kv_heads = c.num_kv_heads;
    args.head_dim = c.head_dim;
    args.block_size = c.block_size;
    args.scale = p.scale;
    args.sliding_window = c.sliding_window;
    args.q = q.get();
    args.out = out.get();
    args.k_cache = k_cache.get();
    args.v_cache = v_cache.get();
    args.block_tables = block_table.as<int32_t>();
    args.bt_seq_stride = p.bt_seq_stride;
    args.bt_block_stride = p.bt_block_stride;
    args.seq_lens = seq_lens.as<int32_t>();
    args.num_splits = c.num_splits;
    args.workspace = c.num_splits > 1 ? workspace.as<float>() : nullptr;
  }

  std::vector<float> Output(const Case& c, const Problem& p) const {
    return DownloadAs(c.dtype, out, static_cast<size_t>(p.num_seqs) * p.num_heads * c.head_dim);
  }

  // NaN in the partials, the counters left as they are.
  void PoisonScratch() {
    if (workspace.get() == nullptr) return;
    EXPECT_EQ(cudaMemset(workspace.as<uint8_t>() + counter_bytes, 0xFF, workspace.bytes() - counter_bytes),
              cudaSuccess);
  }

  // Counters that are not zero (there should be none between launches).
  size_t NonZeroCounters() const {
    if (workspace.get() == nullptr) return 0;
    const std::vector<uint32_t> counters = Download<uint32_t>(workspace, counter_bytes / 4);
    return counters.size() - std::count(counters.begin(), counters.end(), 0u);
  }
};

// Every element finite, padding rows exactly zero, and each sequence's rows
// within the dtype's tolerance (per sequence, so a short sequence's large
// outputs cannot hide a long one's error).
void ExpectMatches(const Case& c, const Problem& p, const std::vector<int>& lens, const std::vector<float>& actual,
                   const std::vector<double>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  size_t non_finite = 0;
  for (float x : actual) non_finite += std::isfinite(x) ? 0 : 1;
  EXPECT_EQ(non_finite, 0u) << "non-finite output elements";
  const size_t per_seq = static_cast<size_t>(p.num_heads) * c.head_dim;
  for (int s = 0; s < p.num_seqs; ++s) {
    const std::vector<float> got(actual.begin() + s * per_seq, actual.begin() + (s + 1) * per_seq);
    if (lens[s] <= 0) {
      const bool zeros = std::all_of(got.begin(), got.end(), [](float x) { return x == 0.0f; });
      EXPECT_TRUE(zeros) << "padding sequence " << s << " is not zeroed";
      continue;
    }
    const std::vector<double> want(expected.begin() + s * per_seq, expected.begin() + (s + 1) * per_seq);
    const double error = RelativeError(got, want);
    EXPECT_LT(error, Tolerance(c.dtype)) << "sequence " << s << " (seq_len " << lens[s] << ")";
  }
}

// Runs one case on a built problem and checks it against `expected`;
// optionally prints the kernel's time and the K/V bandwidth it reached.
void CheckCase(const Case& c, const Problem& p, const std::vector<double>& expected, bool report_bandwidth) {
  SCOPED_TRACE(c.name);
  DeviceProblem d(c, p);
  ASSERT_TRUE(DecodeAttention(d.args, nullptr).ok());
  Sync();
  const std::vector<float> output = d.Output(c, p);
  ExpectMatches(c, p, c.seq_lens, output, expected);
  EXPECT_EQ(d.NonZeroCounters(), 0u) << "split counters not reset";
  {
    // Lengths, tables and all keys but the last read before the dependency
    // wait, the last key's row after it (nothing runs before this launch, so
    // the promise holds): the same bits. A deferred row copied to the wrong
    // place, or never, would change them.
    DeviceProblem early(c, p);
    early.args.prior_writes_last_key_only = true;
    ASSERT_TRUE(DecodeAttention(early.args, nullptr).ok());
    Sync();
    const std::vector<float> early_output = early.Output(c, p);
    ASSERT_EQ(early_output.size(), output.size());
    EXPECT_EQ(std::memcmp(early_output.data(), output.data(), output.size() * sizeof(float)), 0)
        << "prior_writes_last_key_only changed the output";
    EXPECT_EQ(early.NonZeroCounters(), 0u) << "split counters not reset (prior_writes_last_key_only)";
  }
  if (!report_bandwidth) return;

  // Not a check: the figure to compare with the GPU's peak bandwidth.
  cudaEvent_t start, stop;
  ASSERT_EQ(cudaEventCreate(&start), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&stop), cudaSuccess);
  constexpr int kIters = 20;
  ASSERT_EQ(cudaEventRecord(start), cudaSuccess);
  for (int i = 0; i < kIters; ++i) ASSERT_TRUE(DecodeAttention(d.args, nullptr).ok());
  ASSERT_EQ(cudaEventRecord(stop), cudaSuccess);
  Sync();
  float ms = 0;
  ASSERT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaSuccess);
  int64_t tokens = 0;
  for (int len : c.seq_lens) tokens += len - VisibleStart(c, len);
  const double bytes = 2.0 * tokens * c.num_kv_heads * c.head_dim * ElementSize(c.dtype);
  const double us = 1e3 * ms / kIters;
  std::printf("[ PERF     ] %s: %.1f us, %.0f GB/s of K/V\n", c.name.c_str(), us, bytes / us * 1e-3);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

void RunCase(const Case& c, uint32_t seed, bool report_bandwidth = false) {
  std::mt19937 rng(seed);
  const Problem p = MakeProblem(c, c.seq_lens, /*fill_all=*/false, rng);
  CheckCase(c, p, Reference(c, p, c.seq_lens), report_bandwidth);
}

// ---------------------------------------------------------------------------
// The case tables.

const std::vector<int>& MixedLens() {
  static const std::vector<int> lens = {1, 15, 16, 17, 100, 1000};
  return lens;
}

// Every dtype and head_dim; across each pair's four cases every G (1, 3, 4,
// 8), split count (1, 3, 8, 64) and block size (16, 1, 7, 32) appears once.
std::vector<Case> ShapeCases() {
  struct Combo {
    int group, num_splits, block_size;
  };
  const Combo combos[] = {{4, 1, 16}, {1, 3, 32}, {8, 8, 7}, {3, 64, 1}};
  std::vector<Case> cases;
  for (DType dtype : AllDTypes()) {
    for (int head_dim : {16, 32, 64, 128, 256}) {
      for (const Combo& combo : combos) {
        Case c;
        c.dtype = dtype;
        c.head_dim = head_dim;
        c.group = combo.group;
        c.num_splits = combo.num_splits;
        c.block_size = combo.block_size;
        c.seq_lens = MixedLens();
        c.name = CaseName(c, "mixed");
        cases.push_back(c);
      }
    }
  }
  return cases;
}

// head_dim 128: G x splits in full, block sizes and table layouts rotating,
// plus the largest groups (12, 16).
std::vector<Case> SplitCases() {
  std::vector<Case> cases;
  const int groups[] = {1, 3, 4, 8};
  const int splits[] = {1, 3, 8, 64};
  const int block_sizes[] = {16, 1, 7, 32};
  int i = 0;
  for (int g = 0; g < 4; ++g) {
    for (int s = 0; s < 4; ++s, ++i) {
      Case c;
      c.dtype = AllDTypes()[i % 3];
      c.group = groups[g];
      c.num_splits = splits[s];
      c.block_size = block_sizes[(g + s) % 4];
      c.column_major = i % 2 == 1;
      c.seq_lens = {1000, 17, 1, 100, 16, 15};
      c.name = CaseName(c, "splits");
      cases.push_back(c);
    }
  }
  for (int group : {12, 16}) {
    for (int head_dim : {64, 256}) {
      Case c;
      c.dtype = head_dim == 64 ? DType::kFloat16 : DType::kBFloat16;
      c.head_dim = head_dim;
      c.num_kv_heads = 1;
      c.group = group;
      c.num_splits = 3;
      c.block_size = 16;
      c.seq_lens = {100, 1, 300};
      c.name = CaseName(c, "biggroup");
      cases.push_back(c);
    }
  }
  return cases;
}

// Windows of 24 and 100 with contexts shorter than, equal to and longer
// than them; padding sequences in the middle of batches; very peaked scores.
std::vector<Case> EdgeCases() {
  std::vector<Case> cases;
  int i = 0;
  for (int window : {24, 100}) {
    for (int num_splits : {1, 3, 64}) {
      Case c;
      c.dtype = AllDTypes()[i % 3];
      c.head_dim = i % 2 == 0 ? 128 : 64;
      c.group = i % 2 == 0 ? 4 : 3;
      c.block_size = i % 2 == 0 ? 16 : 7;
      c.column_major = i % 3 == 2;
      c.num_splits = num_splits;
      c.sliding_window = window;
      c.seq_lens = {1, 15, 23, 24, 25, 99, 100, 101, 1000};
      c.name = CaseName(c, "window");
      cases.push_back(c);
      ++i;
    }
  }
  for (int num_splits : {1, 8}) {
    for (int window : {0, 24}) {
      Case c;
      c.dtype = num_splits == 1 ? DType::kFloat32 : DType::kBFloat16;
      c.head_dim = 128;
      c.group = 4;
      c.block_size = 16;
      c.num_splits = num_splits;
      c.sliding_window = window;
      c.column_major = window > 0;
      c.seq_lens = {17, 0, 100, 0, 1, 1000, 0};
      c.name = CaseName(c, "padding");
      cases.push_back(c);
    }
  }
  // Many splits, short sequences: most splits of each sequence have no
  // 16-token share of keys (so they exit), some sequences use a single split
  // (written directly), lengths sit at share and chunk boundaries (64 tokens
  // at head_dim 128 in 16-bit types, 32 in float32, 128 at head_dim 64 in
  // 16-bit types).
  int k = 0;
  for (DType dtype : AllDTypes()) {
    for (int num_splits : {64, 256}) {
      Case c;
      c.dtype = dtype;
      c.head_dim = k % 2 == 0 ? 128 : 64;
      c.num_kv_heads = 8;
      c.group = k % 3 == 0 ? 1 : 4;
      c.block_size = k % 2 == 0 ? 16 : 7;
      c.column_major = k % 2 == 1;
      c.num_splits = num_splits;
      c.seq_lens = {1, 2, 31, 32, 33, 63, 64, 65, 0, 127, 128, 129, 200, 5};
      c.name = CaseName(c, "short");
      cases.push_back(c);
      ++k;
    }
  }
  // The context spread evenly over all the splits once each gets 16 keys:
  // lengths below, at and just past num_splits x 16 (some splits idle, all
  // exactly 16, all in use unevenly), one key, one share, the merge's batch
  // of 16 partials exactly and one past it (256, 257, 512, 513 at 33 splits),
  // ~170 tokens (the 8B decode that was measured: 11 of 33 splits), a window.
  struct Spread {
    DType dtype;
    int num_splits, head_dim, num_kv_heads, group, block_size, sliding_window;
    bool column_major;
  };
  const Spread spreads[] = {
      {DType::kFloat32, 2, 256, 2, 1, 16, 0, false},   {DType::kBFloat16, 8, 128, 2, 4, 16, 0, true},
      {DType::kFloat16, 33, 64, 2, 3, 7, 0, false},    {DType::kBFloat16, 33, 128, 8, 4, 16, 0, true},
      {DType::kBFloat16, 33, 128, 2, 8, 1, 300, false}, {DType::kFloat16, 3, 32, 2, 4, 32, 0, true},
  };
  for (const Spread& spread : spreads) {
    Case c;
    c.dtype = spread.dtype;
    c.num_splits = spread.num_splits;
    c.head_dim = spread.head_dim;
    c.num_kv_heads = spread.num_kv_heads;
    c.group = spread.group;
    c.block_size = spread.block_size;
    c.sliding_window = spread.sliding_window;
    c.column_major = spread.column_major;
    c.seq_lens = {1,   2,   15,  16,  17,  31,  32,  33,  47,  48,  49,  127,
                  128, 129, 136, 170, 256, 257, 512, 513, 527, 528, 529, 1000};
    c.name = CaseName(c, "spread");
    cases.push_back(c);
  }
  for (DType dtype : AllDTypes()) {
    Case c;
    c.dtype = dtype;
    c.group = 4;
    c.num_splits = 8;
    c.scale_factor = 16.0f;  // score differences of tens: underflowing exponentials, large rescales
    c.seq_lens = {1000, 33, 500};
    c.name = CaseName(c, "sharp");
    cases.push_back(c);
  }
  return cases;
}

class DecodeAttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(DecodeAttentionTest, MatchesReference) {
  GANTRY_REQUIRE_GPU();
  const Case& c = GetParam();
  const uint32_t seed = static_cast<uint32_t>(std::hash<std::string>{}(c.name));
  RunCase(c, seed);
}

std::string ParamName(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Shapes, DecodeAttentionTest, ::testing::ValuesIn(ShapeCases()), ParamName);
INSTANTIATE_TEST_SUITE_P(Splits, DecodeAttentionTest, ::testing::ValuesIn(SplitCases()), ParamName);
INSTANTIATE_TEST_SUITE_P(Edges, DecodeAttentionTest, ::testing::ValuesIn(EdgeCases()), ParamName);

// Batch 1 with a 32k context: the splits the runtime would pick on an H200.
TEST(DecodeAttentionLongTest, OneSequenceOf32kTokens) {
  GANTRY_REQUIRE_GPU();
  Case c;
  c.dtype = DType::kBFloat16;
  c.head_dim = 128;
  c.num_kv_heads = 8;
  c.group = 4;
  c.block_size = 16;
  c.seq_lens = {32768};
  std::mt19937 rng(1234);
  const Problem p = MakeProblem(c, c.seq_lens, /*fill_all=*/false, rng);
  const std::vector<double> expected = Reference(c, p, c.seq_lens);
  // The runtime's choice, then more parts (how the bandwidth scales with them).
  const int chosen = ChooseDecodeSplits(1, c.num_kv_heads, kH200Sms);
  for (int num_splits : {chosen, 2 * chosen, 4 * chosen}) {
    c.num_splits = std::min(num_splits, 256);
    c.name = CaseName(c, "long32k");
    CheckCase(c, p, expected, /*report_bandwidth=*/true);
  }
}

// 64 sequences of about 1000 tokens, with the runtime's split count and with one split.
TEST(DecodeAttentionLongTest, BatchOf64) {
  GANTRY_REQUIRE_GPU();
  std::mt19937 rng(99);
  std::uniform_int_distribution<int> len(900, 1100);
  Case c;
  c.dtype = DType::kBFloat16;
  c.head_dim = 128;
  c.num_kv_heads = 4;
  c.group = 4;
  c.block_size = 16;
  for (int s = 0; s < 64; ++s) c.seq_lens.push_back(len(rng));
  const Problem p = MakeProblem(c, c.seq_lens, /*fill_all=*/false, rng);
  const std::vector<double> expected = Reference(c, p, c.seq_lens);
  for (int num_splits : {ChooseDecodeSplits(64, c.num_kv_heads, kH200Sms), 1}) {
    c.num_splits = num_splits;  // the problem does not depend on it
    c.name = CaseName(c, "batch64");
    CheckCase(c, p, expected, /*report_bandwidth=*/true);
  }
}

// Captured once, replayed with other lengths: each replay matches the
// reference for the lengths it reads, and a replay with the capture's
// lengths reproduces the eager output bit for bit.
TEST(DecodeAttentionGraphTest, ReplaysWithNewLengths) {
  GANTRY_REQUIRE_GPU();
  Case c;
  c.dtype = DType::kBFloat16;
  c.head_dim = 128;
  c.num_kv_heads = 2;
  c.group = 4;
  c.block_size = 16;
  c.num_splits = 8;
  c.column_major = true;
  const std::vector<int> lens_a = {1, 300, 0, 599, 64};
  const std::vector<int> lens_b = {600, 17, 250, 0, 1};
  const std::vector<int> capacity(lens_a.size(), 600);
  c.seq_lens = lens_a;
  c.name = "graph_replay";
  std::mt19937 rng(7);
  const Problem p = MakeProblem(c, capacity, /*fill_all=*/true, rng);
  DeviceProblem d(c, p);

  ASSERT_TRUE(DecodeAttention(d.args, nullptr).ok());
  Sync();
  const std::vector<float> eager_a = d.Output(c, p);
  ExpectMatches(c, p, lens_a, eager_a, Reference(c, p, lens_a));

  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const absl::Status captured = DecodeAttention(d.args, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(captured.ok()) << captured;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);

  auto replay = [&](const std::vector<int>& lens) {
    const std::vector<int32_t> lens32(lens.begin(), lens.end());
    EXPECT_EQ(cudaMemcpy(d.seq_lens.get(), lens32.data(), lens32.size() * sizeof(int32_t), cudaMemcpyHostToDevice),
              cudaSuccess);
    d.out.Poison();
    d.PoisonScratch();
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    return d.Output(c, p);
  };
  {
    SCOPED_TRACE("replay with lens_b");
    ExpectMatches(c, p, lens_b, replay(lens_b), Reference(c, p, lens_b));
  }
  {
    SCOPED_TRACE("replay with lens_a");
    const std::vector<float> again = replay(lens_a);
    ASSERT_EQ(again.size(), eager_a.size());
    EXPECT_EQ(std::memcmp(again.data(), eager_a.data(), again.size() * sizeof(float)), 0)
        << "replay differs from the eager run";
  }
  EXPECT_EQ(d.NonZeroCounters(), 0u) << "split counters not reset";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// The split counters return to zero after every launch, so one workspace
// serves launch after launch: the runtime reuses it in every layer of a step
// and across graph replays. Four launches per captured graph (back to back,
// as programmatic dependent launches where the GPU has them), replayed 100
// times, every tenth replay from a poisoned output and scratch; then 100
// eager launches. Every result is the first eager one, bit for bit. The
// captured launches read lengths, tables and keys before their dependency
// waits (prior_writes_last_key_only), the eager ones after.
TEST(DecodeAttentionGraphTest, CountersResetOverManyReplays) {
  GANTRY_REQUIRE_GPU();
  Case c;
  c.dtype = DType::kBFloat16;
  c.head_dim = 128;
  c.num_kv_heads = 8;
  c.group = 4;
  c.block_size = 16;
  c.num_splits = 33;  // the runtime's choice at batch 1 on an H200
  c.column_major = true;
  c.seq_lens = {4000, 150, 0, 64, 65, 1};
  c.name = "repeat";
  std::mt19937 rng(11);
  const Problem p = MakeProblem(c, c.seq_lens, /*fill_all=*/false, rng);
  DeviceProblem d(c, p);
  ASSERT_TRUE(DecodeAttention(d.args, nullptr).ok());
  Sync();
  const std::vector<float> first = d.Output(c, p);
  ExpectMatches(c, p, c.seq_lens, first, Reference(c, p, c.seq_lens));
  ASSERT_EQ(d.NonZeroCounters(), 0u);

  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  absl::Status captured;
  // The captured launches read lengths, tables and earlier keys before their
  // dependency waits (they write none of them).
  PagedAttentionArgs early_args = d.args;
  early_args.prior_writes_last_key_only = true;
  for (int i = 0; i < 4 && captured.ok(); ++i) captured = DecodeAttention(early_args, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(captured.ok()) << captured;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);

  auto expect_first = [&](const char* what, int i) {
    const std::vector<float> got = d.Output(c, p);
    ASSERT_EQ(got.size(), first.size());
    EXPECT_EQ(std::memcmp(got.data(), first.data(), got.size() * sizeof(float)), 0) << what << " " << i;
    EXPECT_EQ(d.NonZeroCounters(), 0u) << what << " " << i;
  };
  for (int i = 0; i < 100; ++i) {
    if (i % 10 == 0) {  // the stream is idle here
      d.out.Poison();
      d.PoisonScratch();
      Sync();
    }
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    if (i % 10 == 9) {
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      expect_first("replay", i);
    }
  }
  for (int i = 0; i < 100; ++i) {
    if (i % 10 == 0) {  // the stream is idle here
      d.out.Poison();
      d.PoisonScratch();
      Sync();
    }
    ASSERT_TRUE(DecodeAttention(d.args, stream).ok());
    if (i % 10 == 9) {
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      expect_first("eager launch", i);
    }
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// Shapes the kernel does not support are argument errors, not launches.
TEST(DecodeAttentionArgsTest, RejectsBadShapes) {
  GANTRY_REQUIRE_GPU();
  DeviceBuffer q(4096), out(4096), k_cache(4096), v_cache(4096), table(64), lens(64), workspace(4096);
  PagedAttentionArgs args;
  args.dtype = DType::kBFloat16;
  args.num_seqs = 1;
  args.num_tokens = 1;
  args.num_heads = 8;
  args.num_kv_heads = 2;
  args.head_dim = 128;
  args.block_size = 16;
  args.q = q.get();
  args.out = out.get();
  args.k_cache = k_cache.get();
  args.v_cache = v_cache.get();
  args.block_tables = table.as<int32_t>();
  args.bt_seq_stride = 1;
  args.seq_lens = lens.as<int32_t>();

  PagedAttentionArgs bad_head_dim = args;
  bad_head_dim.head_dim = 48;
  EXPECT_EQ(DecodeAttention(bad_head_dim, nullptr).code(), absl::StatusCode::kInvalidArgument);

  PagedAttentionArgs bad_group = args;
  bad_group.num_heads = 6;
  bad_group.num_kv_heads = 4;
  EXPECT_EQ(DecodeAttention(bad_group, nullptr).code(), absl::StatusCode::kInvalidArgument);

  PagedAttentionArgs no_workspace = args;
  no_workspace.num_splits = 4;
  EXPECT_EQ(DecodeAttention(no_workspace, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gantry::cuda
