// Argument checks for kernels.h, and launch errors as Status. The checks run
// on the host before every launch (a few comparisons), so a bad shape from
// the runtime is an error naming the field, not a memory fault on the device.
#include "runtime/cuda/kernels.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "runtime/cuda/launch.h"

namespace gantry::cuda {
namespace {

absl::Status Invalid(const char* kernel, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(kernel, ": ", what));
}

absl::Status Launched(const char* kernel, cudaError_t error) {
  if (error == cudaSuccess) error = cudaGetLastError();
  if (error == cudaSuccess) return absl::OkStatus();
  (void)cudaGetLastError();  // clear a sticky launch error so the next call reports its own
  return absl::InternalError(absl::StrCat(kernel, " launch failed: ", cudaGetErrorName(error), " (",
                                          cudaGetErrorString(error), ")"));
}

bool ValidDType(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat16 || dtype == DType::kBFloat16;
}

bool SupportedHeadDim(int head_dim) {
  return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128 || head_dim == 256;
}

absl::Status CheckAttention(const char* kernel, const PagedAttentionArgs& a, bool decode) {
  if (!ValidDType(a.dtype)) return Invalid(kernel, "unknown dtype");
  if (a.num_seqs < 0 || a.num_tokens < 0) return Invalid(kernel, "num_seqs and num_tokens must be >= 0");
  if (a.num_kv_heads < 1 || a.num_heads < 1 || a.num_heads % a.num_kv_heads != 0) {
    return Invalid(kernel, absl::StrCat("num_heads ", a.num_heads, " must be a positive multiple of num_kv_heads ",
                                        a.num_kv_heads));
  }
  if (a.num_heads / a.num_kv_heads > 16) {
    return Invalid(kernel, absl::StrCat("at most 16 query heads per KV head are supported, got ",
                                        a.num_heads / a.num_kv_heads));
  }
  if (!SupportedHeadDim(a.head_dim)) {
    return Invalid(kernel, absl::StrCat("head_dim ", a.head_dim, " is not one of 16, 32, 64, 128, 256"));
  }
  if (a.block_size < 1) return Invalid(kernel, absl::StrCat("block_size ", a.block_size, " must be >= 1"));
  if (a.sliding_window < 0) return Invalid(kernel, "sliding_window must be >= 0");
  if (a.num_seqs == 0 || a.num_tokens == 0) return absl::OkStatus();  // nothing to check or launch
  if (a.q == nullptr || a.out == nullptr || a.k_cache == nullptr || a.v_cache == nullptr ||
      a.block_tables == nullptr || a.seq_lens == nullptr) {
    return Invalid(kernel, "q, out, k_cache, v_cache, block_tables and seq_lens must be set");
  }
  if (decode) {
    if (a.num_tokens != a.num_seqs) {
      return Invalid(kernel, absl::StrCat("decode needs one query per sequence: num_tokens ", a.num_tokens,
                                          " != num_seqs ", a.num_seqs));
    }
    if (a.num_splits < 1 || a.num_splits > 256) {
      return Invalid(kernel, absl::StrCat("num_splits ", a.num_splits, " must be in [1, 256]"));
    }
    if (a.num_splits > 1 && a.workspace == nullptr) return Invalid(kernel, "num_splits > 1 needs a workspace");
  } else {
    if (a.query_start == nullptr) return Invalid(kernel, "query_start must be set");
    if (a.max_query_len < 0) return Invalid(kernel, "max_query_len must be >= 0");
  }
  return absl::OkStatus();
}

// SetProgrammaticDependentLaunch's override: -1 none, 0 off, 1 on.
std::atomic<int> pdl_override{-1};

// Per device: 0 not asked yet, 1 compute capability 9.0+, 2 older.
constexpr int kMaxDevices = 64;
std::atomic<int8_t> pdl_capable[kMaxDevices];

bool PdlFromEnvironment() {
  static const bool enabled = [] {
    const char* value = std::getenv("GANTRY_PDL");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }();
  return enabled;
}

// Where RopeAndCacheWrite (and DecodeGemv's kRopeCache) read the positions
// and write q, k and v: all must be set.
bool RopeDestinationsSet(const RopeCacheArgs& a) {
  return a.positions != nullptr && a.slot_mapping != nullptr && a.inv_freq != nullptr && a.q_out != nullptr &&
         a.k_cache != nullptr && a.v_cache != nullptr;
}

// DecodeGemv's kRopeCache target: RopeAndCacheWrite's arguments, as the
// fused epilogue can take them (decode_gemv.cu pairs rows i and
// i + head_dim / 2 of a head in 8-row halves of one 16-row tile).
absl::Status CheckGemvRope(const DecodeGemvArgs& a) {
  const RopeCacheArgs* r = a.rope;
  if (r == nullptr) return Invalid("DecodeGemv", "kRopeCache needs rope");
  if (a.y != nullptr) return Invalid("DecodeGemv", "kRopeCache writes rope's q_out and caches; y must be null");
  if (r->dtype != a.dtype || r->num_tokens != a.rows) {
    return Invalid("DecodeGemv", "rope's dtype and num_tokens must be the product's dtype and rows");
  }
  if (r->num_heads < 1 || r->num_kv_heads < 1 || r->head_dim < 16 || r->head_dim % 16 != 0 || r->head_dim > 256) {
    return Invalid("DecodeGemv", absl::StrCat("kRopeCache needs head counts >= 1 and head_dim a multiple of 16 up to ",
                                              "256, got ", r->num_heads, ", ", r->num_kv_heads, ", ", r->head_dim));
  }
  const int64_t n = static_cast<int64_t>(r->num_heads + 2 * r->num_kv_heads) * r->head_dim;
  if (a.n != n) return Invalid("DecodeGemv", absl::StrCat("kRopeCache needs n = ", n, " (q, k and v heads), got ", a.n));
  if (r->qkv != nullptr || r->q_norm != nullptr || r->k_norm != nullptr) {
    return Invalid("DecodeGemv", "kRopeCache fuses no per-head norm and reads no qkv: those must be null");
  }
  if (!RopeDestinationsSet(*r)) {
    return Invalid("DecodeGemv", "rope's positions, slot_mapping, inv_freq, q_out and caches must be set");
  }
  for (const void* out : {r->q_out, r->k_cache, r->v_cache}) {
    if (out == a.x || out == a.w || out == a.norm_weight) return Invalid("DecodeGemv", "rope's outputs alias an input");
  }
  return absl::OkStatus();
}

}  // namespace

