// One token per row (kernels.h SampleTokens): greedy argmax, or a Gumbel-max
// draw over the tokens kept by top_k / top_p / min_p, without sorting the
// vocabulary. One thread block of 1024 threads per row; the row (512 KB in
// float32 at 128k tokens) is read once from HBM and then re-read from L2.
//
// Passes over a sampled row, each a coalesced sweep with 16-byte loads:
//   1. max and argmax of the logits (the argmax is also the greedy answer).
//   2. (filters on) every token's unnormalised probability
//      e = exp((l - max) / t) and the normaliser; a histogram of count and
//      mass over 2048 equal bins of y = log2(1/e) in [0, window), masses in
//      2^-40 fixed point so that the sums are exact, order-independent and
//      the same on every run; and, for min_p, the smallest logit with
//      e >= min_p. Tokens past the window (at most 32 octaves, fewer when
//      top_p or min_p bound where the threshold can lie) are only counted
//      in registers as one tail bin: shared atomics are the costly part of
//      the pass. The bins fall in order of decreasing probability, so one
//      scan finds the bin where the count reaches top_k or the mass first
//      exceeds top_p * sum: the bin of the threshold token.
//   3. that bin's tokens are gathered into shared memory (up to 1024;
//      typically a few dozen, as bins are narrow) and the exact threshold
//      found there by radix steps on the logit's bit pattern. A bin too full
//      for shared memory (a tie group of thousands, a flat row, the tail) is
//      refined by the same radix steps over the row itself, at most three
//      more passes.
//   4. the draw: argmax of z + g(key, v) over the kept tokens, lowest id on
//      ties.
// A row without filters runs passes 1 and 4 only; a greedy row pass 1 only
// (a batch of greedy rows comes without parameters: far faster than
// LibTorch's argmax of one long row, which took 40 us at 128k tokens on the
// H100, 0.7% of a batch-1 step).
//
// The selection runs on logits, not on z = l / t, so no pass divides: the
// order of l is the order of z, and a threshold logit l* becomes the z
// threshold z* = l* / t, which keeps exactly the tokens of z >= z* (a token
// whose logit differs from l* but rounds to the same z is a tie and is kept,
// as kernels.h asks). top_k counts tokens, so its threshold is exact; top_p
// and min_p compare masses computed in float32, so a token whose exclusive
// mass is within float rounding of top_p * sum (about 1e-6 relative), or
// whose e is within rounding of min_p, may go either way. The masses use
// exp2f((max - l) * log2(e) / t), the same formula in every pass, so a token
// always lands in the same bin. min_p keeps the tokens with e >= min_p (e of
// the most probable token is exactly 1), i.e. q >= min_p * p_max with q and
// p_max sharing one float32 normaliser.
//
// The noise is bit-identical to the LibTorch sampler (runtime/sampler.cc),
// which uses the same CUDA logf. u = ((bits >> 9) + 0.5) / 2^23 is exact in
// float32 and lies in [2^-24, 1 - 2^-24], so every g is finite and at most
// 16.64: pass 4 skips the hash, the division and the two logarithms of tokens
// whose z is more than 17 below the score of the argmax token (which is
// always kept).
//
// No global memory besides the arguments, no host synchronisation, no
// state carried between launches: safe to capture in a CUDA graph.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "runtime/cuda/hash32.h"
#include "runtime/cuda/launch.h"

