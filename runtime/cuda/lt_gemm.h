// Y[m, n] = X[m, k] W[n, k]^T (+ bias[n]) (then GELU, or + residual[m, n])
// through cuBLASLt, with the algorithm chosen per shape by timing the
// candidates cuBLASLt offers.
//
// Why we call cuBLASLt ourselves instead of at::linear: LibTorch always takes
// the heuristic's first algorithm (cublasLtMatmulAlgoGetHeuristic, one
// result). On an H200 with random operands (tools/encoder_gemm_probe.cu), the
// fastest of the heuristic's candidates beats its first by 5-25% on the
// encoder's products (M = 16,384 or 131,072 tokens; N x K = 3072x1024,
// 1024x1024, 4096x1024, 1024x4096). So the first call of a shape asks for up
// to kLtGemmCandidates candidates, times each on that call's own operands
// (one warm-up run, then kLtGemmTimedRuns runs between two events on the
// call's stream, waiting for the second), and keeps the fastest; every later
// call of that shape launches it with no timing and no synchronisation.
//
// Numerics: bf16 or fp16 storage, float32 accumulation and epilogue (split-K
// schemes that reduce in the 16-bit output type are excluded), one rounding
// to the storage type at the end: y = dtype(gelu?(x W^T + bias)), or with a
// residual y = dtype(x W^T + bias + residual) (cuBLASLt's beta = 1 with C =
// the residual, read in the storage type, summed in float32: a post-norm
// sublayer's residual add rounded once, where dense-then-add rounds twice).
// No GELU with a residual: cuBLASLt adds beta C before the epilogue's
// activation, which would put the residual inside the GELU. The GELU is
// cuBLASLt's CUBLASLT_EPILOGUE_GELU(_BIAS), the tanh approximation
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (what PyTorch applies
// itself where it cannot use that epilogue); exact-erf models (BERT's "gelu")
// differ from it by at most 5e-4 absolute.
//
// Torch-free and free of CUDA headers, like kernels.h: raw device pointers and
// the caller's stream.
#ifndef GANTRY_RUNTIME_CUDA_LT_GEMM_H_
#define GANTRY_RUNTIME_CUDA_LT_GEMM_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/cuda/kernels.h"

struct cublasLtContext;  // cublasLtHandle_t is cublasLtContext*

namespace gantry::cuda {

inline constexpr int kLtGemmCandidates = 8;  // heuristic candidates timed per shape
inline constexpr int kLtGemmTimedRuns = 3;   // timed runs per candidate, after one warm-up

// The m a shape is tuned for: m rounded up to a power of two. A caller whose
// m varies (an encoder's batch x padded length) would otherwise tune afresh
// for every new m, about kLtGemmCandidates x (1 + kLtGemmTimedRuns) products
// and a wait each time; the fastest algorithm changes with the order of
// magnitude of m, not with its last digits. m >= 1.
int64_t LtGemmBucketM(int64_t m);

enum class LtEpilogue { kNone, kGelu };

struct LtGemmArgs {
  DType dtype = DType::kBFloat16;  // kBFloat16 or kFloat16 only
  int64_t m = 0, n = 0, k = 0;     // all >= 1; n and k multiples of 8
  const void* x = nullptr;         // [m, k] row-major
  const void* w = nullptr;         // [n, k] row-major (a Linear layer's weight as stored)
  const void* bias = nullptr;      // [n] or nullptr
  LtEpilogue epilogue = LtEpilogue::kNone;  // kNone when residual is set
  const void* residual = nullptr;  // [m, n] row-major or nullptr: added in the epilogue
  void* y = nullptr;               // [m, n] row-major; must not overlap x, w, bias or residual
};

// The host-side checks LtGemm::Run makes before touching the device: dtype,
// positive shape, n % 8 == 0 and k % 8 == 0, x, w, y (and bias and residual,
// when set) 16-byte aligned (the vectorised loads of cuBLASLt's fast
// kernels), y not overlapping an input (not even the residual: tuning writes y
// several times, so an in-place sum would compound), no GELU with a residual.
// InvalidArgument naming what is wrong.
absl::Status CheckLtGemmArgs(const LtGemmArgs& args);

// One per device (the one current at Create; Run refuses another). Thread-safe:
// the caches are behind a mutex, and tuning is serialised. The workspace is
// shared by every call: calls on one stream (or on streams ordered among
// themselves) are safe; calls that may run at once on independent streams
// need one LtGemm each.
class LtGemm {
 public:
  // cublasLtCreate, and cudaMalloc of `workspace_bytes` on the current device
  // (0: none, which leaves out the algorithms that need one; cuBLAS suggests
  // 32 MiB on Hopper). RESOURCE_EXHAUSTED when that allocation fails.
  static absl::StatusOr<std::unique_ptr<LtGemm>> Create(size_t workspace_bytes);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // Validates (CheckLtGemmArgs), then launches y = dtype(epilogue(x W^T +
  // bias) (+ residual)) on `stream`. The first call of a shape (see below)
  // with autotune on tunes it: it writes y several times (reading x, w, bias
  // and residual each time) and waits for the stream; y ends as the
  // chosen algorithm's result. While `stream` is capturing a CUDA graph
  // nothing is timed: an untuned shape gets the heuristic's first algorithm,
  // and stays untuned. cuBLAS and CUDA failures come back as a Status naming
  // the call and the error.
  absl::Status Run(const LtGemmArgs& args, Stream stream);

  // Shapes tuned so far. A shape is (dtype, LtGemmBucketM(m), n, k, epilogue,
  // bias or not, residual or not) and the alignment class of the pointers
  // (the largest power of two up to 256 dividing all of them): cuBLASLt
  // chooses among algorithms by the alignment it is promised, so an
  // algorithm tuned for 256-byte-aligned operands may refuse 16-byte-aligned
  // ones. A shape's algorithm is tuned on the first m of its bucket that
  // runs; should cuBLASLt refuse it for another m of the bucket, that call
  // takes the heuristic's first for its exact m (untimed, not cached).
  size_t TunedShapes() const;
  // For tests and logs: the heuristic rank (0 = its first) of the algorithm
  // tuned for the shape of `args`, if that shape has been tuned.
  std::optional<int> TunedAlgorithm(const LtGemmArgs& args) const;

  // false: every call takes the heuristic's first algorithm, untimed (for
  // comparing). Read at every Run.
  std::atomic<bool> autotune{true};

 private:
  struct Key {
    DType dtype;
    int64_t m_bucket, n, k;  // m_bucket = LtGemmBucketM(m)
    LtEpilogue epilogue;
    bool has_bias;
    bool has_residual;   // beta = 1 and C != D: another problem to cuBLASLt
    uint32_t alignment;  // bytes, 16..256
    bool operator<(const Key& other) const;
  };
  // A cublasLtMatmulAlgo_t (64 opaque bytes; lt_gemm.cc checks the size) and
  // its rank among the heuristic's candidates.
  struct Choice {
    std::array<uint64_t, 8> algo;
    int rank = 0;
  };

  LtGemm(cublasLtContext* handle, void* workspace, size_t workspace_bytes, int device)
      : handle_(handle), workspace_(workspace), workspace_bytes_(workspace_bytes), device_(device) {}

  static Key KeyOf(const LtGemmArgs& args);
  std::optional<Choice> Cached(const std::map<Key, Choice>& cache, const Key& key) const;

  cublasLtContext* const handle_;
  void* const workspace_;
  const size_t workspace_bytes_;
  const int device_;

  mutable std::mutex mutex_;       // guards the two caches
  std::map<Key, Choice> tuned_;    // timed, the fastest candidate
  std::map<Key, Choice> first_;    // the heuristic's first (autotune off, or capturing)
  std::mutex tune_mutex_;          // one tuning at a time: clean timings, no shape tuned twice
};

}  // namespace gantry::cuda

#endif  // GANTRY_RUNTIME_CUDA_LT_GEMM_H_
