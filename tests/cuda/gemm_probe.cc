// Not a test: times the decode projections of a Llama-3.1-8B-shaped model
// (y[m, n] = x[m, k] W^T, bf16, m = 1 and 8) through cublasGemmEx as LibTorch
// calls it, and through every algorithm cublasLt's heuristics offer, each as
// a CUDA graph of back-to-back calls (as a decode step replays them) over
// enough weight copies that L2 holds none of them. Prints each candidate's
// split-K and reduction scheme: the question is whether an algorithm without
// cuBLAS's separate split-K reduce kernel is faster end to end.
//   gemm_probe [m ...]
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <set>
#include <tuple>
#include <vector>

namespace {

#define CHECK_CUDA(x)                                                                      \
  do {                                                                                     \
    cudaError_t e = (x);                                                                   \
    if (e != cudaSuccess) {                                                                \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)
#define CHECK_CUBLAS(x)                                                             \
  do {                                                                              \
    cublasStatus_t st = (x);                                                        \
    if (st != CUBLAS_STATUS_SUCCESS) {                                              \
      std::fprintf(stderr, "%s:%d %s: status %d\n", __FILE__, __LINE__, #x, (int)st); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

constexpr int kCallsPerGraph = 24;
constexpr int kReplays = 8;
constexpr size_t kWorkspaceBytes = 32 << 20;

// Microseconds per call of `call(i)` (i: the call's index in the graph).
double TimeGraph(cudaStream_t stream, const std::function<bool(int)>& call) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  bool ok = true;
  for (int i = 0; i < kCallsPerGraph && ok; ++i) ok = call(i);
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  if (!ok) {
    cudaGraphDestroy(graph);
    return -1;
  }
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  CHECK_CUDA(cudaGraphLaunch(exec, stream));
  CHECK_CUDA(cudaEventRecord(start, stream));
  for (int r = 0; r < kReplays; ++r) CHECK_CUDA(cudaGraphLaunch(exec, stream));
  CHECK_CUDA(cudaEventRecord(stop, stream));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return 1e3 * ms / (kReplays * kCallsPerGraph);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> ms;
  for (int i = 1; i < argc; ++i) ms.push_back(std::atoi(argv[i]));
  if (ms.empty()) ms = {1, 8};
  struct Shape {
    const char* name;
    int64_t n, k;
  };
  const Shape shapes[] = {{"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 28672, 4096}, {"down", 4096, 14336}};

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasHandle_t blas;
  CHECK_CUBLAS(cublasCreate(&blas));
  CHECK_CUBLAS(cublasSetStream(blas, stream));
  cublasLtHandle_t lt;
  CHECK_CUBLAS(cublasLtCreate(&lt));
  void* workspace;
  CHECK_CUDA(cudaMalloc(&workspace, kWorkspaceBytes));
  CHECK_CUBLAS(cublasSetWorkspace(blas, workspace, kWorkspaceBytes));

  for (const Shape& s : shapes) {
    const size_t weight_bytes = static_cast<size_t>(s.n) * s.k * 2;
    const int copies = static_cast<int>(std::max<size_t>(2, (320u << 20) / weight_bytes + 1));
    std::vector<void*> weights(copies);
    for (void*& w : weights) {
      CHECK_CUDA(cudaMalloc(&w, weight_bytes));
      CHECK_CUDA(cudaMemset(w, 0x3c, weight_bytes));  // small finite bf16 values
    }
    void *x, *y;
    CHECK_CUDA(cudaMalloc(&x, 8 * s.k * 2));
    CHECK_CUDA(cudaMemset(x, 0x3c, 8 * s.k * 2));
    CHECK_CUDA(cudaMalloc(&y, 8 * s.n * 2));

    for (int m : ms) {
      const double gb = weight_bytes / 1e3;  // bytes per us -> GB/s after division
      const float alpha = 1.0f, beta = 0.0f;
      // LibTorch's at::linear: gemm(T, N) with m' = n, n' = m.
      const double gemm_ex = TimeGraph(stream, [&](int i) {
        return cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, s.n, m, s.k, &alpha, weights[i % copies], CUDA_R_16BF,
                            s.k, x, CUDA_R_16BF, s.k, &beta, y, CUDA_R_16BF, s.n, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT_TENSOR_OP) == CUBLAS_STATUS_SUCCESS;
      });
      std::printf("%-8s m=%d n=%ld k=%ld: cublasGemmEx %.2f us (%.0f GB/s)\n", s.name, m, (long)s.n, (long)s.k,
                  gemm_ex, gb / gemm_ex);

      cublasLtMatmulDesc_t desc;
      CHECK_CUBLAS(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      const cublasOperation_t trans_a = CUBLAS_OP_T;
      CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
      cublasLtMatrixLayout_t a_layout, b_layout, c_layout;
      CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&a_layout, CUDA_R_16BF, s.k, s.n, s.k));
      CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&b_layout, CUDA_R_16BF, s.k, m, s.k));
      CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&c_layout, CUDA_R_16BF, s.n, m, s.n));
      std::vector<cublasLtMatmulHeuristicResult_t> candidates;
      std::set<std::vector<int>> seen;
      for (uint32_t mask : {static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_MASK),
                            static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_INPLACE),
                            static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_NONE)}) {
        cublasLtMatmulPreference_t pref;
        CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
        CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                          &kWorkspaceBytes, sizeof(kWorkspaceBytes)));
        CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &mask,
                                                          sizeof(mask)));
        cublasLtMatmulHeuristicResult_t results[16];
        int returned = 0;
        if (cublasLtMatmulAlgoGetHeuristic(lt, desc, a_layout, b_layout, c_layout, c_layout, pref, 16, results,
                                           &returned) == CUBLAS_STATUS_SUCCESS) {
          for (int r = 0; r < returned; ++r) {
            std::vector<int> key(8);
            for (int attr = 0; attr < 8; ++attr) {
              size_t written = 0;
              cublasLtMatmulAlgoConfigGetAttribute(&results[r].algo, static_cast<cublasLtMatmulAlgoConfigAttributes_t>(attr),
                                                   &key[attr], sizeof(int), &written);
            }
            if (seen.insert(key).second) candidates.push_back(results[r]);
          }
        }
        cublasLtMatmulPreferenceDestroy(pref);
      }
      double best = 1e30;
      for (size_t r = 0; r < candidates.size(); ++r) {
        const cublasLtMatmulAlgo_t& algo = candidates[r].algo;
        int id = 0, tile = 0, splitk = 0, reduction = 0, stages = 0;
        size_t written = 0;
        cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &written);
        cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &written);
        cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk), &written);
        cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &reduction,
                                             sizeof(reduction), &written);
        cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof(stages), &written);
        const double us = TimeGraph(stream, [&](int i) {
          return cublasLtMatmul(lt, desc, &alpha, weights[i % copies], a_layout, x, b_layout, &beta, y, c_layout, y,
                                c_layout, &algo, workspace, kWorkspaceBytes, stream) == CUBLAS_STATUS_SUCCESS;
        });
        best = std::min(best, us > 0 ? us : 1e30);
        std::printf("    lt #%2zu algo %3d tile %3d stages %3d splitK %2d reduction %d ws %8zu: %7.2f us (%.0f GB/s)\n",
                    r, id, tile, stages, splitk, reduction, candidates[r].workspaceSize, us, us > 0 ? gb / us : 0.0);
      }
      std::printf("    best cublasLt %.2f us vs cublasGemmEx %.2f us\n", best, gemm_ex);
      cublasLtMatrixLayoutDestroy(a_layout);
      cublasLtMatrixLayoutDestroy(b_layout);
      cublasLtMatrixLayoutDestroy(c_layout);
      cublasLtMatmulDescDestroy(desc);
    }
    for (void* w : weights) cudaFree(w);
    cudaFree(x);
    cudaFree(y);
  }
  cudaFree(workspace);
  cublasLtDestroy(lt);
  cublasDestroy(blas);
  cudaStreamDestroy(stream);
  return 0;
}
