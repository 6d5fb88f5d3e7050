// SampleTokens (runtime/cuda/sampling.cu) against a CPU reference that
// implements the kernels.h specification literally: z = logits / t in
// float32, probabilities in double, for every group of equal z the count and
// the mass of the strictly more probable tokens, the kept groups a prefix of
// them, then the Gumbel noise by the same float32 formula and the argmax
// over the kept tokens.
//
// Exact agreement is asked for, with two documented allowances: a group
// whose exclusive mass lies within kMassTolerance of top_p (or whose
// probability ratio lies within kMinPTolerance of min_p) may be kept or
// dropped, since the kernel sums float32 masses; and a token whose score is
// within float rounding of the best may win instead, since glibc's logf and
// CUDA's may differ by an ulp. Most rows move top_p and min_p into the
// middle of the gap between two groups, so they have no ambiguous group.
//
// A wrong threshold by one group would rarely change a random draw, so most
// rows are built adversarially: the values are drawn first, the reference
// finds the last kept and the first dropped group, and the tokens with the
// largest noise get the first dropped group's values, the next ones the last
// kept group's. Keeping one group too many or too few then changes the token.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/cuda/hash32.h"
#include "runtime/cuda/kernels.h"
#include "tests/cuda/kernel_test_util.h"

namespace gantry::cuda {
namespace {

using ::gantry::cuda::testing::DeviceBuffer;
using ::gantry::cuda::testing::Download;
using ::gantry::cuda::testing::Sync;
using ::gantry::cuda::testing::Upload;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kMassTolerance = 4e-6;  // absolute, on probabilities
constexpr double kMinPTolerance = 1e-5;  // relative, on p / p_max

// ---------------------------------------------------------------------------
// Reference.

// As runtime/sampler.cc, in float32 (std::log on a float is logf).
float Gumbel(uint32_t key, uint32_t token) {
  const uint32_t bits = Hash32(Hash32(key + token) ^ key);
  const float u = (static_cast<float>(bits >> 9) + 0.5f) / 8388608.0f;
  return -std::log(-std::log(u));
}

std::vector<float> Noise(uint32_t key, int vocab) {
  std::vector<float> g(vocab);
  for (int v = 0; v < vocab; ++v) g[v] = Gumbel(key, static_cast<uint32_t>(v));
  return g;
}

struct RowParams {
  float temperature = 1.0f;
  int top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint32_t key = 0;
};

std::string Describe(const RowParams& p) {
  return absl::StrCat("t=", p.temperature, " top_k=", p.top_k, " top_p=", p.top_p, " min_p=", p.min_p,
                      " key=", p.key);
}

std::vector<float> Scaled(const float* logits, int vocab, float temperature) {
  const float t = std::max(temperature, 1e-6f);  // the samplers' clamp
  std::vector<float> z(vocab);
  for (int v = 0; v < vocab; ++v) z[v] = logits[v] / t;
  return z;
}

// Tokens of equal z, in descending z.
struct Group {
  size_t begin = 0, end = 0;  // positions in Analysis::order
  float z = 0.0f;
  int64_t count_above = 0;    // tokens with a greater z
  double mass_above = 0.0;    // their probability
  double mass = 0.0;          // the group's own probability
  double ratio = 0.0;         // p / p_max
};

struct Analysis {
  std::vector<int> order;  // token ids by descending z, then ascending id
  std::vector<Group> groups;
  // The last kept group, with the ambiguous groups dropped / kept (groups
  // within the tolerances of top_p or min_p).
  size_t strict = 0, loose = 0;
};

Analysis Analyse(const std::vector<float>& z, const RowParams& p) {
  const int vocab = static_cast<int>(z.size());
  Analysis a;
  std::vector<std::pair<float, int>> sorted(vocab);
  for (int v = 0; v < vocab; ++v) sorted[v] = {z[v], v};
  std::sort(sorted.begin(), sorted.end(), [](const std::pair<float, int>& x, const std::pair<float, int>& y) {
    return x.first > y.first || (x.first == y.first && x.second < y.second);
  });
  a.order.resize(vocab);
  for (int i = 0; i < vocab; ++i) a.order[i] = sorted[i].second;
  const double z_max = z[a.order[0]];
  double sum = 0.0;
  for (float zv : z) sum += std::exp(static_cast<double>(zv) - z_max);
  int64_t count = 0;
  double mass = 0.0;
  for (size_t i = 0; i < a.order.size();) {
    Group g;
    g.begin = i;
    g.z = z[a.order[i]];
    while (i < a.order.size() && z[a.order[i]] == g.z) ++i;
    g.end = i;
    g.count_above = count;
    g.mass_above = mass;
    g.ratio = std::exp(static_cast<double>(g.z) - z_max);
    g.mass = static_cast<double>(g.end - g.begin) * g.ratio / sum;
    count += g.end - g.begin;
    mass += g.mass;
    a.groups.push_back(g);
  }
  const bool k_on = p.top_k > 0 && p.top_k < vocab;
  const bool p_on = p.top_p < 1.0f;
  const bool m_on = p.min_p > 0.0f;
  auto kept = [&](const Group& g, double slack) {
    return (!k_on || g.count_above < p.top_k) && (!p_on || g.mass_above <= p.top_p + slack * kMassTolerance) &&
           (!m_on || g.ratio >= p.min_p * (1.0 - slack * kMinPTolerance));
  };
  // The kept groups are a prefix (each criterion only gets stricter down
  // the order); the most probable group is always kept.
  a.strict = a.loose = 0;
  while (a.strict + 1 < a.groups.size() && kept(a.groups[a.strict + 1], -1.0)) ++a.strict;
  while (a.loose + 1 < a.groups.size() && kept(a.groups[a.loose + 1], 1.0)) ++a.loose;
  return a;
}

// The tokens the kernel may return for the row, and the reference's draw.
struct Expected {
  std::vector<int> acceptable;
  int draw = -1;
  bool ambiguous = false;  // a kept set within the tolerances was in doubt
};

bool Accepts(const Expected& e, int token) {
  return std::find(e.acceptable.begin(), e.acceptable.end(), token) != e.acceptable.end();
}

int Greedy(const float* logits, int vocab) {
  int best = 0;
  for (int v = 1; v < vocab; ++v) {
    if (logits[v] > logits[best]) best = v;
  }
  return best;
}

Expected Reference(const float* logits, int vocab, const RowParams& p) {
  Expected e;
  if (!(p.temperature > 0.0f)) {
    e.draw = Greedy(logits, vocab);
    e.acceptable = {e.draw};
    return e;
  }
  const std::vector<float> z = Scaled(logits, vocab, p.temperature);
  if (*std::max_element(z.begin(), z.end()) == -kInf) {  // every token masked
    e.draw = 0;
    e.acceptable = {0};
    return e;
  }
  const Analysis a = Analyse(z, p);
  e.ambiguous = a.strict != a.loose;
  // The draw over each kept set from the strict to the loose one: the best
  // score over a growing prefix of the groups.
  const size_t end = a.groups[a.loose].end;
  std::vector<float> score(end);
  for (size_t i = 0; i < end; ++i) score[i] = z[a.order[i]] + Gumbel(p.key, static_cast<uint32_t>(a.order[i]));
  struct Draw {
    float score;
    int id;
    size_t end;  // the prefix it is the best of
  };
  std::vector<Draw> draws;
  float best = -kInf;
  int best_id = -1;
  for (size_t g = 0; g <= a.loose; ++g) {
    for (size_t i = a.groups[g].begin; i < a.groups[g].end; ++i) {
      const int v = a.order[i];
      if (std::isnan(score[i])) continue;
      if (best_id < 0 || score[i] > best || (score[i] == best && v < best_id)) {
        best = score[i];
        best_id = v;
      }
    }
    if (g < a.strict) continue;
    if (g == a.strict) e.draw = best_id;
    if (draws.empty() || draws.back().id != best_id) draws.push_back({best, best_id, a.groups[g].end});
    draws.back().end = a.groups[g].end;
  }
  for (const Draw& d : draws) {
    e.acceptable.push_back(d.id);
    if (!std::isfinite(d.score)) continue;
    // Near-ties: an ulp of difference between the two logf may swap them.
    const float tolerance = 1e-5f + 1e-6f * std::fabs(d.score);
    for (size_t i = 0; i < d.end; ++i) {
      if (a.order[i] != d.id && score[i] >= d.score - tolerance) e.acceptable.push_back(a.order[i]);
    }
  }
  return e;
}

// ---------------------------------------------------------------------------
// Inputs.

enum class Shape {
  kNormal,     // N(0, 3)
  kPeaked,     // N(0, 1) and one logit 30 above
  kTies,       // N(0, 3) rounded to multiples of 0.5: large groups of equal values
  kMasked,     // N(0, 3), 30% of the tokens -inf
  kFlat,       // 5 + U(0, 1e-3): the whole row in one histogram bin
  kAllMasked,  // every token -inf
};

const char* ShapeName(Shape s) {
  switch (s) {
    case Shape::kNormal: return "normal";
    case Shape::kPeaked: return "peaked";
    case Shape::kTies: return "ties";
    case Shape::kMasked: return "masked";
    case Shape::kFlat: return "flat";
    case Shape::kAllMasked: return "all-masked";
  }
  return "?";
}

std::vector<float> Values(Shape shape, int vocab, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> values(vocab);
  switch (shape) {
    case Shape::kNormal:
      for (float& v : values) v = normal(rng);
      break;
    case Shape::kPeaked: {
      std::normal_distribution<float> unit(0.0f, 1.0f);
      for (float& v : values) v = unit(rng);
      values[rng() % vocab] = 30.0f + unit(rng);
      break;
    }
    case Shape::kTies:
      for (float& v : values) v = std::round(normal(rng) * 2.0f) / 2.0f;
      break;
    case Shape::kMasked: {
      std::uniform_real_distribution<float> coin(0.0f, 1.0f);
      for (float& v : values) v = coin(rng) < 0.3f ? -kInf : normal(rng);
      break;
    }
    case Shape::kFlat: {
      std::uniform_real_distribution<float> jitter(0.0f, 1e-3f);
      for (float& v : values) v = 5.0f + jitter(rng);
      break;
    }
    case Shape::kAllMasked:
      std::fill(values.begin(), values.end(), -kInf);
      break;
  }
  return values;
}

// Moves top_p and min_p (when on) into the middle of the gap between the
// group where they fall and the next, so no group is within the tolerances
// (where the gap allows).
void Snap(const std::vector<float>& values, RowParams* p) {
  if (!(p->temperature > 0.0f) || (p->top_p >= 1.0f && p->min_p <= 0.0f)) return;
  const std::vector<float> z = Scaled(values.data(), static_cast<int>(values.size()), p->temperature);
  if (*std::max_element(z.begin(), z.end()) == -kInf) return;
  const Analysis a = Analyse(z, RowParams{p->temperature, 0, 1.0f, 0.0f, 0});
  if (p->top_p < 1.0f && p->top_p > 0.0f) {
    for (size_t g = 0; g + 1 < a.groups.size(); ++g) {
      if (a.groups[g].mass_above <= p->top_p && p->top_p < a.groups[g + 1].mass_above) {
        p->top_p = static_cast<float>((a.groups[g].mass_above + a.groups[g + 1].mass_above) / 2.0);
        break;
      }
    }
  }
  if (p->min_p > 0.0f && p->min_p < 1.0f) {
    for (size_t g = 0; g + 1 < a.groups.size(); ++g) {
      const double hi = a.groups[g].ratio, lo = a.groups[g + 1].ratio;
      if (hi >= p->min_p && p->min_p > lo) {
        p->min_p = static_cast<float>(lo > 0.0 ? std::sqrt(hi * lo) : hi / 2.0);
        break;
      }
    }
  }
}

// Places `values` on token ids: the largest noises go to the first dropped
// group, the next to the last kept group, the rest at random.
std::vector<float> Arrange(const std::vector<float>& values, const RowParams& p, bool adversarial,
                           std::mt19937& rng) {
  const int vocab = static_cast<int>(values.size());
  std::vector<float> out = values;
  std::shuffle(out.begin(), out.end(), rng);
  const bool filtered = (p.top_k > 0 && p.top_k < vocab) || p.top_p < 1.0f || p.min_p > 0.0f;
  if (!adversarial || !filtered || !(p.temperature > 0.0f)) return out;
  const std::vector<float> z = Scaled(values.data(), vocab, p.temperature);
  if (*std::max_element(z.begin(), z.end()) == -kInf) return out;
  const Analysis a = Analyse(z, p);
  if (a.loose + 1 >= a.groups.size()) return out;  // everything kept
  const std::vector<float> noise = Noise(p.key, vocab);
  const Group& dropped = a.groups[a.loose + 1];
  const Group& last_kept = a.groups[a.strict];
  const size_t needed = (dropped.end - dropped.begin) + (last_kept.end - last_kept.begin);
  std::vector<std::pair<float, int>> noisiest(vocab);
  for (int v = 0; v < vocab; ++v) noisiest[v] = {-noise[v], v};
  std::partial_sort(noisiest.begin(), noisiest.begin() + needed, noisiest.end());
  std::vector<int> by_noise(needed);
  for (size_t i = 0; i < needed; ++i) by_noise[i] = noisiest[i].second;
  std::vector<char> id_used(vocab, 0), value_used(vocab, 0);
  size_t next = 0;
  auto place = [&](const Group& g) {
    for (size_t i = g.begin; i < g.end; ++i) {
      const int id = by_noise[next++];
      out[id] = values[a.order[i]];
      id_used[id] = 1;
      value_used[a.order[i]] = 1;
    }
  };
  place(dropped);
  place(last_kept);
  std::vector<float> rest;
  for (int i = 0; i < vocab; ++i) {
    if (!value_used[i]) rest.push_back(values[i]);
  }
  std::shuffle(rest.begin(), rest.end(), rng);
  size_t r = 0;
  for (int id = 0; id < vocab; ++id) {
    if (!id_used[id]) out[id] = rest[r++];
  }
  return out;
}

// ---------------------------------------------------------------------------
// Running the kernel.

std::vector<int32_t> RunKernel(const std::vector<float>& logits, int vocab, const std::vector<RowParams>& params,
                               cudaStream_t stream = nullptr) {
  const int rows = static_cast<int>(params.size());
  std::vector<float> temperature, top_p, min_p;
  std::vector<int32_t> top_k;
  std::vector<uint32_t> keys;
  for (const RowParams& p : params) {
    temperature.push_back(p.temperature);
    top_k.push_back(p.top_k);
    top_p.push_back(p.top_p);
    min_p.push_back(p.min_p);
    keys.push_back(p.key);
  }
  DeviceBuffer d_logits = Upload(logits), d_temperature = Upload(temperature), d_top_k = Upload(top_k),
               d_top_p = Upload(top_p), d_min_p = Upload(min_p), d_keys = Upload(keys);
  DeviceBuffer d_tokens(rows * sizeof(int32_t));
  d_tokens.Poison();
  SampleArgs args;
  args.rows = rows;
  args.vocab = vocab;
  args.logits = d_logits.as<float>();
  args.temperature = d_temperature.as<float>();
  args.top_k = d_top_k.as<int32_t>();
  args.top_p = d_top_p.as<float>();
  args.min_p = d_min_p.as<float>();
  args.keys = d_keys.as<uint32_t>();
  args.tokens = d_tokens.as<int32_t>();
  const absl::Status status = SampleTokens(args, stream);
  EXPECT_TRUE(status.ok()) << status;
  Sync();
  return Download<int32_t>(d_tokens, rows);
}

struct RowCase {
  Shape shape = Shape::kNormal;
  RowParams params;
  bool snap = true;         // top_p / min_p into the middle of a gap
  bool adversarial = true;  // noise placed on the boundary groups
};

struct BatchStats {
  int rows = 0, ambiguous = 0, near_ties = 0;
};

// fn(0), ..., fn(n - 1) on the host's cores: the reference's sorts and
// logarithms over 150k-token rows dominate the file's run time.
template <typename Fn>
void ParallelFor(int n, Fn fn) {
  const unsigned workers = std::clamp(std::thread::hardware_concurrency(), 1u, 16u);
  std::atomic<int> next{0};
  std::vector<std::thread> threads;
  for (unsigned w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      for (int i = next++; i < n; i = next++) fn(i);
    });
  }
  for (std::thread& t : threads) t.join();
}