void SetProgrammaticDependentLaunch(bool enabled) { pdl_override.store(enabled ? 1 : 0); }

bool ProgrammaticDependentLaunch() {
  const int forced = pdl_override.load(std::memory_order_relaxed);
  if (forced == 0 || (forced < 0 && !PdlFromEnvironment())) return false;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    (void)cudaGetLastError();
    return false;
  }
  int8_t capable = pdl_capable[device].load(std::memory_order_relaxed);
  if (capable == 0) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    capable = major >= 9 ? 1 : 2;
    pdl_capable[device].store(capable, std::memory_order_relaxed);
  }
  return capable == 1;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
  }
  return "unknown";
}

absl::Status RmsNorm(const RmsNormArgs& a, Stream stream) {
  if (!ValidDType(a.dtype)) return Invalid("RmsNorm", "unknown dtype");
  if (a.rows < 0 || a.dim < 1) return Invalid("RmsNorm", absl::StrCat("bad shape [", a.rows, ", ", a.dim, "]"));
  // Empty tensors have null data pointers: nothing to check or launch.
  if (a.rows == 0) return absl::OkStatus();
  if (a.input == nullptr || a.weight == nullptr || a.output == nullptr) {
    return Invalid("RmsNorm", "input, weight and output must be set");
  }
  if (a.output == a.input || a.output == a.residual) return Invalid("RmsNorm", "output aliases an input");
  return Launched("RmsNorm", LaunchRmsNorm(a, stream));
}

absl::Status AddLayerNorm(const AddLayerNormArgs& a, Stream stream) {
  if (!ValidDType(a.dtype)) return Invalid("AddLayerNorm", "unknown dtype");
  if (a.rows < 0 || a.dim < 1) return Invalid("AddLayerNorm", absl::StrCat("bad shape [", a.rows, ", ", a.dim, "]"));
  if (!(a.eps >= 0.0f)) return Invalid("AddLayerNorm", "eps must be >= 0");
  if (a.rows == 0) return absl::OkStatus();
  // residual may be null: a plain LayerNorm of input.
  if (a.input == nullptr || a.weight == nullptr || a.bias == nullptr || a.output == nullptr) {
    return Invalid("AddLayerNorm", "input, weight, bias and output must be set");
  }
  return Launched("AddLayerNorm", LaunchAddLayerNorm(a, stream));
}

