// LtGemm (lt_gemm.h): argument checks, cuBLASLt descriptors, and the
// per-shape tuning. Descriptors live on the stack (cublasLt*Init on the
// opaque structs): no heap allocation or destroy call per Run.
#include "runtime/cuda/lt_gemm.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"

namespace gantry::cuda {
namespace {

static_assert(sizeof(cublasLtMatmulAlgo_t) == sizeof(std::array<uint64_t, 8>),
              "LtGemm::Choice keeps a cublasLtMatmulAlgo_t as 8 words");

constexpr uint32_t kMinAlignment = 16;   // what CheckLtGemmArgs requires
constexpr uint32_t kMaxAlignment = 256;  // cuBLASLt's default promise; no algorithm asks more

absl::Status Invalid(const std::string& what) { return absl::InvalidArgumentError(absl::StrCat("LtGemm: ", what)); }

absl::Status CublasFailed(const char* call, cublasStatus_t status) {
  return absl::InternalError(
      absl::StrCat("LtGemm: ", call, " failed: ", cublasLtGetStatusName(status), " (", static_cast<int>(status), ")"));
}

absl::Status CudaFailed(const char* call, cudaError_t error) {
  (void)cudaGetLastError();  // clear a non-sticky error so the next call reports its own
  return absl::InternalError(
      absl::StrCat("LtGemm: ", call, " failed: ", cudaGetErrorName(error), " (", cudaGetErrorString(error), ")"));
}

uintptr_t Address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// The largest power of two up to kMaxAlignment dividing p's address.
uint32_t AlignmentOf(const void* p) {
  uint32_t alignment = kMaxAlignment;
  while (alignment > 1 && Address(p) % alignment != 0) alignment /= 2;
  return alignment;
}

bool Overlap(const void* a, uint64_t a_bytes, const void* b, uint64_t b_bytes) {
  return Address(a) < Address(b) + b_bytes && Address(b) < Address(a) + a_bytes;
}

cudaDataType_t CudaType(DType dtype) { return dtype == DType::kFloat16 ? CUDA_R_16F : CUDA_R_16BF; }

cublasLtEpilogue_t EpilogueOf(const LtGemmArgs& a) {
  const bool bias = a.bias != nullptr;
  if (a.epilogue == LtEpilogue::kGelu) return bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
  return bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
}

// One product as cuBLASLt sees it. Row-major Y = X W^T is column-major
// Y^T = W^T X^T: A = W read transposed (k x n, lda = k), B = X (k x m,
// ldb = k), C = D = Y (n x m, ldc = n), as tools/encoder_gemm_probe.cu. With
// a residual, C is the residual in D's layout (beta = 1; see Run).
struct Problem {
  cublasLtMatmulDescOpaque_t desc;
  cublasLtMatrixLayoutOpaque_t a, b, c;
};

absl::Status Describe(const LtGemmArgs& args, Problem* p) {
  cublasStatus_t s = cublasLtMatmulDescInit(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  if (s != CUBLAS_STATUS_SUCCESS) return CublasFailed("cublasLtMatmulDescInit", s);
  auto set = [&](cublasLtMatmulDescAttributes_t attribute, const void* value, size_t bytes) {
    return cublasLtMatmulDescSetAttribute(&p->desc, attribute, value, bytes);
  };
  const int32_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  const uint32_t epilogue = EpilogueOf(args);
  if ((s = set(CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a))) != CUBLAS_STATUS_SUCCESS ||
      (s = set(CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b))) != CUBLAS_STATUS_SUCCESS ||
      (s = set(CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue))) != CUBLAS_STATUS_SUCCESS) {
    return CublasFailed("cublasLtMatmulDescSetAttribute", s);
  }
  if (args.bias != nullptr) {
    // The bias in the storage type (cuBLASLt's default for 16-bit outputs;
    // said explicitly so it never depends on that default).
    const int32_t bias_type = CudaType(args.dtype);
    if ((s = set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, &args.bias, sizeof(args.bias))) != CUBLAS_STATUS_SUCCESS ||
        (s = set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type))) != CUBLAS_STATUS_SUCCESS) {
      return CublasFailed("cublasLtMatmulDescSetAttribute(bias)", s);
    }
  }
  const cudaDataType_t type = CudaType(args.dtype);
  if ((s = cublasLtMatrixLayoutInit(&p->a, type, args.k, args.n, args.k)) != CUBLAS_STATUS_SUCCESS ||
      (s = cublasLtMatrixLayoutInit(&p->b, type, args.k, args.m, args.k)) != CUBLAS_STATUS_SUCCESS ||
      (s = cublasLtMatrixLayoutInit(&p->c, type, args.n, args.m, args.n)) != CUBLAS_STATUS_SUCCESS) {
    return CublasFailed("cublasLtMatrixLayoutInit", s);
  }
  return absl::OkStatus();
}