namespace gantry::cuda {
namespace {

using u64 = unsigned long long;

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 2 * kThreads;  // two per thread in the scan
constexpr float kMaxWindow = 32.0f;  // octaves: tokens with e < 2^-32 always go to the tail bin
constexpr int kTailBin = kBins;
constexpr int kNoBin = INT_MAX;
constexpr int kMaxCandidates = kThreads;  // one per thread
// 16-byte loads in flight per thread: pass 1 streams from HBM with little
// work per element; the later passes read L2 and need registers for work.
constexpr int kUnrollHbm = 4;
constexpr int kUnrollL2 = 2;
constexpr float kMassOne = 0x1p40f;       // fixed-point scale: e = 1 is 2^40, sums < 2^64 below 2^24 tokens
constexpr float kMinTemperature = 1e-6f;  // as the LibTorch sampler's clamp
constexpr float kLog2e = 1.4426950408889634f;
// Largest Gumbel value the noise formula produces (u = 1 - 2^-24 gives
// 16.6355), rounded up.
constexpr double kMaxGumbel = 17.0;

// ---------------------------------------------------------------------------
// Noise, as runtime/sampler.cc computes it on the device.

__device__ __forceinline__ uint32_t NoiseBits(uint32_t key, uint32_t token) {
  return Hash32(Hash32(key + token) ^ key);
}

__device__ __forceinline__ float Gumbel(uint32_t bits) {
  // The intrinsics keep the compiler from contracting or reassociating;
  // multiplying by 2^-23 is exact, as torch's division by 2^23 is.
  const float u = __fmul_rn(__fadd_rn(static_cast<float>(bits >> 9), 0.5f), 0x1p-23f);
  return -logf(-logf(u));
}

// ---------------------------------------------------------------------------
// Logit keys: unsigned integers in the order of the floats (-0 as +0, so
// equal values have equal keys), and back.

__device__ __forceinline__ uint32_t Key(float l) {
  const uint32_t b = l == 0.0f ? 0u : __float_as_uint(l);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float Value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
}

// y = log2(1 / e) = (max - l) * log2(e) / t >= 0, monotone in l; every pass
// computes it, the bins and the masses by these same functions, so a token
// lands in the same bin and carries the same mass in each.
__device__ __forceinline__ float Octaves(float l, float max_logit, float scale) {
  return __fmul_rn(__fsub_rn(max_logit, l), scale);
}

// The level-0 bins: y in [0, window) in kBins equal steps, the rest (NaN and
// +inf included) in the tail bin. Nondecreasing in y.
struct Binning {
  float window;
  float scale;  // kBins / window
};

__device__ __forceinline__ int Bin(float y, const Binning& b) {
  return y < b.window ? min(kBins - 1, static_cast<int>(__fmul_rn(y, b.scale))) : kTailBin;
}

__device__ __forceinline__ u64 FixedMass(float e) { return __float2ull_rn(__fmul_rn(e, kMassOne)); }

__device__ __forceinline__ u64 Mass(float y) { return FixedMass(exp2f(-y)); }

// ---------------------------------------------------------------------------
// Block-wide helpers. blockDim.x == kThreads.

struct ValueId {
  float value;
  int id;
};

// a beats b: larger value, then lower id; NaN never wins.
__device__ __forceinline__ bool Beats(const ValueId& a, const ValueId& b) {
  return a.value > b.value || (a.value == b.value && a.id < b.id);
}

// Where the running count reaches top_k (or the mass first exceeds the
// top_p limit) in a histogram scanned from its most probable bin.
struct Crossing {
  int bin;               // kNoBin: not in this histogram
  uint32_t count_above;  // tokens more probable than the bin
  u64 mass_above;
  uint32_t count;        // tokens in the bin
};

struct SharedState {
  uint32_t bin_count[kBins];
  // Bin masses as two 32-bit words: a 64-bit shared atomicAdd compiles to a
  // compare-and-swap loop, two 32-bit ones are native (AddToBin).
  uint32_t bin_mass_lo[kBins];
  uint32_t bin_mass_hi[kBins];
  uint32_t cand_key[kMaxCandidates];
  u64 cand_mass[kMaxCandidates];
  u64 red_u64[kWarps];
  uint32_t red_u32[kWarps];
  float red_f32[kWarps];
  int red_i32[kWarps];
  uint32_t scan_count[kWarps];
  u64 scan_mass[kWarps];
  Crossing k_cross, p_cross;
  uint32_t num_cand;
};

struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Min {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a < b ? a : b; }
};
struct Max {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a > b ? a : b; }
};

__device__ __forceinline__ u64* Scratch(SharedState& sh, u64) { return sh.red_u64; }
__device__ __forceinline__ uint32_t* Scratch(SharedState& sh, uint32_t) { return sh.red_u32; }
__device__ __forceinline__ float* Scratch(SharedState& sh, float) { return sh.red_f32; }