// Builds the rows, runs one launch, checks every row against the
// reference.
BatchStats CheckBatch(int vocab, std::vector<RowCase> cases, uint32_t seed) {
  const int rows = static_cast<int>(cases.size());
  std::vector<uint32_t> row_seeds(rows);
  std::seed_seq seq{seed};
  seq.generate(row_seeds.begin(), row_seeds.end());
  std::vector<float> logits(static_cast<size_t>(rows) * vocab);
  std::vector<RowParams> params(rows);
  ParallelFor(rows, [&](int r) {
    std::mt19937 rng(row_seeds[r]);
    RowCase& c = cases[r];
    const std::vector<float> values = Values(c.shape, vocab, rng);
    if (c.snap) Snap(values, &c.params);
    const std::vector<float> row = Arrange(values, c.params, c.adversarial, rng);
    std::copy(row.begin(), row.end(), logits.begin() + static_cast<size_t>(r) * vocab);
    params[r] = c.params;
  });
  const std::vector<int32_t> tokens = RunKernel(logits, vocab, params);
  std::vector<Expected> expected(rows);
  ParallelFor(rows, [&](int r) {
    expected[r] = Reference(logits.data() + static_cast<size_t>(r) * vocab, vocab, params[r]);
  });
  BatchStats stats;
  stats.rows = rows;
  for (int r = 0; r < rows; ++r) {
    const float* row = logits.data() + static_cast<size_t>(r) * vocab;
    const Expected& e = expected[r];
    const int32_t token = tokens[r];
    const std::string what = absl::StrCat("vocab=", vocab, " row=", r, " shape=", ShapeName(cases[r].shape), " ",
                                          Describe(params[r]), " seed=", seed);
    stats.ambiguous += e.ambiguous ? 1 : 0;
    const bool ok = Accepts(e, token);
    if (ok && token != e.acceptable[0]) ++stats.near_ties;
    if (!ok) {
      std::string detail;
      if (token >= 0 && token < vocab && params[r].temperature > 0.0f) {
        const float t = std::max(params[r].temperature, 1e-6f);
        const float zt = row[token] / t;
        detail = absl::StrCat(" kernel token z=", zt, " score=", zt + Gumbel(params[r].key, token));
        const float ze = row[e.draw] / t;
        absl::StrAppend(&detail, "; reference z=", ze, " score=", ze + Gumbel(params[r].key, e.draw));
      }
      ADD_FAILURE() << what << ": kernel " << token << ", reference " << e.draw << detail;
    }
    // top_k 1 is greedy on z when the most probable token is unique.
    if (params[r].temperature > 0.0f && params[r].top_k == 1) {
      const std::vector<float> z = Scaled(row, vocab, params[r].temperature);
      const int top = Greedy(z.data(), vocab);
      if (std::count(z.begin(), z.end(), z[top]) == 1) {
        EXPECT_EQ(token, top) << what << " (top_k 1)";
      }
    }
  }
  return stats;
}