// Up to kLtGemmCandidates algorithms, the heuristic's best guess first.
// out_of_place (C != D, a residual): only those that support it.
absl::StatusOr<std::vector<cublasLtMatmulAlgo_t>> Candidates(cublasLtHandle_t handle, Problem& p, uint32_t alignment,
                                                             size_t workspace_bytes, bool out_of_place) {
  cublasLtMatmulPreferenceOpaque_t pref;
  cublasStatus_t s = cublasLtMatmulPreferenceInit(&pref);
  if (s != CUBLAS_STATUS_SUCCESS) return CublasFailed("cublasLtMatmulPreferenceInit", s);
  auto set = [&](cublasLtMatmulPreferenceAttributes_t attribute, const void* value, size_t bytes) {
    return cublasLtMatmulPreferenceSetAttribute(&pref, attribute, value, bytes);
  };
  // Split-K partial sums reduced in the 16-bit output type (in place or in
  // the workspace) would break the float32 accumulation: only whole-K
  // algorithms and float32 reductions.
  const uint32_t reductions = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  if ((s = set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof(workspace_bytes))) !=
          CUBLAS_STATUS_SUCCESS ||
      (s = set(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reductions, sizeof(reductions))) !=
          CUBLAS_STATUS_SUCCESS) {
    return CublasFailed("cublasLtMatmulPreferenceSetAttribute", s);
  }
  // cuBLASLt assumes 256-byte-aligned operands unless told otherwise.
  for (cublasLtMatmulPreferenceAttributes_t attribute :
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    if ((s = set(attribute, &alignment, sizeof(alignment))) != CUBLAS_STATUS_SUCCESS) {
      return CublasFailed("cublasLtMatmulPreferenceSetAttribute(alignment)", s);
    }
  }
  cublasLtMatmulHeuristicResult_t results[kLtGemmCandidates];
  int count = 0;
  s = cublasLtMatmulAlgoGetHeuristic(handle, &p.desc, &p.a, &p.b, &p.c, &p.c, &pref, kLtGemmCandidates, results,
                                     &count);
  if (s != CUBLAS_STATUS_SUCCESS) return CublasFailed("cublasLtMatmulAlgoGetHeuristic", s);
  std::vector<cublasLtMatmulAlgo_t> algos;
  for (int i = 0; i < count; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    if (out_of_place) {
      // The heuristic sees layouts, not pointers: it may offer an algorithm
      // that only writes in place (D == C). One whose capability cannot be
      // read stays (a failing candidate is skipped when timed).
      int32_t supported = 1;
      size_t written = 0;
      if (cublasLtMatmulAlgoCapGetAttribute(&results[i].algo, CUBLASLT_ALGO_CAP_OUT_OF_PLACE_RESULT_SUPPORT,
                                            &supported, sizeof(supported), &written) == CUBLAS_STATUS_SUCCESS &&
          supported == 0) {
        continue;
      }
    }
    algos.push_back(results[i].algo);
  }
  if (algos.empty()) return absl::NotFoundError("LtGemm: cublasLtMatmulAlgoGetHeuristic offered no algorithm");
  return algos;
}

