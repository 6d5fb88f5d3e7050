// Gantry's CUDA kernels behind a plain pointer-and-shape interface: no torch,
// no CUDA headers. The runtime passes raw device pointers taken from its
// tensors; kernel tests pass cudaMalloc'd buffers. Each call validates its
// arguments (an error names the field) and launches on `stream`; a launch
// failure comes back as a Status, never an exit. Nothing here synchronises,
// so every call may be captured in a CUDA graph: the grid depends only on the
// host-side sizes in the argument struct, never on device data.
//
// Numerics follow Hugging Face transformers in the model's dtype: inputs are
// read in the storage type, arithmetic runs in float32, and results are
// rounded to the storage type at the points where transformers rounds them,
// so bf16/fp16 outputs stay within rounding of the reference.
#ifndef GANTRY_RUNTIME_CUDA_KERNELS_H_
#define GANTRY_RUNTIME_CUDA_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace gantry::cuda {

using Stream = CUstream_st*;

// Storage type of activations, weights and the KV cache.
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };
const char* DTypeName(DType dtype);

// Programmatic dependent launch (compute capability 9.0+): RmsNorm,
// RopeAndCacheWrite, SiluMul and DecodeAttention are launched so that the
// GPU may schedule them while the kernel before them in the stream is still
// finishing (hiding launch latency between the small kernels of a decode
// step); each waits for that kernel's results before it reads them (only
// weights are read before, which no kernel writes, and DecodeAttention's
// lengths, tables and earlier keys when its caller promises that the kernel
// just before writes none of them: prior_writes_last_key_only). Also
// inside CUDA-graph capture (the graph keeps the programmatic edges). On by
// default on devices that support it, unless the environment has
// GANTRY_PDL=0; SetProgrammaticDependentLaunch overrides both (benchmarks,
// tests). ProgrammaticDependentLaunch() answers for the current device.
void SetProgrammaticDependentLaunch(bool enabled);
bool ProgrammaticDependentLaunch();

// ---------------------------------------------------------------------------
// RMSNorm, with the residual add of the layer before fused in.
//   residual == nullptr: output = weight * rmsnorm(input)
//   residual != nullptr: residual = input + residual (rounded to dtype and
//                        written back), output = weight * rmsnorm(residual)
// As transformers' LlamaRMSNorm: the sum of squares in float32,
// normalised = dtype(x * rsqrt(mean(x^2) + eps)), output = dtype(weight * normalised).
struct RmsNormArgs {
  DType dtype = DType::kBFloat16;
  int64_t rows = 0;            // tokens
  int64_t dim = 0;             // hidden size
  float eps = 1e-6f;
  const void* input = nullptr;   // [rows, dim]
  void* residual = nullptr;      // [rows, dim] or nullptr; updated in place
  const void* weight = nullptr;  // [dim]
  void* output = nullptr;        // [rows, dim]; must not alias input or residual
};
absl::Status RmsNorm(const RmsNormArgs& args, Stream stream);

// ---------------------------------------------------------------------------
// LayerNorm of a sublayer's output plus the residual stream, the end of each
// post-norm encoder sublayer (BERT, XLM-RoBERTa: LayerNorm(dense(x) + input)):
//   s = dtype(input + residual), or s = input when residual is nullptr (the
//   sum already made, e.g. in the product's epilogue: LtGemmArgs::residual);
//   mean and biased variance of s in float32;
//   output = dtype((s - mean) * rsqrt(var + eps) * weight + bias)
// as torch.nn.LayerNorm computes it in float32 for 16-bit tensors. One read
// of each operand and one write, against five passes for add then
// layer_norm. output may alias input or residual (updated in place).
struct AddLayerNormArgs {
  DType dtype = DType::kBFloat16;
  int64_t rows = 0;              // tokens
  int64_t dim = 0;               // hidden size
  float eps = 1e-12f;
  const void* input = nullptr;     // [rows, dim]
  const void* residual = nullptr;  // [rows, dim] or nullptr: plain LayerNorm of input
  const void* weight = nullptr;    // [dim]
  const void* bias = nullptr;      // [dim]
  void* output = nullptr;          // [rows, dim]
};
absl::Status AddLayerNorm(const AddLayerNormArgs& args, Stream stream);