absl::Status EmbedLayerNorm(const EmbedLayerNormArgs& a, Stream stream) {
  if (!ValidDType(a.dtype)) return Invalid("EmbedLayerNorm", "unknown dtype");
  if (a.rows < 0 || a.dim < 1) return Invalid("EmbedLayerNorm", absl::StrCat("bad shape [", a.rows, ", ", a.dim, "]"));
  if (a.length < 1 || a.rows % a.length != 0) {
    return Invalid("EmbedLayerNorm",
                   absl::StrCat("length ", a.length, " must be >= 1 and divide rows ", a.rows, " (batch * length)"));
  }
  if (a.position_offset < 0) {
    return Invalid("EmbedLayerNorm", absl::StrCat("position_offset ", a.position_offset, " must be >= 0"));
  }
  if (!(a.eps >= 0.0f)) return Invalid("EmbedLayerNorm", "eps must be >= 0");
  if (a.rows == 0) return absl::OkStatus();
  // token_types may be null: type 0 for every row. The ids themselves are
  // the caller's to check (kernels.h): they live on the device.
  if (a.token_ids == nullptr || a.word == nullptr || a.position == nullptr || a.token_type == nullptr ||
      a.weight == nullptr || a.bias == nullptr || a.output == nullptr) {
    return Invalid("EmbedLayerNorm", "token_ids, word, position, token_type, weight, bias and output must be set");
  }
  for (const void* table : {a.word, a.position, a.token_type, a.weight, a.bias}) {
    if (a.output == table) return Invalid("EmbedLayerNorm", "output aliases a table, weight or bias");
  }
  return Launched("EmbedLayerNorm", LaunchEmbedLayerNorm(a, stream));
}

absl::Status RopeAndCacheWrite(const RopeCacheArgs& a, Stream stream) {
  if (!ValidDType(a.dtype)) return Invalid("RopeAndCacheWrite", "unknown dtype");
  if (a.num_tokens < 0 || a.num_heads < 1 || a.num_kv_heads < 1) {
    return Invalid("RopeAndCacheWrite", "num_tokens must be >= 0 and the head counts >= 1");
  }
  if (a.head_dim < 2 || a.head_dim % 2 != 0 || a.head_dim > 256) {
    return Invalid("RopeAndCacheWrite", absl::StrCat("head_dim ", a.head_dim, " must be even and <= 256"));
  }
  if ((a.q_norm == nullptr) != (a.k_norm == nullptr)) {
    return Invalid("RopeAndCacheWrite", "q_norm and k_norm are set together or not at all");
  }
  if (a.num_tokens == 0) return absl::OkStatus();
  if (a.qkv == nullptr || !RopeDestinationsSet(a)) {
    return Invalid("RopeAndCacheWrite", "qkv, positions, slot_mapping, inv_freq, q_out and the caches must be set");
  }
  return Launched("RopeAndCacheWrite", LaunchRopeAndCacheWrite(a, stream));
}

absl::Status SiluMul(const SiluMulArgs& a, Stream stream) {
  if (!ValidDType(a.dtype)) return Invalid("SiluMul", "unknown dtype");
  if (a.rows < 0 || a.dim < 1) return Invalid("SiluMul", absl::StrCat("bad shape [", a.rows, ", ", a.dim, "]"));
  if (a.rows == 0) return absl::OkStatus();
  if (a.gate_up == nullptr || a.output == nullptr) return Invalid("SiluMul", "gate_up and output must be set");
  return Launched("SiluMul", LaunchSiluMul(a, stream));
}

absl::Status DecodeAttention(const PagedAttentionArgs& a, Stream stream) {
  if (auto s = CheckAttention("DecodeAttention", a, /*decode=*/true); !s.ok()) return s;
  if (a.num_seqs == 0) return absl::OkStatus();
  return Launched("DecodeAttention", LaunchDecodeAttention(a, stream));
}

absl::Status PrefillAttention(const PagedAttentionArgs& a, Stream stream) {
  if (auto s = CheckAttention("PrefillAttention", a, /*decode=*/false); !s.ok()) return s;
  if (a.num_seqs == 0 || a.num_tokens == 0) return absl::OkStatus();
  return Launched("PrefillAttention", LaunchPrefillAttention(a, stream));
}

absl::Status SkinnyGemm(const SkinnyGemmArgs& a, Stream stream) {
  if (!ValidDType(a.dtype)) return Invalid("SkinnyGemm", "unknown dtype");
  if (a.m < 0 || a.m > kSkinnyGemmMaxRows || a.n < 1 || a.k < 1) {
    return Invalid("SkinnyGemm", absl::StrCat("bad shape m ", a.m, " (0..", kSkinnyGemmMaxRows, "), n ", a.n,
                                              ", k ", a.k));
  }
  if (a.m == 0) return absl::OkStatus();
  if (a.x == nullptr || a.w == nullptr || a.y == nullptr) return Invalid("SkinnyGemm", "x, w and y must be set");
  if (a.y == a.x) return Invalid("SkinnyGemm", "y aliases x");
  return Launched("SkinnyGemm", LaunchSkinnyGemm(a, stream));
}