// The parameter sets of the mixed batches, one per row in turn.
std::vector<RowParams> ParameterSets() {
  std::vector<RowParams> sets;
  auto add = [&](float t, int k, float p, float mp) { sets.push_back(RowParams{t, k, p, mp, 0}); };
  add(0.0f, 0, 1.0f, 0.0f);     // greedy
  add(1.0f, 0, 1.0f, 0.0f);     // temperature only
  add(0.7f, 0, 1.0f, 0.0f);
  add(1.0f, 1, 1.0f, 0.0f);     // top_k
  add(0.8f, 5, 1.0f, 0.0f);
  add(1.3f, 50, 1.0f, 0.0f);
  add(1.0f, 0, 0.1f, 0.0f);     // top_p
  add(0.9f, 0, 0.5f, 0.0f);
  add(1.0f, 0, 0.9f, 0.0f);
  add(1.0f, 0, 1.0f, 0.05f);    // min_p
  add(0.6f, 0, 1.0f, 0.2f);
  add(0.8f, 50, 0.9f, 0.0f);    // combinations
  add(1.0f, 20, 0.95f, 0.05f);
  add(1.2f, 0, 0.9f, 0.2f);
  add(0.7f, 1000, 0.99f, 0.0f);
  add(0.0f, 50, 0.9f, 0.05f);   // greedy ignores the filters
  return sets;
}