// ---------------------------------------------------------------------------
// An encoder's embedding layer (BERT, XLM-RoBERTa: transformers'
// BertEmbeddings, RobertaEmbeddings) in one pass, for the rows of a
// [batch, length] block of tokens, row r at position r % length:
//   e = dtype(word[token_ids[r]] + token_type[token_types[r]])  (type 0 when
//       token_types is nullptr), the sum transformers makes first;
//   e = dtype(e + position[r % length + position_offset]);
//   output[r] = dtype((e - mean) * rsqrt(var + eps) * weight + bias), the
//       mean and biased variance of e in float32 (as AddLayerNorm).
// One read of each table row and one write, against five kernels (two
// gathers, two adds, layer_norm). XLM-RoBERTa numbers positions from
// padding_idx + 1 (position_offset = 2), as transformers does for every
// token before the first padding token; transformers gives padding tokens
// position padding_idx instead, so with right padding only the padding rows
// differ (rows that attention and pooling mask out).
// The ids are NOT checked on the device (an id out of range reads outside its
// table): the caller checks on the host that 0 <= token id < vocab and
// 0 <= type < types, and that length - 1 + position_offset < positions.
struct EmbedLayerNormArgs {
  DType dtype = DType::kBFloat16;
  int64_t rows = 0;                      // batch * length tokens
  int64_t length = 0;                    // tokens per sequence, >= 1; rows is a multiple of it
  int64_t dim = 0;                       // hidden size
  int64_t position_offset = 0;           // >= 0: 0 for BERT, 2 for XLM-RoBERTa
  float eps = 1e-12f;
  const int64_t* token_ids = nullptr;    // [rows]
  const int64_t* token_types = nullptr;  // [rows] or nullptr: type 0 for every row
  const void* word = nullptr;            // [vocab, dim]
  const void* position = nullptr;        // [positions, dim]
  const void* token_type = nullptr;      // [types, dim]
  const void* weight = nullptr;          // [dim]
  const void* bias = nullptr;            // [dim]
  void* output = nullptr;                // [rows, dim]; must not alias a table, weight or bias
};
absl::Status EmbedLayerNorm(const EmbedLayerNormArgs& args, Stream stream);

// ---------------------------------------------------------------------------
// Rotary embedding of q and k (rotate_half layout of HF checkpoints), optional
// per-head q/k RMSNorm before it (Qwen3), and the write of k and v into the
// paged cache, in one pass over the fused qkv projection output.
//   cos/sin of position * inv_freq[i] (float32 product, as transformers),
//   rounded to dtype; q_out = dtype(q*cos) + dtype(rotate_half(q)*sin).
struct RopeCacheArgs {
  DType dtype = DType::kBFloat16;
  int64_t num_tokens = 0;
  int num_heads = 0, num_kv_heads = 0, head_dim = 0;  // head_dim even, <= 256
  const void* qkv = nullptr;        // [num_tokens, (num_heads + 2 * num_kv_heads) * head_dim]: q, k, v
  const int32_t* positions = nullptr;   // [num_tokens]
  const int64_t* slot_mapping = nullptr;  // [num_tokens] block * block_size + offset; < 0: not written
  const float* inv_freq = nullptr;  // [head_dim / 2]
  const void* q_norm = nullptr;     // [head_dim] or nullptr (then k_norm too)
  const void* k_norm = nullptr;     // [head_dim] or nullptr
  float norm_eps = 1e-6f;
  void* q_out = nullptr;            // [num_tokens, num_heads, head_dim]
  void* k_cache = nullptr;          // [num_blocks, block_size, num_kv_heads, head_dim]
  void* v_cache = nullptr;          // [num_blocks, block_size, num_kv_heads, head_dim]
};
absl::Status RopeAndCacheWrite(const RopeCacheArgs& args, Stream stream);