// The reduction of x over the block, returned to every thread. Starts with a
// barrier, so consecutive calls may share the scratch array, and so shared
// writes made before the call are visible after it. Fixed order: the same
// inputs give the same result.
template <typename T, typename Op>
__device__ __forceinline__ T BlockReduce(SharedState& sh, T x, Op op) {
  T* scratch = Scratch(sh, T{});
  __syncthreads();
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, offset));
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = x;
  __syncthreads();
  x = scratch[threadIdx.x & 31];
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

__device__ __forceinline__ ValueId WarpArgMax(ValueId x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const ValueId other{__shfl_xor_sync(0xffffffffu, x.value, offset), __shfl_xor_sync(0xffffffffu, x.id, offset)};
    if (Beats(other, x)) x = other;
  }
  return x;
}

__device__ __forceinline__ ValueId BlockArgMax(SharedState& sh, ValueId x) {
  __syncthreads();
  x = WarpArgMax(x);
  if ((threadIdx.x & 31) == 0) {
    sh.red_f32[threadIdx.x >> 5] = x.value;
    sh.red_i32[threadIdx.x >> 5] = x.id;
  }
  __syncthreads();
  return WarpArgMax({sh.red_f32[threadIdx.x & 31], sh.red_i32[threadIdx.x & 31]});
}

// Calls fn(value, index) once for every element of row[0, n): 16-byte loads
// over the aligned middle, kUnroll of them issued before any is used, and
// single loads for the unaligned ends. row is 4-byte aligned.
template <int kUnroll = kUnrollL2, typename Fn>
__device__ __forceinline__ void ForEachInRow(const float* __restrict__ row, int n, Fn&& fn) {
  const int tid = threadIdx.x;
  const int misaligned = static_cast<int>((reinterpret_cast<uintptr_t>(row) >> 2) & 3);
  const int head = min(n, (4 - misaligned) & 3);
  if (tid < head) fn(row[tid], tid);
  const float4* body = reinterpret_cast<const float4*>(row + head);
  const int num_vecs = (n - head) >> 2;
  for (int base = tid; base < num_vecs; base += kUnroll * kThreads) {
    float4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = base + u * kThreads;
      v[u] = i < num_vecs ? __ldg(body + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = base + u * kThreads;
      if (i < num_vecs) {
        const int index = head + 4 * i;
        fn(v[u].x, index);
        fn(v[u].y, index + 1);
        fn(v[u].z, index + 2);
        fn(v[u].w, index + 3);
      }
    }
  }
  const int rest = head + 4 * num_vecs;  // fewer than 4 left
  if (rest + tid < n) fn(row[rest + tid], rest + tid);
}

// ---------------------------------------------------------------------------
// Threshold selection.

// What the selection still looks for, and the tokens above the current
// region (all more probable than any token in it).
struct Targets {
  bool k_on, p_on;
  uint32_t k;     // keep while fewer than k tokens are more probable
  u64 p_limit;    // keep while the more probable tokens hold at most this mass
  uint32_t count_above;
  u64 mass_above;
};

__device__ __forceinline__ void ClearBins(SharedState& sh) {
  for (int i = threadIdx.x; i < kBins; i += kThreads) {
    sh.bin_count[i] = 0;
    sh.bin_mass_lo[i] = 0;
    sh.bin_mass_hi[i] = 0;
  }
  if (threadIdx.x == 0) {
    sh.k_cross.bin = kNoBin;
    sh.p_cross.bin = kNoBin;
  }
}

// The mass goes in as two words; the add that wraps the low word carries
// into the high one, so the sum is exact in whatever order the adds land.
__device__ __forceinline__ void AddToBin(SharedState& sh, int bin, bool with_mass, u64 mass) {
  atomicAdd(&sh.bin_count[bin], 1u);
  if (!with_mass) return;
  const uint32_t lo = static_cast<uint32_t>(mass);
  const uint32_t old = atomicAdd(&sh.bin_mass_lo[bin], lo);
  const uint32_t hi = static_cast<uint32_t>(mass >> 32) + (old + lo < old ? 1u : 0u);
  if (hi != 0) atomicAdd(&sh.bin_mass_hi[bin], hi);
}

