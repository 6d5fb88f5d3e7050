// Programmatic dependent launch (kernels.h): a chain of the kernels a decode
// layer runs, each reading what the one before it wrote, gives the same bits
// with PDL on as with ordinary launches, eagerly and replayed from a CUDA
// graph. A kernel that read its input before waiting for the previous one
// would see stale or poisoned data and differ. Each iteration:
//   RmsNorm(X -> Y) -> RopeAndCacheWrite(Y -> Q, cache) -> DecodeAttention(Q,
//   cache -> O) -> DecodeGemv(O W -> G) -> SiluMul(G -> S) -> RmsNorm(S -> T),
//   then T is copied into X for the next iteration (an ordinary copy, not
//   part of the chain). DecodeGemv requests weights before its wait and its
//   input after it; reading O early was a bug this test catches. Two
//   variants: RopeAndCacheWrite writes a key inside the context, and
//   attention reads everything after its wait; or, as in a decode step, the
//   contexts grow by one key an iteration, RopeAndCacheWrite writes that new
//   last key, and attention reads lengths, tables and the earlier keys
//   before its wait (PagedAttentionArgs::prior_writes_last_key_only): reading
//   the last key early too would see the previous iteration's.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "runtime/cuda/kernels.h"
#include "tests/cuda/kernel_test_util.h"

namespace gantry::cuda {
namespace {

using ::gantry::cuda::testing::DeviceBuffer;
using ::gantry::cuda::testing::Download;
using ::gantry::cuda::testing::Encode;
using ::gantry::cuda::testing::RandomValues;
using ::gantry::cuda::testing::Sync;
using ::gantry::cuda::testing::Upload;

constexpr DType kDType = DType::kBFloat16;
constexpr int kSeqs = 2;
constexpr int kHeads = 4, kKvHeads = 2, kHeadDim = 64;
constexpr int kQkvWidth = (kHeads + 2 * kKvHeads) * kHeadDim;  // 512: X, Y [kSeqs, kQkvWidth]
constexpr int kQWidth = kHeads * kHeadDim;                      // 256: Q, O [kSeqs, kQWidth]
constexpr int kSiluDim = kQWidth / 2;                           // 128: S, T [kSeqs, kSiluDim]
constexpr int kBlockSize = 16, kBlocksPerSeq = 32;
constexpr int kSplits = 4;
constexpr int kIterations = 10;
// Both contexts are long enough for all 4 splits (16 keys each at least): merged.
// With last-key writes these are the last iteration's lengths.
const int kSeqLens[kSeqs] = {500, 300};

// Device state of the chain; Reset() restores the same initial values.
struct Chain {
  std::vector<uint8_t> x0, residual0, residual2_0, k0, v0;  // initial contents, bf16 bytes
  DeviceBuffer x, y, residual, q, o, g, s, t, residual2, norm_weight, norm2_weight, gemv_weight;
  DeviceBuffer k_cache, v_cache, block_table, seq_lens, positions, slots, inv_freq, workspace;
  bool last_key_writes;  // iteration i writes the last key of contexts one longer than i - 1's