std::vector<RowCase> MixedCases(int rows, std::mt19937& rng) {
  const std::vector<RowParams> sets = ParameterSets();
  const Shape shapes[] = {Shape::kNormal, Shape::kTies, Shape::kPeaked, Shape::kMasked};
  std::vector<RowCase> cases;
  const int offset = static_cast<int>(rng() % sets.size());
  for (int r = 0; r < rows; ++r) {
    RowCase c;
    c.params = sets[(r + offset) % sets.size()];
    c.params.key = rng();
    c.shape = shapes[(r / 3) % 4];
    c.snap = r % 5 != 4;  // every fifth row keeps the nominal top_p / min_p
    cases.push_back(c);
  }
  return cases;
}

// ---------------------------------------------------------------------------

TEST(SampleTokensTest, MixedRowsMatchReference) {
  GANTRY_REQUIRE_GPU();
  std::mt19937 rng(20240611);
  BatchStats total;
  for (int vocab : {512, 32000, 128256, 151936}) {
    for (int rows : {1, 7, 64}) {
      const BatchStats s = CheckBatch(vocab, MixedCases(rows, rng), rng());
      total.rows += s.rows;
      total.ambiguous += s.ambiguous;
      total.near_ties += s.near_ties;
    }
  }
  std::printf("%d rows: %d with a group within the tolerances, %d decided by a near-tie\n", total.rows,
              total.ambiguous, total.near_ties);
  // The allowances must stay exceptions, or the comparison tests little.
  EXPECT_LE(total.ambiguous, total.rows / 8) << "rows with a group within the mass tolerance";
  EXPECT_LE(total.near_ties, total.rows / 50) << "rows decided by an ulp";
}