__device__ __forceinline__ u64 BinMass(const SharedState& sh, int bin) {
  return (static_cast<u64>(sh.bin_mass_hi[bin]) << 32) | sh.bin_mass_lo[bin];
}

// Scans the filled bins (bin 0 most probable) and records the bins where the
// count reaches t.k and where the mass first exceeds t.p_limit, counting
// t.count_above / t.mass_above before bin 0. Each lies in at most one bin:
// the running sums only grow, and a bin that adds no mass cannot be where
// the mass crosses. Ends with a barrier; read sh.k_cross / sh.p_cross after.
__device__ void FindCrossings(SharedState& sh, const Targets& t) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int b = 2 * threadIdx.x;
  const uint32_t c0 = sh.bin_count[b], c1 = sh.bin_count[b + 1];
  const u64 m0 = t.p_on ? BinMass(sh, b) : 0, m1 = t.p_on ? BinMass(sh, b + 1) : 0;
  uint32_t c = c0 + c1;
  u64 m = m0 + m1;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {  // inclusive scan in the warp
    const uint32_t c_up = __shfl_up_sync(0xffffffffu, c, offset);
    const u64 m_up = __shfl_up_sync(0xffffffffu, m, offset);
    if (lane >= offset) {
      c += c_up;
      m += m_up;
    }
  }
  if (lane == 31) {
    sh.scan_count[warp] = c;
    sh.scan_mass[warp] = m;
  }
  __syncthreads();
  // Every warp scans the 32 warp totals itself (no second barrier).
  uint32_t wc = sh.scan_count[lane];
  u64 wm = sh.scan_mass[lane];
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const uint32_t c_up = __shfl_up_sync(0xffffffffu, wc, offset);
    const u64 m_up = __shfl_up_sync(0xffffffffu, wm, offset);
    if (lane >= offset) {
      wc += c_up;
      wm += m_up;
    }
  }
  const uint32_t warps_count = __shfl_sync(0xffffffffu, wc, (warp + 31) & 31);
  const u64 warps_mass = __shfl_sync(0xffffffffu, wm, (warp + 31) & 31);
  uint32_t count_above = t.count_above + (warp > 0 ? warps_count : 0u) + (c - c0 - c1);
  u64 mass_above = t.mass_above + (warp > 0 ? warps_mass : 0ull) + (m - m0 - m1);
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const uint32_t count = j == 0 ? c0 : c1;
    const u64 mass = j == 0 ? m0 : m1;
    if (t.k_on && count_above < t.k && t.k <= count_above + count) {
      sh.k_cross = {b + j, count_above, mass_above, count};
    }
    if (t.p_on && mass_above <= t.p_limit && t.p_limit < mass_above + mass) {
      sh.p_cross = {b + j, count_above, mass_above, count};
    }
    count_above += count;
    mass_above += mass;
  }
  __syncthreads();
}

// Moves to the stricter of the two crossings (the more probable bin); a
// criterion whose crossing lies in a less probable bin no longer matters.
// False when neither is active.
__device__ __forceinline__ bool Narrow(Targets& t, const Crossing& kc, const Crossing& pc, Crossing* region) {
  const int kb = t.k_on ? kc.bin : kNoBin;
  const int pb = t.p_on ? pc.bin : kNoBin;
  if (kb == kNoBin && pb == kNoBin) {
    t.k_on = t.p_on = false;
    return false;
  }
  const int b = min(kb, pb);
  t.k_on = kb == b;
  t.p_on = pb == b;
  *region = t.k_on ? kc : pc;
  t.count_above = region->count_above;
  t.mass_above = region->mass_above;
  return true;
}