// Restores the calling thread's stream-capture mode on scope exit.
class RelaxedCaptureMode {
 public:
  RelaxedCaptureMode() { (void)cudaThreadExchangeStreamCaptureMode(&mode_); }
  ~RelaxedCaptureMode() { (void)cudaThreadExchangeStreamCaptureMode(&mode_); }
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;

 private:
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

class Event {
 public:
  Event() = default;
  ~Event() {
    if (event_ != nullptr) (void)cudaEventDestroy(event_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaError_t Create() { return cudaEventCreate(&event_); }
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace

absl::Status CheckLtGemmArgs(const LtGemmArgs& a) {
  if (a.dtype != DType::kBFloat16 && a.dtype != DType::kFloat16) {
    return Invalid(absl::StrCat("dtype ", DTypeName(a.dtype), " is not supported (bfloat16 or float16)"));
  }
  constexpr int64_t kMaxDim = std::numeric_limits<int32_t>::max();
  if (a.m < 1 || a.n < 1 || a.k < 1 || a.m > kMaxDim || a.n > kMaxDim || a.k > kMaxDim) {
    return Invalid(absl::StrCat("bad shape m ", a.m, ", n ", a.n, ", k ", a.k, " (each must be in [1, 2^31))"));
  }
  if (a.n % 8 != 0 || a.k % 8 != 0) {
    return Invalid(absl::StrCat("n ", a.n, " and k ", a.k, " must be multiples of 8 (rows of 16 bytes)"));
  }
  if (a.epilogue != LtEpilogue::kNone && a.epilogue != LtEpilogue::kGelu) return Invalid("unknown epilogue");
  if (a.epilogue == LtEpilogue::kGelu && a.residual != nullptr) {
    // cuBLASLt adds C before the activation: gelu(x W^T + bias + residual).
    return Invalid("a GELU epilogue with a residual is not supported (cuBLASLt would add it inside the GELU)");
  }
  if (a.x == nullptr || a.w == nullptr || a.y == nullptr) return Invalid("x, w and y must be set");
  const std::pair<const char*, const void*> operands[] = {
      {"x", a.x}, {"w", a.w}, {"y", a.y}, {"bias", a.bias}, {"residual", a.residual}};
  for (const auto& [name, p] : operands) {
    if (p != nullptr && Address(p) % kMinAlignment != 0) return Invalid(absl::StrCat(name, " is not 16-byte aligned"));
  }
  const uint64_t m = a.m, n = a.n, k = a.k;  // each < 2^31: the byte counts fit
  if (Overlap(a.y, 2 * m * n, a.x, 2 * m * k)) return Invalid("y overlaps x");
  if (Overlap(a.y, 2 * m * n, a.w, 2 * n * k)) return Invalid("y overlaps w");
  if (a.bias != nullptr && Overlap(a.y, 2 * m * n, a.bias, 2 * n)) return Invalid("y overlaps bias");
  // Tuning writes y several times, reading the residual each time: in place,
  // the sums would compound. (The residual may overlap x, w or bias: all read.)
  if (a.residual != nullptr && Overlap(a.y, 2 * m * n, a.residual, 2 * m * n)) return Invalid("y overlaps residual");
  return absl::OkStatus();
}

int64_t LtGemmBucketM(int64_t m) {
  int64_t bucket = 1;
  while (bucket < m) bucket *= 2;
  return bucket;
}

bool LtGemm::Key::operator<(const Key& o) const {
  return std::tie(dtype, m_bucket, n, k, epilogue, has_bias, has_residual, alignment) <
         std::tie(o.dtype, o.m_bucket, o.n, o.k, o.epilogue, o.has_bias, o.has_residual, o.alignment);
}

absl::StatusOr<std::unique_ptr<LtGemm>> LtGemm::Create(size_t workspace_bytes) {
  int device = 0;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return CudaFailed("cudaGetDevice", e);
  cublasLtHandle_t handle = nullptr;
  if (cublasStatus_t s = cublasLtCreate(&handle); s != CUBLAS_STATUS_SUCCESS) return CublasFailed("cublasLtCreate", s);
  void* workspace = nullptr;
  if (workspace_bytes > 0) {
    if (cudaError_t e = cudaMalloc(&workspace, workspace_bytes); e != cudaSuccess) {
      (void)cublasLtDestroy(handle);
      const absl::Status failed = CudaFailed("cudaMalloc(workspace)", e);
      // Out of memory is the caller's to act on (as a model load's), not an internal error.
      return e == cudaErrorMemoryAllocation ? absl::ResourceExhaustedError(failed.message()) : failed;
    }
  }
  return std::unique_ptr<LtGemm>(new LtGemm(handle, workspace, workspace_bytes, device));
}

LtGemm::~LtGemm() {
  // cudaFree waits for the device, so no queued product still uses the workspace.
  if (workspace_ != nullptr) (void)cudaFree(workspace_);
  (void)cublasLtDestroy(handle_);
}

LtGemm::Key LtGemm::KeyOf(const LtGemmArgs& a) {
  uint32_t alignment = std::min({AlignmentOf(a.x), AlignmentOf(a.w), AlignmentOf(a.y)});
  if (a.bias != nullptr) alignment = std::min(alignment, AlignmentOf(a.bias));
  // C's alignment is promised too (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES).
  if (a.residual != nullptr) alignment = std::min(alignment, AlignmentOf(a.residual));
  return {a.dtype, LtGemmBucketM(a.m), a.n, a.k, a.epilogue, a.bias != nullptr, a.residual != nullptr, alignment};
}

std::optional<LtGemm::Choice> LtGemm::Cached(const std::map<Key, Choice>& cache, const Key& key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = cache.find(key);
  if (it == cache.end()) return std::nullopt;
  return it->second;
}

size_t LtGemm::TunedShapes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return tuned_.size();
}

std::optional<int> LtGemm::TunedAlgorithm(const LtGemmArgs& args) const {
  const std::optional<Choice> choice = Cached(tuned_, KeyOf(args));
  if (!choice.has_value()) return std::nullopt;
  return choice->rank;
}

absl::Status LtGemm::Run(const LtGemmArgs& args, Stream stream) {
  if (auto s = CheckLtGemmArgs(args); !s.ok()) return s;
  int device = 0;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return CudaFailed("cudaGetDevice", e);
  if (device != device_) {
    return absl::FailedPreconditionError(
        absl::StrCat("LtGemm: created on device ", device_, ", called with device ", device, " current"));
  }
  Problem p;
  if (auto s = Describe(args, &p); !s.ok()) return s;
  // D = alpha A B + beta C (+ bias), in float32 (the scale type), rounded
  // once: beta = 1 with C = the residual adds it; beta = 0 leaves C unread.
  const bool has_residual = args.residual != nullptr;
  const float alpha = 1.0f, beta = has_residual ? 1.0f : 0.0f;
  const void* c = has_residual ? args.residual : args.y;
  auto matmul = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(handle_, &p.desc, &alpha, args.w, &p.a, args.x, &p.b, &beta, c, &p.c, args.y, &p.c, &algo,
                          workspace_, workspace_bytes_, stream);
  };
  auto launch = [&](const Choice& choice) {
    cublasLtMatmulAlgo_t algo;
    std::memcpy(&algo, choice.algo.data(), sizeof(algo));
    const cublasStatus_t s = matmul(algo);
    return s == CUBLAS_STATUS_SUCCESS ? absl::OkStatus() : CublasFailed("cublasLtMatmul", s);
  };
  const Key key = KeyOf(args);
  // A cached choice was made for another m of the bucket (or this one):
  // should cuBLASLt refuse it for this m, the heuristic's first for the
  // exact problem runs instead.
  auto launch_cached = [&](const Choice& choice) {
    absl::Status status = launch(choice);
    if (status.ok()) return status;
    auto candidates = Candidates(handle_, p, key.alignment, workspace_bytes_, has_residual);
    if (!candidates.ok()) return status;
    const cublasStatus_t s = matmul(candidates->front());
    return s == CUBLAS_STATUS_SUCCESS ? absl::OkStatus() : CublasFailed("cublasLtMatmul", s);
  };
  auto choice_of = [](const cublasLtMatmulAlgo_t& algo, int rank) {
    Choice choice;
    std::memcpy(choice.algo.data(), &algo, sizeof(algo));
    choice.rank = rank;
    return choice;
  };

  const bool tune = autotune.load(std::memory_order_relaxed);
  // The common case: one map lookup under the lock, then the launch.
  if (auto cached = Cached(tune ? tuned_ : first_, key)) return launch_cached(*cached);

  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaError_t e = cudaStreamIsCapturing(stream, &capture); e != cudaSuccess) {
    return CudaFailed("cudaStreamIsCapturing", e);
  }
  if (!tune || capture != cudaStreamCaptureStatusNone) {
    // No timing: waiting on an event would break a capture. The heuristic's
    // first is remembered apart, so the shape is still tuned by the first
    // call outside a capture.
    if (auto cached = Cached(first_, key)) return launch_cached(*cached);
    auto candidates = Candidates(handle_, p, key.alignment, workspace_bytes_, has_residual);
    if (!candidates.ok()) return candidates.status();
    const Choice first = choice_of(candidates->front(), 0);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      first_.emplace(key, first);
    }
    return launch(first);
  }