TEST(SampleTokensTest, UnalignedRowsAndOddVocabularies) {
  GANTRY_REQUIRE_GPU();
  // Odd vocabularies start rows off 16-byte alignment (scalar head and tail).
  std::mt19937 rng(7);
  for (int vocab : {1, 3, 1001, 50257}) CheckBatch(vocab, MixedCases(9, rng), rng());
}

TEST(SampleTokensTest, TopKInsideTieGroupKeepsTheGroup) {
  GANTRY_REQUIRE_GPU();
  // Values 0..15 with 64 tokens each: top_k anywhere inside a group keeps
  // the whole group; the boundary groups hold the largest noises.
  const int vocab = 1024;
  std::mt19937 rng(11);
  std::vector<float> values(vocab);
  for (int v = 0; v < vocab; ++v) values[v] = static_cast<float>(v / 64) * 0.25f;
  std::vector<RowParams> params;
  std::vector<float> logits;
  for (int k : {1, 2, 33, 64, 65, 100, 128, 129, 500, 1000}) {
    for (int rep = 0; rep < 4; ++rep) {
      RowParams p{1.0f, k, 1.0f, 0.0f, static_cast<uint32_t>(rng())};
      const std::vector<float> row = Arrange(values, p, /*adversarial=*/true, rng);
      logits.insert(logits.end(), row.begin(), row.end());
      params.push_back(p);
    }
  }
  const std::vector<int32_t> tokens = RunKernel(logits, vocab, params);
  for (size_t r = 0; r < params.size(); ++r) {
    const float* row = logits.data() + r * vocab;
    EXPECT_TRUE(Accepts(Reference(row, vocab, params[r]), tokens[r])) << Describe(params[r]) << " got " << tokens[r];
    // The token's group is within the groups the top_k reaches.
    const int groups_kept = (params[r].top_k + 63) / 64;
    EXPECT_GE(row[tokens[r]], static_cast<float>(16 - groups_kept) * 0.25f) << Describe(params[r]);
  }
}

TEST(SampleTokensTest, LargeGroupsAndFlatRowsRefineOverTheRow) {
  GANTRY_REQUIRE_GPU();
  // Thresholds in bins of more than 1024 tokens: a flat row (all in one
  // bin), wide tie groups, and top_k deep in the tail (e < 2^-32).
  std::mt19937 rng(13);
  std::vector<RowCase> cases;
  for (int k : {1, 100, 1500, 5000, 60000}) {
    cases.push_back({Shape::kFlat, RowParams{1.0f, k, 1.0f, 0.0f, static_cast<uint32_t>(rng())}});
  }
  for (float p : {0.3f, 0.7f}) {
    cases.push_back({Shape::kFlat, RowParams{1.0f, 0, p, 0.0f, static_cast<uint32_t>(rng())}});
  }
  cases.push_back({Shape::kFlat, RowParams{0.001f, 0, 0.5f, 0.0f, static_cast<uint32_t>(rng())}});
  for (int k : {3000, 20000, 100000}) {
    cases.push_back({Shape::kTies, RowParams{1.0f, k, 1.0f, 0.0f, static_cast<uint32_t>(rng())}});
    cases.push_back({Shape::kNormal, RowParams{0.25f, k, 1.0f, 0.0f, static_cast<uint32_t>(rng())}});
    cases.push_back({Shape::kNormal, RowParams{0.25f, k, 0.999999f, 0.0f, static_cast<uint32_t>(rng())}});
  }
  const BatchStats s = CheckBatch(128256, cases, 17);
  EXPECT_LE(s.near_ties, 1);
}

TEST(SampleTokensTest, LargestNoiseIsFiniteAndWinsOnlyWhenKept) {
  GANTRY_REQUIRE_GPU();
  // The largest noise the formula gives (bits >> 9 == 2^23 - 1: u = 1 - 2^-24,
  // g = 16.64) is finite, so no token wins by infinite noise; a token that
  // draws it wins when kept and never when dropped or -inf.
  const int vocab = 4096, token = 777;
  uint32_t key = 0;
  while ((Hash32(Hash32(key + token) ^ key) >> 9) != 0x7FFFFFu) ++key;
  ASSERT_TRUE(std::isfinite(Gumbel(key, token)));
  ASSERT_GT(Gumbel(key, token), 16.6f);
  std::mt19937 rng(43);
  std::normal_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> row(vocab);
  for (float& v : row) v = unit(rng);
  // Above most tokens but not the top: some 90 tokens are larger, holding
  // about 15% of the mass, and the largest probability is ~4x its own.
  row[token] = 2.0f;
  row[5] = -40.0f;  // the least probable: top_k vocab - 1 keeps `token`
  std::vector<float> masked = row;
  masked[token] = -kInf;
  struct Case {
    const std::vector<float>* logits;
    RowParams p;
    int expected;  // -1: anything but `token`
  };
  const Case cases[] = {{&row, {1.0f, 0, 1.0f, 0.0f, key}, token},
                        {&row, {0.5f, vocab - 1, 1.0f, 0.0f, key}, token},
                        {&row, {1.0f, 10, 1.0f, 0.0f, key}, -1},
                        {&row, {1.0f, 0, 0.1f, 0.0f, key}, -1},
                        {&row, {1.0f, 0, 1.0f, 0.5f, key}, -1},
                        {&masked, {1.0f, 0, 1.0f, 0.0f, key}, -1},
                        {&row, {0.0f, 0, 1.0f, 0.0f, key}, -1}};
  std::vector<float> logits;
  std::vector<RowParams> params;
  for (const Case& c : cases) {
    logits.insert(logits.end(), c.logits->begin(), c.logits->end());
    params.push_back(c.p);
  }
  const std::vector<int32_t> tokens = RunKernel(logits, vocab, params);
  for (size_t i = 0; i < params.size(); ++i) {
    const Expected e = Reference(cases[i].logits->data(), vocab, params[i]);
    if (cases[i].expected >= 0) {
      EXPECT_EQ(tokens[i], cases[i].expected) << Describe(params[i]);
    } else {
      EXPECT_NE(tokens[i], token) << Describe(params[i]);
    }
    EXPECT_TRUE(Accepts(e, tokens[i])) << Describe(params[i]) << " got " << tokens[i];
  }
}