// ---------------------------------------------------------------------------
// SwiGLU activation of the fused gate/up projection:
//   output = dtype(dtype(silu(gate)) * up)   (transformers: act_fn(gate) * up)
struct SiluMulArgs {
  DType dtype = DType::kBFloat16;
  int64_t rows = 0;
  int64_t dim = 0;                // intermediate size
  const void* gate_up = nullptr;  // [rows, 2 * dim]: gate columns, then up columns
  void* output = nullptr;         // [rows, dim]
};
absl::Status SiluMul(const SiluMulArgs& args, Stream stream);

// ---------------------------------------------------------------------------
// Attention straight from the paged KV cache (no gather), causal, grouped-query
// aware, optional sliding window. Sequence s holds seq_lens[s] tokens in the
// cache, this step's included; its queries are its last
// (query_start[s + 1] - query_start[s]) positions, token rows query_start[s]...
// A query at position p sees keys at positions j with j <= p and, when
// sliding_window > 0, j > p - sliding_window. Scores, softmax and the
// weighted sum of values accumulate in float32; the output is rounded to dtype.
struct PagedAttentionArgs {
  DType dtype = DType::kBFloat16;
  int num_seqs = 0;
  int64_t num_tokens = 0;                 // rows of q and out
  int num_heads = 0, num_kv_heads = 0;    // num_heads a multiple of num_kv_heads
  int head_dim = 0;                       // 16, 32, 64, 128 or 256
  int block_size = 0;                     // tokens per cache block
  float scale = 1.0f;                     // usually 1 / sqrt(head_dim)
  int sliding_window = 0;                 // 0 = off
  const void* q = nullptr;                // [num_tokens, num_heads, head_dim]
  void* out = nullptr;                    // [num_tokens, num_heads, head_dim]
  const void* k_cache = nullptr;          // [num_blocks, block_size, num_kv_heads, head_dim]
  const void* v_cache = nullptr;          // [num_blocks, block_size, num_kv_heads, head_dim]
  // Block j of sequence s is block_tables[s * bt_seq_stride + j * bt_block_stride]:
  // row-major tables have (max_blocks, 1); the CUDA-graph path keeps them
  // column-major, (1, padded batch), so a step uploads only the columns in use.
  const int32_t* block_tables = nullptr;
  int64_t bt_seq_stride = 0, bt_block_stride = 1;
  const int32_t* seq_lens = nullptr;      // [num_seqs]; 0 marks a padding sequence: its rows are zeroed
  const int32_t* query_start = nullptr;   // [num_seqs + 1] (prefill only)
  int max_query_len = 0;                  // >= every sequence's query count (prefill only)
  // Decode only: the context of each sequence is spread evenly over up to
  // num_splits parts (none shorter than 16 tokens, so a short context takes
  // fewer) computed by separate thread blocks; the last block of a
  // sequence's KV head to finish merges them. The workspace (16-byte
  // aligned when num_splits > 1) holds the parts and one arrival counter per
  // (sequence, head).
  int num_splits = 1;
  float* workspace = nullptr;             // DecodeAttentionWorkspaceBytes(...) bytes; see below
  // Decode only, for programmatic dependent launch: true promises that the
  // kernel just before this one in the stream writes, of what this one
  // reads, at most q and each sequence's last key (its K and V rows at
  // position seq_lens[s] - 1), as a decode step's RopeAndCacheWrite or
  // DecodeGemv's kRopeCache epilogue does. seq_lens, the block tables and
  // the earlier keys are then read before waiting for that kernel, so their
  // round trips overlap its tail instead of following it. false: everything
  // is read after the wait.
  bool prior_writes_last_key_only = false;
};