bool DecodeGemvSupports(DType dtype, int64_t k) {
  return (dtype == DType::kBFloat16 || dtype == DType::kFloat16) && k >= 8 && k % 8 == 0 && k <= kDecodeGemvMaxK;
}

absl::Status DecodeGemv(const DecodeGemvArgs& a, Stream stream) {
  if (!ValidDType(a.dtype)) return Invalid("DecodeGemv", "unknown dtype");
  if (a.rows < 1 || a.rows > kDecodeGemvMaxRows || a.n < 1 || a.k < 1) {
    return Invalid("DecodeGemv", absl::StrCat("bad shape rows ", a.rows, " (1..", kDecodeGemvMaxRows, "), n ", a.n,
                                              ", k ", a.k));
  }
  if (!DecodeGemvSupports(a.dtype, a.k)) {
    return Invalid("DecodeGemv", absl::StrCat("dtype ", DTypeName(a.dtype), " with k ", a.k,
                                              " is not supported (bfloat16/float16, k a multiple of 8 up to ",
                                              kDecodeGemvMaxK, ")"));
  }
  if (a.l2_prefetch_units < 0 || a.l2_prefetch_units > kDecodeGemvMaxL2PrefetchUnits) {
    return Invalid("DecodeGemv", absl::StrCat("l2_prefetch_units ", a.l2_prefetch_units, " is outside 0..",
                                              kDecodeGemvMaxL2PrefetchUnits));
  }
  if (a.output == GemvOutput::kSiluMul && a.n % 2 != 0) {
    return Invalid("DecodeGemv", absl::StrCat("kSiluMul needs an even n (gate and up rows), got ", a.n));
  }
  const bool rope = a.output == GemvOutput::kRopeCache;
  if (a.w == nullptr || a.x == nullptr || (!rope && a.y == nullptr)) {
    return Invalid("DecodeGemv", "w, x and y must be set");
  }
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (!aligned(a.w) || !aligned(a.x) || (a.norm_weight != nullptr && !aligned(a.norm_weight))) {
    return Invalid("DecodeGemv", "w, x and norm_weight must be 16-byte aligned");
  }
  if (rope) {
    if (auto s = CheckGemvRope(a); !s.ok()) return s;
  } else if (a.y == a.x || a.y == a.w || a.y == a.norm_weight) {
    return Invalid("DecodeGemv", "y aliases an input");
  }
  return Launched("DecodeGemv", LaunchDecodeGemv(a, stream));
}

absl::Status SampleTokens(const SampleArgs& a, Stream stream) {
  if (a.rows < 0 || a.vocab < 1) return Invalid("SampleTokens", absl::StrCat("bad shape [", a.rows, ", ", a.vocab, "]"));
  if (a.rows == 0) return absl::OkStatus();
  if (a.logits == nullptr || a.tokens == nullptr) return Invalid("SampleTokens", "logits and tokens must be set");
  if (a.temperature != nullptr &&
      (a.top_k == nullptr || a.top_p == nullptr || a.min_p == nullptr || a.keys == nullptr)) {
    return Invalid("SampleTokens", "with a temperature, top_k, top_p, min_p and keys must be set");
  }
  return Launched("SampleTokens", LaunchSampleTokens(a, stream));
}

size_t DecodeAttentionWorkspaceBytes(int num_seqs, int num_heads, int head_dim, int num_splits) {
  // uint32 arrival counters [num_seqs * num_heads, rounded up to 16 bytes],
  // partial outputs [num_seqs, num_heads, num_splits, head_dim], then the
  // running max and the sum of exponentials, each [num_seqs, num_heads, num_splits]
  // (decode_attention.cu's LaunchTyped).
  const size_t rows = static_cast<size_t>(num_seqs) * num_heads;
  return sizeof(float) * ((rows + 3) / 4 * 4 + rows * num_splits * (head_dim + 2));
}

int ChooseDecodeSplits(int num_seqs, int num_kv_heads, int sm_count) {
  const int groups = std::max(1, num_seqs * num_kv_heads);
  // Two thread blocks per multiprocessor keep the memory system busy.
  const int splits = (2 * std::max(1, sm_count) + groups - 1) / groups;
  return std::clamp(splits, 1, 64);
}

}  // namespace gantry::cuda