TEST(SampleTokensTest, MaskedTokensAreNeverDrawn) {
  GANTRY_REQUIRE_GPU();
  const int vocab = 4096;
  std::mt19937 rng(19);
  std::vector<float> logits;
  std::vector<RowParams> params;
  std::vector<int> finite_count;
  for (int r = 0; r < 64; ++r) {
    std::vector<float> row(vocab, -kInf);
    const int finite = 1 + r % 5;  // a few live tokens; top_k beyond them keeps the -inf group
    for (int i = 0; i < finite; ++i) row[rng() % vocab] = static_cast<float>(rng() % 100) * 0.1f;
    logits.insert(logits.end(), row.begin(), row.end());
    const int k = r % 4 == 0 ? 0 : 10;
    params.push_back(RowParams{r % 8 == 7 ? 0.0f : 1.0f, k, r % 3 == 0 ? 0.99f : 1.0f, 0.0f,
                               static_cast<uint32_t>(rng())});
  }
  // Rows with every token masked: token 0, greedy or not, filters or not.
  for (int r = 0; r < 4; ++r) {
    logits.insert(logits.end(), vocab, -kInf);
    params.push_back(RowParams{r == 0 ? 0.0f : 1.0f, r == 2 ? 5 : 0, r == 3 ? 0.5f : 1.0f, r == 3 ? 0.1f : 0.0f, 99});
  }
  const std::vector<int32_t> tokens = RunKernel(logits, vocab, params);
  for (size_t r = 0; r < params.size(); ++r) {
    const float* row = logits.data() + r * vocab;
    EXPECT_TRUE(Accepts(Reference(row, vocab, params[r]), tokens[r]))
        << "row " << r << " " << Describe(params[r]) << " got " << tokens[r];
    if (r < 64) {
      ASSERT_GE(tokens[r], 0);
      ASSERT_LT(tokens[r], vocab);
      EXPECT_GT(row[tokens[r]], -kInf) << "row " << r;
    } else {
      EXPECT_EQ(tokens[r], 0) << "all masked, row " << r;
    }
  }
}

TEST(SampleTokensTest, PeakedTopPKeepsOnlyThePeak) {
  GANTRY_REQUIRE_GPU();
  const int vocab = 32000, rows = 128;
  std::mt19937 rng(23);
  std::normal_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> logits(static_cast<size_t>(rows) * vocab);
  std::vector<RowParams> params;
  std::vector<int> peak(rows);
  for (int r = 0; r < rows; ++r) {
    for (int v = 0; v < vocab; ++v) logits[static_cast<size_t>(r) * vocab + v] = unit(rng);
    peak[r] = static_cast<int>(rng() % vocab);
    logits[static_cast<size_t>(r) * vocab + peak[r]] = 30.0f;
    params.push_back(RowParams{r % 2 == 0 ? 1.0f : 2.0f, r % 4 == 1 ? 1000 : 0, 0.5f, 0.0f,
                               static_cast<uint32_t>(rng())});
  }
  const std::vector<int32_t> tokens = RunKernel(logits, vocab, params);
  for (int r = 0; r < rows; ++r) EXPECT_EQ(tokens[r], peak[r]) << "row " << r << " " << Describe(params[r]);
}

TEST(SampleTokensTest, FrequenciesMatchProbabilities) {
  GANTRY_REQUIRE_GPU();
  // Temperature 1, no filters: 20,000 draws of one 8-token distribution
  // under different keys; each frequency within 4 sigma of its probability.
  const int vocab = 8, draws = 20000;
  const std::vector<float> row = {1.0f, 0.0f, -1.0f, 2.0f, 0.5f, -3.0f, 1.5f, 0.25f};
  std::vector<double> prob(vocab);
  double sum = 0.0;
  for (int v = 0; v < vocab; ++v) sum += prob[v] = std::exp(static_cast<double>(row[v]));
  for (double& p : prob) p /= sum;
  std::mt19937 rng(29);
  std::vector<float> logits;
  std::vector<RowParams> params;
  for (int i = 0; i < draws; ++i) {
    logits.insert(logits.end(), row.begin(), row.end());
    params.push_back(RowParams{1.0f, 0, 1.0f, 0.0f, static_cast<uint32_t>(rng())});
  }
  const std::vector<int32_t> tokens = RunKernel(logits, vocab, params);
  std::vector<int> counts(vocab, 0);
  for (int i = 0; i < draws; ++i) {
    ASSERT_GE(tokens[i], 0);
    ASSERT_LT(tokens[i], vocab);
    ++counts[tokens[i]];
  }
  for (int v = 0; v < vocab; ++v) {
    const double freq = static_cast<double>(counts[v]) / draws;
    const double sigma = std::sqrt(prob[v] * (1.0 - prob[v]) / draws);
    EXPECT_LE(std::fabs(freq - prob[v]), 4.0 * sigma) << "token " << v << " p=" << prob[v] << " freq=" << freq;
  }
  // And every draw is the reference's.
  for (int i = 0; i < 200; ++i) EXPECT_TRUE(Accepts(Reference(row.data(), vocab, params[i]), tokens[i])) << i;
}