  std::lock_guard<std::mutex> tuning(tune_mutex_);
  if (auto cached = Cached(tuned_, key)) return launch_cached(*cached);  // another thread tuned it meanwhile
  auto candidates = Candidates(handle_, p, key.alignment, workspace_bytes_, has_residual);
  if (!candidates.ok()) return candidates.status();
  // This thread may be capturing another stream in a strict mode, where
  // waiting on an event would invalidate that capture; ours are never captured.
  RelaxedCaptureMode relaxed;
  Event start, stop;
  if (cudaError_t e = start.Create(); e != cudaSuccess) return CudaFailed("cudaEventCreate", e);
  if (cudaError_t e = stop.Create(); e != cudaSuccess) return CudaFailed("cudaEventCreate", e);

  int best = -1;
  float best_ms = std::numeric_limits<float>::infinity();
  int y_from = -1;  // the candidate whose result y holds, -1 if none or unknown
  absl::Status failure;
  for (int i = 0; i < static_cast<int>(candidates->size()); ++i) {
    const cublasLtMatmulAlgo_t& algo = (*candidates)[i];
    y_from = -1;  // from here on y may hold part of this candidate's output
    cublasStatus_t s = matmul(algo);  // warm-up
    if (s != CUBLAS_STATUS_SUCCESS) {
      failure = CublasFailed("cublasLtMatmul", s);
      continue;  // this candidate cannot run these operands: skip it
    }
    if (cudaError_t e = cudaEventRecord(start.get(), stream); e != cudaSuccess) {
      failure = CudaFailed("cudaEventRecord", e);
      continue;
    }
    for (int r = 0; r < kLtGemmTimedRuns && s == CUBLAS_STATUS_SUCCESS; ++r) s = matmul(algo);
    if (s != CUBLAS_STATUS_SUCCESS) {
      failure = CublasFailed("cublasLtMatmul", s);
      continue;
    }
    float ms = 0;
    cudaError_t e = cudaEventRecord(stop.get(), stream);
    if (e == cudaSuccess) e = cudaEventSynchronize(stop.get());
    if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, start.get(), stop.get());
    if (e != cudaSuccess) {
      failure = CudaFailed("timing a candidate", e);
      continue;
    }
    y_from = i;
    if (ms < best_ms) {
      best_ms = ms;
      best = i;
    }
  }
  if (best < 0) {
    return absl::InternalError(absl::StrCat("LtGemm: none of ", candidates->size(), " candidates ran; last error: ",
                                            failure.message()));
  }
  const Choice chosen = choice_of((*candidates)[best], best);
  if (y_from != best) {
    if (auto s = launch(chosen); !s.ok()) return s;  // y must be the chosen algorithm's
  }
  std::lock_guard<std::mutex> lock(mutex_);
  tuned_.emplace(key, chosen);
  return absl::OkStatus();
}

}  // namespace gantry::cuda