// One pass over the row: the smallest and largest key of the tokens for
// which in_region(l) holds, returned to every thread, and, when `store`,
// those tokens' keys and masses in sh.cand_* (the caller knows they fit).
template <typename InRegion>
__device__ __forceinline__ void Gather(SharedState& sh, const float* __restrict__ row, int vocab, float max_logit,
                                       float scale, bool store, bool with_mass, InRegion in_region, uint32_t* lo,
                                       uint32_t* hi) {
  __syncthreads();  // earlier readers of num_cand and the candidates are done
  if (threadIdx.x == 0) sh.num_cand = 0;
  __syncthreads();
  uint32_t key_min = UINT_MAX, key_max = 0;
  ForEachInRow(row, vocab, [&](float l, int) {
    if (!in_region(l)) return;
    const uint32_t key = Key(l);
    key_min = min(key_min, key);
    key_max = max(key_max, key);
    if (store) {
      const uint32_t slot = atomicAdd(&sh.num_cand, 1u);
      if (slot < kMaxCandidates) {
        sh.cand_key[slot] = key;
        sh.cand_mass[slot] = with_mass ? Mass(Octaves(l, max_logit, scale)) : 0ull;
      }
    }
  });
  *lo = BlockReduce(sh, key_min, Min());
  *hi = BlockReduce(sh, key_max, Max());
}