// Every sequence has exactly one query, in row s (query_start and
// max_query_len are not read).
//
// Workspace (num_splits > 1): its first 4 * RoundUp(num_seqs * num_heads, 4)
// bytes are the arrival counters, which must be zero before the first launch
// (allocate it zeroed, once); every launch leaves them zero again, so the
// same workspace serves any number of later launches and CUDA-graph replays
// of the same num_seqs and num_heads. The rest is scratch. A launch with
// other sizes lays the workspace out differently: give it its own, or zero
// the counters again.
absl::Status DecodeAttention(const PagedAttentionArgs& args, Stream stream);
size_t DecodeAttentionWorkspaceBytes(int num_seqs, int num_heads, int head_dim, int num_splits);
// A split count that fills `sm_count` multiprocessors with a batch of
// num_seqs sequences (at most 64 parts, at least 1).
int ChooseDecodeSplits(int num_seqs, int num_kv_heads, int sm_count);

// Any query counts (prompt chunks over a cached prefix, and decodes mixed in).
// bf16/fp16 on tensor cores; float32 on CUDA cores.
absl::Status PrefillAttention(const PagedAttentionArgs& args, Stream stream);

// ---------------------------------------------------------------------------
// y = x W^T (+ bias) for the few rows of a small decode batch. Such a product
// reads every weight once and does two flops per weight per row: it is bound
// by memory bandwidth, and cuBLAS's kernels for one row leave part of it
// unused. Each output element is one float32 dot product over k whose order
// does not depend on m, so a row's result is the same in any batch; it is
// rounded to dtype once, after the bias is added (as cuBLAS's epilogue does).
inline constexpr int kSkinnyGemmMaxRows = 8;
struct SkinnyGemmArgs {
  DType dtype = DType::kBFloat16;
  int m = 0;                   // rows of x: 1..kSkinnyGemmMaxRows
  int64_t n = 0, k = 0;        // output features, input features
  const void* x = nullptr;     // [m, k]
  const void* w = nullptr;     // [n, k] (a Linear layer's weight as stored)
  const void* bias = nullptr;  // [n] or nullptr
  void* y = nullptr;           // [m, n]; must not alias x
};
absl::Status SkinnyGemm(const SkinnyGemmArgs& args, Stream stream);