  explicit Chain(bool last_key_writes) : last_key_writes(last_key_writes) {
    std::mt19937 rng(2024);
    auto bf16 = [&](size_t n, float lo, float hi) { return Encode(kDType, RandomValues(rng, kDType, n, lo, hi)); };
    const size_t cache_elems = static_cast<size_t>(kSeqs) * kBlocksPerSeq * kBlockSize * kKvHeads * kHeadDim;
    x0 = bf16(kSeqs * kQkvWidth, -2.0f, 2.0f);
    residual0 = bf16(kSeqs * kQkvWidth, -2.0f, 2.0f);
    k0 = bf16(cache_elems, -1.0f, 1.0f);
    v0 = bf16(cache_elems, -1.0f, 1.0f);
    x = Upload(x0);
    residual = Upload(residual0);
    k_cache = Upload(k0);
    v_cache = Upload(v0);
    y = DeviceBuffer(x0.size());
    q = DeviceBuffer(kSeqs * kQWidth * 2);
    o = DeviceBuffer(kSeqs * kQWidth * 2);
    g = DeviceBuffer(kSeqs * kQWidth * 2);
    gemv_weight = Upload(bf16(static_cast<size_t>(kQWidth) * kQWidth, -0.1f, 0.1f));  // [kQWidth, kQWidth]
    s = DeviceBuffer(kSeqs * kSiluDim * 2);
    t = DeviceBuffer(kSeqs * kSiluDim * 2);
    residual2_0 = bf16(kSeqs * kSiluDim, -1.0f, 1.0f);
    residual2 = Upload(residual2_0);
    norm_weight = Upload(bf16(kQkvWidth, 0.5f, 1.5f));
    norm2_weight = Upload(bf16(kSiluDim, 0.5f, 1.5f));

    std::vector<int32_t> table(kSeqs * kBlocksPerSeq);
    for (int i = 0; i < kSeqs * kBlocksPerSeq; ++i) table[i] = i;  // row-major, in order
    block_table = Upload(table);
    // Iteration i writes k and v of position (7 * i + s) % seq_len of each
    // sequence, inside what the attention reads; or (last_key_writes) of
    // its last position, the context growing by one an iteration.
    std::vector<int32_t> lens(kIterations * kSeqs), pos(kIterations * kSeqs);
    std::vector<int64_t> slot(kIterations * kSeqs);
    for (int i = 0; i < kIterations; ++i) {
      for (int s = 0; s < kSeqs; ++s) {
        const int len = last_key_writes ? kSeqLens[s] - (kIterations - 1 - i) : kSeqLens[s];
        const int p = last_key_writes ? len - 1 : (7 * i + s) % len;
        lens[i * kSeqs + s] = len;
        pos[i * kSeqs + s] = p;
        slot[i * kSeqs + s] = static_cast<int64_t>(table[s * kBlocksPerSeq + p / kBlockSize]) * kBlockSize + p % kBlockSize;
      }
    }
    seq_lens = Upload(lens);
    positions = Upload(pos);
    slots = Upload(slot);
    std::vector<float> freq(kHeadDim / 2);
    for (int i = 0; i < kHeadDim / 2; ++i) freq[i] = std::pow(10000.0f, -2.0f * i / kHeadDim);
    inv_freq = Upload(freq);
    workspace = DeviceBuffer(DecodeAttentionWorkspaceBytes(kSeqs, kHeads, kHeadDim, kSplits));
  }