// The smallest kept logit under top_k, top_p and min_p (the strictest of
// the three thresholds), or -inf when none is active. It is always the logit
// of some token. Uniform across the block.
__device__ float SelectThreshold(SharedState& sh, const float* __restrict__ row, int vocab, float max_logit,
                                 float scale, int top_k, float top_p, float min_p) {
  const bool k_on = top_k > 0 && top_k < vocab;
  const bool p_on = top_p < 1.0f;
  const bool m_on = min_p > 0.0f;
  const bool histogram = k_on || p_on;

  // The histogram window: shared atomics are the costly part of pass 2, so
  // tokens that cannot hold the threshold stay out of the bins. Those past
  // log2(vocab / (1 - top_p)) + 1 octaves hold less than (1 - top_p) / 2 of
  // the mass, so top_p's threshold lies before them; those past
  // log2(1 / min_p) are below min_p's threshold. The bound only saves work:
  // a threshold in the tail is still found there.
  float window = kMaxWindow;
  if (p_on) window = fminf(window, log2f(static_cast<float>(vocab)) - log2f(fmaxf(1.0f - top_p, 1e-30f)) + 1.0f);
  if (m_on) window = fminf(window, -log2f(min_p) + 0.125f);
  window = fmaxf(window, 0.125f);
  const Binning binning{window, kBins / window};

  // Pass 2: masses, the histogram, the min_p threshold.
  if (histogram) {
    ClearBins(sh);
    __syncthreads();
  }
  u64 window_mass = 0;    // fixed point, exact: the bins' total
  float tail_e = 0.0f;    // only for the normaliser
  uint32_t tail_count = 0;
  float min_p_logit = INFINITY;  // smallest logit with e >= min_p
  ForEachInRow(row, vocab, [&](float l, int) {
    const float y = Octaves(l, max_logit, scale);
    const float e = (p_on || m_on) ? exp2f(-y) : 0.0f;
    if (histogram) {
      const int bin = Bin(y, binning);
      if (bin < kBins) {
        const u64 mass = p_on ? FixedMass(e) : 0ull;
        window_mass += mass;
        AddToBin(sh, bin, p_on, mass);
      } else {
        ++tail_count;
        tail_e += e;
      }
    }
    // The most probable token qualifies even for min_p > 1.
    if (m_on && (e >= min_p || l == max_logit)) min_p_logit = fminf(min_p_logit, l);
  });
  const float min_p_threshold = m_on ? BlockReduce(sh, min_p_logit, Min()) : -INFINITY;
  if (!histogram) return min_p_threshold;
  window_mass = BlockReduce(sh, window_mass, Sum());  // also publishes the histogram
  tail_count = BlockReduce(sh, tail_count, Sum());
  const u64 total_mass = window_mass + (p_on ? FixedMass(BlockReduce(sh, tail_e, Sum())) : 0ull);

  Targets t;
  t.k_on = k_on;
  t.p_on = p_on;
  t.k = static_cast<uint32_t>(top_k);
  // Exclusive mass <= top_p * sum, in fixed point (< sum since top_p < 1).
  t.p_limit = p_on && top_p > 0.0f ? static_cast<u64>(static_cast<double>(top_p) * static_cast<double>(total_mass))
                                   : 0ull;
  t.count_above = 0;
  t.mass_above = 0;
  FindCrossings(sh, t);
  Crossing kc = sh.k_cross, pc = sh.p_cross;
  // Not in the window: in the tail (top_k < vocab, and p_limit < total
  // mass).
  const Crossing tail{kTailBin, static_cast<uint32_t>(vocab) - tail_count, window_mass, tail_count};
  if (kc.bin == kNoBin) kc = tail;
  if (pc.bin == kNoBin) pc = tail;
  Crossing region;
  if (!Narrow(t, kc, pc, &region)) return min_p_threshold;
  // The whole bin is less probable than the min_p threshold token.
  if (m_on && Bin(Octaves(min_p_threshold, max_logit, scale), binning) < region.bin) return min_p_threshold;

  // Pass 3: the bin's tokens, with the exact range of their keys.
  uint32_t lo, hi;
  const int region_bin = region.bin;
  bool have_candidates = region.count <= kMaxCandidates;
  Gather(sh, row, vocab, max_logit, scale, have_candidates, t.p_on,
         [&](float l) { return Bin(Octaves(l, max_logit, scale), binning) == region_bin; }, &lo, &hi);
  bool exact = true;  // lo and hi are keys of tokens in the region
  uint32_t n = region.count;
  const uint32_t min_p_key = m_on ? Key(min_p_threshold) : 0u;

  // Radix steps on the keys in [lo, hi]: bin (hi - key) >> shift, most
  // probable first. A key width below 2^32 needs at most three steps, so the
  // fourth iteration only ever stops.
  for (int step = 0; step < 4; ++step) {
    // Resolved: one value left; or (keys exact) one token, or top_k alone
    // keeps the whole region: the threshold is its smallest key.
    if (lo == hi || (exact && (n == 1 || (t.k_on && !t.p_on && t.count_above + n == t.k)))) break;
    const uint32_t width = hi - lo;
    const int shift = max(0, 32 - __clz(static_cast<int>(width)) - 11);  // (width >> shift) < kBins
    __syncthreads();  // the previous step's readers of the bins are done
    ClearBins(sh);
    __syncthreads();
    if (have_candidates) {
      const uint32_t num = min(sh.num_cand, static_cast<uint32_t>(kMaxCandidates));
      if (threadIdx.x < num) {
        const uint32_t key = sh.cand_key[threadIdx.x];
        if (key >= lo && key <= hi) {
          AddToBin(sh, static_cast<int>((hi - key) >> shift), t.p_on, sh.cand_mass[threadIdx.x]);
        }
      }
    } else {
      const bool with_mass = t.p_on;
      ForEachInRow(row, vocab, [&](float l, int) {
        const uint32_t key = Key(l);
        if (key >= lo && key <= hi) {
          AddToBin(sh, static_cast<int>((hi - key) >> shift), with_mass,
                   with_mass ? Mass(Octaves(l, max_logit, scale)) : 0ull);
        }
      });
    }
    __syncthreads();
    FindCrossings(sh, t);
    // Neither crossing here: only when top_p's limit is within rounding of
    // the total (the tail's normaliser share is summed in float): keep the
    // region.
    if (!Narrow(t, sh.k_cross, sh.p_cross, &region)) break;
    n = region.count;
    const uint32_t new_hi = hi - (static_cast<uint32_t>(region.bin) << shift);
    const uint32_t new_lo = new_hi - min(new_hi - lo, (1u << shift) - 1u);
    if (m_on && min_p_key > new_hi) return min_p_threshold;
    lo = new_lo;
    hi = new_hi;
    exact = false;
    if (have_candidates) {
      // Tighten to the candidates' exact keys.
      uint32_t key_min = UINT_MAX, key_max = 0;
      const uint32_t num = min(sh.num_cand, static_cast<uint32_t>(kMaxCandidates));
      if (threadIdx.x < num) {
        const uint32_t key = sh.cand_key[threadIdx.x];
        if (key >= lo && key <= hi) key_min = key_max = key;
      }
      lo = BlockReduce(sh, key_min, Min());
      hi = BlockReduce(sh, key_max, Max());
      exact = true;
    } else if (n <= kMaxCandidates) {
      const uint32_t range_lo = lo, range_hi = hi;
      Gather(sh, row, vocab, max_logit, scale, /*store=*/true, t.p_on,
             [&](float l) {
               const uint32_t key = Key(l);
               return key >= range_lo && key <= range_hi;
             },
             &lo, &hi);
      have_candidates = exact = true;
    }
  }
  return fmaxf(Value(lo), min_p_threshold);
}