// ---------------------------------------------------------------------------
// Up to kDecodeGemvMaxRows decode rows times a weight matrix, y = x W^T
// (+ bias), with the work on either side of the product fused in: the
// input's RMSNorm before it, and after it the residual add, SwiGLU, or the
// widening of logits. For small decode batches, where every projection reads
// its weights once at memory bandwidth and the kernels between them cost
// latency (decode_gemv.cu). bf16/fp16 only; k % 8 == 0, k <= kDecodeGemvMaxK,
// and x, w and norm_weight 16-byte aligned (DecodeGemvSupports tells). The
// dot product is float32; the result plus bias is rounded to dtype once, as
// cuBLAS's epilogue. A row's result is bitwise the same whatever `rows` is
// (batch invariance: the runtime relies on it for seeded sampling).
inline constexpr int64_t kDecodeGemvMaxK = 32768;
inline constexpr int64_t kDecodeGemvMaxRows = 4;
enum class GemvOutput : int {
  kStore = 0,          // y [rows, n] = dtype(x W^T + bias)
  kAddToResidual = 1,  // y [rows, n], the residual stream: y = dtype(y + dtype(x W^T + bias))
  kSiluMul = 2,        // W rows [0, n/2) gate, [n/2, n) up (a fused gate/up weight):
                       // y [rows, n/2] = dtype(dtype(silu(g)) * u), g and u rounded to dtype first (SiluMul)
  kFloat32 = 3,        // y float32 [rows, n] = dtype(x W^T + bias) widened (logits)
  kRopeCache = 4,      // the fused qkv projection, then RopeAndCacheWrite of its rows (`rope`): the
                       // same bits as kStore followed by it, without the qkv round trip or its kernel.
                       // y unused (null); per-head q/k norms (Qwen3) are not fused
};
struct DecodeGemvArgs {
  DType dtype = DType::kBFloat16;
  int64_t rows = 1;                  // decode rows, 1..kDecodeGemvMaxRows
  int64_t n = 0, k = 0;              // output features (W rows), input features
  const void* w = nullptr;           // [n, k] (a Linear layer's weight as stored)
  const void* bias = nullptr;        // [n] or nullptr
  const void* x = nullptr;           // [rows, k]; with norm_weight, the residual stream to normalise
  const void* norm_weight = nullptr; // [k] or nullptr: the input is RmsNorm(x) with this weight (as RmsNorm)
  float eps = 1e-6f;                 // RMSNorm epsilon
  GemvOutput output = GemvOutput::kStore;
  void* y = nullptr;                 // see GemvOutput; must not alias x, w or norm_weight
  // kRopeCache: where the rows go. Its num_tokens is `rows`, its head counts
  // and head_dim (a multiple of 16) give n = (num_heads + 2 num_kv_heads)
  // head_dim; qkv, q_norm and k_norm are unused and must be null.
  const RopeCacheArgs* rope = nullptr;
  // Units (16 weight rows; gate and up tiles for kSiluMul) of each block's
  // share, from its first, asked into L2 before the programmatic-dependent-
  // launch wait, while the kernel before still runs: for the product after
  // one that leaves the memory bandwidth idle (attention), whose copies then
  // find those weights in L2. 0..kDecodeGemvMaxL2PrefetchUnits; a hint, the
  // results are the same bits.
  int l2_prefetch_units = 0;
};
inline constexpr int kDecodeGemvMaxL2PrefetchUnits = 64;
bool DecodeGemvSupports(DType dtype, int64_t k);
absl::Status DecodeGemv(const DecodeGemvArgs& args, Stream stream);

// ---------------------------------------------------------------------------
// Sampling one token per row without sorting the vocabulary. For row r with
// temperature t > 0, over the scaled logits z = logits / t and their softmax
// probabilities p, a token with probability q is kept when all of these hold:
//   top_k > 0:   fewer than top_k tokens have a probability greater than q
//   top_p < 1:   the tokens with a probability greater than q hold at most top_p
//   min_p > 0:   q >= min_p * (the largest probability)
// (tokens of equal value are kept or dropped together; the most probable
// token is always kept). The draw is Gumbel-max over the kept tokens:
//   argmax_v z[v] + g(key, v), g = -log(-log(u)), u = ((bits >> 9) + 0.5) / 2^23,
//   bits = Hash32(Hash32(key + v) ^ key) with 32-bit wrap-around and
//   Hash32 = lowbias32 (runtime/internal/sampler.h),
// so a row's draw depends only on its logits, its parameters and its key.
// Rows with t == 0 take the argmax of the logits (the lowest id among equals;
// NaN never wins, and a row of NaN or -inf only gives token 0).
// temperature == nullptr: every row is greedy, and top_k, top_p, min_p and
// keys are not read (they may be null).
struct SampleArgs {
  int rows = 0;
  int vocab = 0;
  const float* logits = nullptr;       // [rows, vocab] after penalties
  const float* temperature = nullptr;  // [rows]; nullptr: every row greedy
  const int32_t* top_k = nullptr;      // [rows]; <= 0 or >= vocab: off
  const float* top_p = nullptr;        // [rows]; >= 1: off
  const float* min_p = nullptr;        // [rows]; <= 0: off
  const uint32_t* keys = nullptr;      // [rows] hash key of (seed, position)
  int32_t* tokens = nullptr;           // [rows] output
};
absl::Status SampleTokens(const SampleArgs& args, Stream stream);

}  // namespace gantry::cuda

#endif  // GANTRY_RUNTIME_CUDA_KERNELS_H_