TEST(SampleTokensTest, TopK3NeverLeavesTheTop3) {
  GANTRY_REQUIRE_GPU();
  const int vocab = 1000, draws = 4000;
  std::mt19937 rng(31);
  std::normal_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> row(vocab);
  for (float& v : row) v = unit(rng);
  std::vector<int> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return row[a] > row[b]; });
  std::vector<float> logits;
  std::vector<RowParams> params;
  for (int i = 0; i < draws; ++i) {
    logits.insert(logits.end(), row.begin(), row.end());
    params.push_back(RowParams{3.0f, 3, 1.0f, 0.0f, static_cast<uint32_t>(rng())});  // flat: all three drawn
  }
  const std::vector<int32_t> tokens = RunKernel(logits, vocab, params);
  std::vector<int> counts(3, 0);
  for (int i = 0; i < draws; ++i) {
    const auto it = std::find(order.begin(), order.begin() + 3, tokens[i]);
    ASSERT_NE(it, order.begin() + 3) << "draw " << i << " gave token " << tokens[i];
    ++counts[it - order.begin()];
  }
  for (int j = 0; j < 3; ++j) EXPECT_GT(counts[j], 0) << "top token " << j << " never drawn";
}

TEST(SampleTokensTest, DeterministicAndGraphCapturable) {
  GANTRY_REQUIRE_GPU();
  const int vocab = 32000;
  std::mt19937 rng(37);
  std::vector<float> logits;
  std::vector<RowParams> params;
  const std::vector<RowParams> sets = ParameterSets();
  for (int r = 0; r < 32; ++r) {
    const std::vector<float> row = Values(r % 2 ? Shape::kTies : Shape::kNormal, vocab, rng);
    logits.insert(logits.end(), row.begin(), row.end());
    RowParams p = sets[r % sets.size()];
    p.key = rng();
    params.push_back(p);
  }
  const std::vector<int32_t> first = RunKernel(logits, vocab, params);
  EXPECT_EQ(RunKernel(logits, vocab, params), first);

  // The same launch captured in a CUDA graph and replayed.
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  const int rows = static_cast<int>(params.size());
  std::vector<float> temperature, top_p, min_p;
  std::vector<int32_t> top_k;
  std::vector<uint32_t> keys;
  for (const RowParams& p : params) {
    temperature.push_back(p.temperature);
    top_k.push_back(p.top_k);
    top_p.push_back(p.top_p);
    min_p.push_back(p.min_p);
    keys.push_back(p.key);
  }
  DeviceBuffer d_logits = Upload(logits), d_temperature = Upload(temperature), d_top_k = Upload(top_k),
               d_top_p = Upload(top_p), d_min_p = Upload(min_p), d_keys = Upload(keys);
  DeviceBuffer d_tokens(rows * sizeof(int32_t));
  d_tokens.Poison();
  SampleArgs args;
  args.rows = rows;
  args.vocab = vocab;
  args.logits = d_logits.as<float>();
  args.temperature = d_temperature.as<float>();
  args.top_k = d_top_k.as<int32_t>();
  args.top_p = d_top_p.as<float>();
  args.min_p = d_min_p.as<float>();
  args.keys = d_keys.as<uint32_t>();
  args.tokens = d_tokens.as<int32_t>();
  Sync();  // the uploads and the poison, on the legacy stream, are done before the capture
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const absl::Status status = SampleTokens(args, stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(status.ok()) << status;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int i = 0; i < 2; ++i) ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(Download<int32_t>(d_tokens, rows), first);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// Without parameters (temperature == nullptr) every row is greedy: its
// argmax, the lowest id among equal maxima, token 0 for a row of -inf; the
// same as the same rows with temperature 0 and their filters set.
TEST(SampleTokensTest, GreedyWithoutParametersIsEachRowsArgmax) {
  GANTRY_REQUIRE_GPU();
  std::mt19937 rng(99);
  for (int vocab : {1, 3, 1001, 128256, 151936}) {
    for (int rows : {1, 7, 64}) {
      const Shape shapes[] = {Shape::kNormal, Shape::kPeaked, Shape::kTies,
                              Shape::kMasked, Shape::kFlat,   Shape::kAllMasked};
      std::vector<float> logits;
      for (int r = 0; r < rows; ++r) {
        const std::vector<float> row = Values(shapes[(r + vocab) % 6], vocab, rng);
        logits.insert(logits.end(), row.begin(), row.end());
      }
      DeviceBuffer d_logits = Upload(logits);
      DeviceBuffer d_tokens(rows * sizeof(int32_t)), d_filtered_tokens(rows * sizeof(int32_t));
      d_tokens.Poison();
      SampleArgs args;
      args.rows = rows;
      args.vocab = vocab;
      args.logits = d_logits.as<float>();
      args.tokens = d_tokens.as<int32_t>();
      ASSERT_TRUE(SampleTokens(args, nullptr).ok());
      // The same rows greedy through their parameters, filters on.
      const std::vector<float> zero(rows, 0.0f), top_p(rows, 0.9f), min_p(rows, 0.05f);
      const std::vector<int32_t> top_k(rows, 50);
      std::vector<uint32_t> keys(rows);
      for (uint32_t& k : keys) k = rng();
      DeviceBuffer d_zero = Upload(zero), d_top_p = Upload(top_p), d_min_p = Upload(min_p), d_top_k = Upload(top_k),
                   d_keys = Upload(keys);
      SampleArgs with_params = args;
      with_params.temperature = d_zero.as<float>();
      with_params.top_k = d_top_k.as<int32_t>();
      with_params.top_p = d_top_p.as<float>();
      with_params.min_p = d_min_p.as<float>();
      with_params.keys = d_keys.as<uint32_t>();
      with_params.tokens = d_filtered_tokens.as<int32_t>();
      ASSERT_TRUE(SampleTokens(with_params, nullptr).ok());
      Sync();
      const std::vector<int32_t> tokens = Download<int32_t>(d_tokens, rows);
      const std::vector<int32_t> filtered = Download<int32_t>(d_filtered_tokens, rows);
      for (int r = 0; r < rows; ++r) {
        const float* row = logits.data() + static_cast<size_t>(r) * vocab;
        EXPECT_EQ(tokens[r], Greedy(row, vocab)) << "vocab " << vocab << " row " << r << " of " << rows;
        EXPECT_EQ(filtered[r], tokens[r]) << "vocab " << vocab << " row " << r << " of " << rows;
      }
    }
  }
}

// Mean time of `iterations` back-to-back launches after a warm-up one.
double MeanMicroseconds(const SampleArgs& args, int iterations) {
  EXPECT_TRUE(SampleTokens(args, nullptr).ok());  // warm-up
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cudaEventRecord(start);
  for (int i = 0; i < iterations; ++i) EXPECT_TRUE(SampleTokens(args, nullptr).ok());
  cudaEventRecord(stop);
  Sync();
  float ms = 0.0f;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return 1000.0 * ms / iterations;
}

TEST(SampleTokensTest, Timing) {
  GANTRY_REQUIRE_GPU();
  // Not a pass/fail measure beyond a loose bound: prints the time of a
  // 64 x 128256 step for the lead's records.
  const int vocab = 128256, rows = 64;
  std::mt19937 rng(41);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(static_cast<size_t>(rows) * vocab);
  for (float& v : logits) v = normal(rng);
  DeviceBuffer d_logits = Upload(logits);
  DeviceBuffer d_tokens(rows * sizeof(int32_t));
  struct Config {
    const char* name;
    RowParams p;
  };
  const Config configs[] = {{"greedy", {0.0f, 0, 1.0f, 0.0f, 0}},
                            {"temperature only", {1.0f, 0, 1.0f, 0.0f, 0}},
                            {"top_k 50 top_p 0.9", {0.8f, 50, 0.9f, 0.0f, 0}},
                            {"top_p 0.95 min_p 0.05", {1.0f, 0, 0.95f, 0.05f, 0}}};
  for (const Config& c : configs) {
    std::vector<float> temperature(rows, c.p.temperature), top_p(rows, c.p.top_p), min_p(rows, c.p.min_p);
    std::vector<int32_t> top_k(rows, c.p.top_k);
    std::vector<uint32_t> keys(rows);
    for (uint32_t& k : keys) k = rng();
    DeviceBuffer d_temperature = Upload(temperature), d_top_k = Upload(top_k), d_top_p = Upload(top_p),
                 d_min_p = Upload(min_p), d_keys = Upload(keys);
    SampleArgs args;
    args.rows = rows;
    args.vocab = vocab;
    args.logits = d_logits.as<float>();
    args.temperature = d_temperature.as<float>();
    args.top_k = d_top_k.as<int32_t>();
    args.top_p = d_top_p.as<float>();
    args.min_p = d_min_p.as<float>();
    args.keys = d_keys.as<uint32_t>();
    args.tokens = d_tokens.as<int32_t>();
    const double us = MeanMicroseconds(args, 20);
    std::printf("SampleTokens %d x %d, %s: %.1f us\n", rows, vocab, c.name, us);
    EXPECT_LT(us, 2000.0) << c.name;
  }
  // A batch-1 greedy decode step's sampling: one row, no parameters.
  SampleArgs greedy;
  greedy.rows = 1;
  greedy.vocab = vocab;
  greedy.logits = d_logits.as<float>();
  greedy.tokens = d_tokens.as<int32_t>();
  std::printf("SampleTokens 1 x %d, greedy without parameters: %.1f us\n", vocab, MeanMicroseconds(greedy, 100));
}

TEST(SampleTokensTest, RejectsInvalidArguments) {
  GANTRY_REQUIRE_GPU();
  DeviceBuffer buffer(4096);
  SampleArgs args;
  args.rows = 1;
  args.vocab = 8;
  args.logits = buffer.as<float>();
  args.temperature = buffer.as<float>();
  args.top_k = buffer.as<int32_t>();
  args.top_p = buffer.as<float>();
  args.min_p = buffer.as<float>();
  args.keys = buffer.as<uint32_t>();
  args.tokens = nullptr;
  EXPECT_EQ(SampleTokens(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
  args.tokens = buffer.as<int32_t>();
  args.keys = nullptr;  // a temperature needs every parameter
  EXPECT_EQ(SampleTokens(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
  args.temperature = nullptr;  // greedy rows need none
  args.top_k = nullptr;
  args.top_p = args.min_p = nullptr;
  EXPECT_TRUE(SampleTokens(args, nullptr).ok());
  args.logits = nullptr;
  EXPECT_EQ(SampleTokens(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
  args.logits = buffer.as<float>();
  args.vocab = 0;
  EXPECT_EQ(SampleTokens(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
  args.vocab = 8;
  args.rows = 0;  // nothing to do
  EXPECT_TRUE(SampleTokens(args, nullptr).ok());
}

}  // namespace
}  // namespace gantry::cuda