// ---------------------------------------------------------------------------

__global__ void __launch_bounds__(kThreads)
    SampleKernel(const float* __restrict__ logits,       // [rows, vocab]
                 const float* __restrict__ temperature,  // [rows]; nullptr: every row greedy
                 const int32_t* __restrict__ top_k,      // [rows]
                 const float* __restrict__ top_p,        // [rows]
                 const float* __restrict__ min_p,        // [rows]
                 const uint32_t* __restrict__ keys,      // [rows]
                 int32_t* __restrict__ tokens,           // [rows]
                 int vocab) {
  __shared__ SharedState sh;
  const int r = blockIdx.x;
  const float* __restrict__ row = logits + static_cast<int64_t>(r) * vocab;

  // Pass 1: max and argmax (lowest id among equal maxima).
  ValueId top{-INFINITY, INT_MAX};
  ForEachInRow<kUnrollHbm>(row, vocab, [&](float l, int v) {
    if (Beats({l, v}, top)) top = {l, v};
  });
  top = BlockArgMax(sh, top);
  const int argmax = top.id == INT_MAX ? 0 : top.id;  // INT_MAX: every logit NaN
  const float temp = temperature != nullptr ? temperature[r] : 0.0f;
  const float max_logit = top.value;
  // Greedy rows (t <= 0, as the LibTorch sampler's t > 0 test), and rows
  // with every token masked (-inf everywhere: argmax is token 0).
  if (!(temp > 0.0f) || max_logit == -INFINITY) {
    if (threadIdx.x == 0) tokens[r] = argmax;
    return;
  }
  const float t = fmaxf(temp, kMinTemperature);
  const uint32_t key = keys[r];
  const float scale = __fdiv_rn(kLog2e, t);

  const float threshold = SelectThreshold(sh, row, vocab, max_logit, scale, top_k[r], top_p[r], min_p[r]);
  // Kept: z >= z_threshold. Tokens below low_logit cannot round to it.
  const float z_threshold = __fdiv_rn(threshold, t);
  const float low_logit =
      z_threshold == -INFINITY
          ? -INFINITY
          : __double2float_rd(static_cast<double>(nextafterf(z_threshold, -INFINITY)) * static_cast<double>(t));

  // The argmax token is always kept, so the winner scores at least its
  // score; a token with z <= prune_z scores strictly less (kMaxGumbel bounds
  // the noise, the relative margin float rounding).
  const float argmax_score = __fadd_rn(__fdiv_rn(max_logit, t), Gumbel(NoiseBits(key, static_cast<uint32_t>(argmax))));
  float prune_logit = argmax_score;  // +inf (an infinite logit): the argmax wins
  if (isfinite(argmax_score)) {
    const double s = argmax_score;
    const float prune_z = __double2float_rd(s - kMaxGumbel - (fabs(s) + kMaxGumbel) * 0x1p-18);
    prune_logit = __double2float_rd(static_cast<double>(prune_z) * static_cast<double>(t));
  }

  // Pass 4: the draw.
  ValueId best{-INFINITY, INT_MAX};
  ForEachInRow(row, vocab, [&](float l, int v) {
    if (l < low_logit || l < prune_logit) return;
    const float z = __fdiv_rn(l, t);
    if (z < z_threshold) return;
    const ValueId candidate{__fadd_rn(z, Gumbel(NoiseBits(key, static_cast<uint32_t>(v)))), v};
    if (Beats(candidate, best)) best = candidate;
  });
  best = BlockArgMax(sh, best);
  if (threadIdx.x == 0) tokens[r] = best.id == INT_MAX ? argmax : best.id;
}

}  // namespace

cudaError_t LaunchSampleTokens(const SampleArgs& args, cudaStream_t stream) {
  SampleKernel<<<static_cast<unsigned>(args.rows), kThreads, 0, stream>>>(
      args.logits, args.temperature, args.top_k, args.top_p, args.min_p, args.keys, args.tokens, args.vocab);
  return cudaGetLastError();
}

}  // namespace gantry::cuda