  void Reset() {
    EXPECT_EQ(cudaMemcpy(x.get(), x0.data(), x0.size(), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(residual.get(), residual0.data(), residual0.size(), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(residual2.get(), residual2_0.data(), residual2_0.size(), cudaMemcpyHostToDevice),
              cudaSuccess);
    EXPECT_EQ(cudaMemcpy(k_cache.get(), k0.data(), k0.size(), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(v_cache.get(), v0.data(), v0.size(), cudaMemcpyHostToDevice), cudaSuccess);
    for (DeviceBuffer* b : {&y, &q, &o, &g, &s, &t}) b->Poison();
    workspace.Poison();
    EXPECT_EQ(cudaMemset(workspace.get(), 0, 4 * ((kSeqs * kHeads + 3) / 4 * 4)), cudaSuccess);  // the counters
    Sync();
  }

  // Enqueues the whole chain on `stream`.
  absl::Status Run(cudaStream_t stream) {
    for (int i = 0; i < kIterations; ++i) {
      RmsNormArgs norm;
      norm.dtype = kDType;
      norm.rows = kSeqs;
      norm.dim = kQkvWidth;
      norm.input = x.get();
      norm.residual = residual.get();
      norm.weight = norm_weight.get();
      norm.output = y.get();
      if (auto status = RmsNorm(norm, stream); !status.ok()) return status;

      RopeCacheArgs rope;
      rope.dtype = kDType;
      rope.num_tokens = kSeqs;
      rope.num_heads = kHeads;
      rope.num_kv_heads = kKvHeads;
      rope.head_dim = kHeadDim;
      rope.qkv = y.get();
      rope.positions = positions.as<int32_t>() + i * kSeqs;
      rope.slot_mapping = slots.as<int64_t>() + i * kSeqs;
      rope.inv_freq = inv_freq.as<float>();
      rope.q_out = q.get();
      rope.k_cache = k_cache.get();
      rope.v_cache = v_cache.get();
      if (auto status = RopeAndCacheWrite(rope, stream); !status.ok()) return status;

      PagedAttentionArgs attn;
      attn.dtype = kDType;
      attn.num_seqs = kSeqs;
      attn.num_tokens = kSeqs;
      attn.num_heads = kHeads;
      attn.num_kv_heads = kKvHeads;
      attn.head_dim = kHeadDim;
      attn.block_size = kBlockSize;
      attn.scale = 0.125f;
      attn.q = q.get();
      attn.out = o.get();
      attn.k_cache = k_cache.get();
      attn.v_cache = v_cache.get();
      attn.block_tables = block_table.as<int32_t>();
      attn.bt_seq_stride = kBlocksPerSeq;
      attn.bt_block_stride = 1;
      attn.seq_lens = seq_lens.as<int32_t>() + i * kSeqs;
      attn.prior_writes_last_key_only = last_key_writes;
      attn.num_splits = kSplits;
      attn.workspace = workspace.as<float>();
      if (auto status = DecodeAttention(attn, stream); !status.ok()) return status;

      DecodeGemvArgs gemv;
      gemv.dtype = kDType;
      gemv.rows = kSeqs;
      gemv.n = kQWidth;
      gemv.k = kQWidth;
      gemv.w = gemv_weight.get();
      gemv.x = o.get();
      gemv.output = GemvOutput::kStore;
      gemv.y = g.get();
      if (auto status = DecodeGemv(gemv, stream); !status.ok()) return status;

      SiluMulArgs silu;
      silu.dtype = kDType;
      silu.rows = kSeqs;
      silu.dim = kSiluDim;
      silu.gate_up = g.get();
      silu.output = s.get();
      if (auto status = SiluMul(silu, stream); !status.ok()) return status;

      RmsNormArgs norm2;
      norm2.dtype = kDType;
      norm2.rows = kSeqs;
      norm2.dim = kSiluDim;
      norm2.input = s.get();
      norm2.residual = residual2.get();
      norm2.weight = norm2_weight.get();
      norm2.output = t.get();
      if (auto status = RmsNorm(norm2, stream); !status.ok()) return status;

      // T into the first kSiluDim columns of each row of X.
      if (cudaMemcpy2DAsync(x.get(), kQkvWidth * 2, t.get(), kSiluDim * 2, kSiluDim * 2, kSeqs,
                            cudaMemcpyDeviceToDevice, stream) != cudaSuccess) {
        return absl::InternalError("cudaMemcpy2DAsync failed");
      }
    }
    return absl::OkStatus();
  }

  // Everything the chain wrote, as bytes.
  std::vector<uint8_t> State() const {
    std::vector<uint8_t> all;
    for (const DeviceBuffer* b : {&x, &y, &residual, &q, &o, &g, &s, &t, &residual2, &k_cache, &v_cache}) {
      const std::vector<uint8_t> bytes = Download<uint8_t>(*b, b->bytes());
      all.insert(all.end(), bytes.begin(), bytes.end());
    }
    return all;
  }
};

class ProgrammaticLaunchTest : public ::testing::TestWithParam<bool> {};

TEST_P(ProgrammaticLaunchTest, DecodeLayerChainMatchesOrdinaryLaunches) {
  GANTRY_REQUIRE_GPU();
  const bool default_pdl = ProgrammaticDependentLaunch();
  int device = 0, major = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), cudaSuccess);
  std::printf("[ INFO     ] compute capability %d.x: programmatic dependent launch %s by default\n", major,
              default_pdl ? "on" : "off");

  Chain chain(/*last_key_writes=*/GetParam());
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);

  // Ordinary launches: the reference.
  SetProgrammaticDependentLaunch(false);
  chain.Reset();
  ASSERT_TRUE(chain.Run(stream).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const std::vector<uint8_t> expected = chain.State();

  SetProgrammaticDependentLaunch(true);
  EXPECT_EQ(ProgrammaticDependentLaunch(), major >= 9);
  for (int run = 0; run < 3; ++run) {
    chain.Reset();
    ASSERT_TRUE(chain.Run(stream).ok());
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_TRUE(chain.State() == expected) << "eager run " << run << " with PDL differs";
  }

  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const absl::Status captured = chain.Run(stream);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_TRUE(captured.ok()) << captured;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int replay = 0; replay < 3; ++replay) {
    chain.Reset();
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_TRUE(chain.State() == expected) << "graph replay " << replay << " with PDL differs";
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  SetProgrammaticDependentLaunch(default_pdl);
}

INSTANTIATE_TEST_SUITE_P(KeyWrites, ProgrammaticLaunchTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "LastKeyEarlyLoads" : "InsideTheContext";
                         });

}  // namespace
}  // namespace gantry::cuda
