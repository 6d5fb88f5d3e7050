// Issue 16: for the bge-m3 encoder's products (fp16, Y[M,N] = X[M,K] W[N,K]^T),
// time every algorithm cuBLASLt's heuristic offers and print TFLOP/s of the
// first (what a default call gets) beside the best: how much a per-shape
// choice of algorithm could gain over cuBLAS's own. A measuring tool, not
// part of Gantry; on the GPU machine:
//   nvcc -std=c++17 -arch=sm_90a -o /tmp/encoder_gemm_probe tools/encoder_gemm_probe.cu -lcublasLt
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <vector>
// Random operands: constant ones draw less power, so the GPU holds higher
// clocks than it does on real activations and weights.
__global__ void FillRandom(half* out, long n, unsigned seed, float scale) {
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
    unsigned h = (unsigned)i * 2654435761u ^ seed;
    h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
    out[i] = __float2half(scale * ((h & 0xFFFFFF) / 8388608.0f - 1.0f));
  }
}
#define CK(x) do { auto e = (x); if ((int)e) { std::printf("error %d at %s:%d\n", (int)e, __FILE__, __LINE__); return 1; } } while (0)
int main() {
  cublasLtHandle_t lt; CK(cublasLtCreate(&lt));
  const size_t ws_bytes = 64ull << 20; void* ws; CK(cudaMalloc(&ws, ws_bytes));
  struct Shape { long m, n, k; const char* name; };
  std::vector<Shape> shapes = {
    {16384, 3072, 1024, "qkv b32"}, {16384, 1024, 1024, "o b32"}, {16384, 4096, 1024, "up b32"}, {16384, 1024, 4096, "down b32"},
    {131072, 3072, 1024, "qkv b256"}, {131072, 1024, 1024, "o b256"}, {131072, 4096, 1024, "up b256"}, {131072, 1024, 4096, "down b256"}};
  cudaStream_t stream; CK(cudaStreamCreate(&stream));
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  for (const Shape& s : shapes) {
    half *x, *w, *y;
    CK(cudaMalloc(&x, s.m * s.k * 2)); CK(cudaMalloc(&w, s.n * s.k * 2)); CK(cudaMalloc(&y, s.m * s.n * 2));
    FillRandom<<<1024, 256>>>(x, s.m * s.k, 1, 1.0f);
    FillRandom<<<1024, 256>>>(w, s.n * s.k, 2, 0.05f);
    CK(cudaDeviceSynchronize());
    cublasLtMatmulDesc_t op; CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)));
    cublasLtMatrixLayout_t la, lb, lc;
    CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16F, s.k, s.n, s.k));
    CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16F, s.k, s.m, s.k));
    CK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16F, s.n, s.m, s.n));
    cublasLtMatmulPreference_t pref; CK(cublasLtMatmulPreferenceCreate(&pref));
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
    cublasLtMatmulHeuristicResult_t res[64]; int count = 0;
    CK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 64, res, &count));
    float alpha = 1, beta = 0;
    double first = 0, best = 0; int best_i = -1;
    for (int i = 0; i < count; ++i) {
      if (res[i].state) continue;
      bool ok = true;
      for (int r = 0; r < 10 && ok; ++r)
        ok = cublasLtMatmul(lt, op, &alpha, w, la, x, lb, &beta, y, lc, y, lc, &res[i].algo, ws, ws_bytes, stream) == 0;
      if (!ok) continue;
      const int reps = 30;
      cudaEventRecord(a, stream);
      for (int r = 0; r < reps; ++r) cublasLtMatmul(lt, op, &alpha, w, la, x, lb, &beta, y, lc, y, lc, &res[i].algo, ws, ws_bytes, stream);
      cudaEventRecord(b, stream); cudaEventSynchronize(b);
      float ms; cudaEventElapsedTime(&ms, a, b);
      const double tflops = 2.0 * s.m * s.n * s.k * reps / (ms * 1e-3) / 1e12;
      if (i == 0) first = tflops;
      if (tflops > best) { best = tflops; best_i = i; }
      int id = 0, tile = 0, stages = 0, splitk = 0, swizzle = 0, cluster = 0; size_t sz;
      cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &sz);
      cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &sz);
      cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof(stages), &sz);
      cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk), &sz);
      cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swizzle, sizeof(swizzle), &sz);
      cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof(cluster), &sz);
      std::printf("  %-10s algo %2d id %3d tile %3d stages %3d splitk %d swizzle %d cluster %2d: %6.1f TFLOP/s\n", s.name, i, id, tile, stages, splitk, swizzle, cluster, tflops);
    }
    std::printf("%-10s M=%ld N=%ld K=%ld: %d candidates, first %.1f, best %.1f (#%d) TFLOP/s\n", s.name, s.m, s.n, s.k, count, first, best, best_i);
    cudaFree(x); cudaFree(w); cudaFree(y);
    cublasLtMatmulPreferenceDestroy(pref); cublasLtMatrixLayoutDestroy(la); cublasLtMatrixLayoutDestroy(lb); cublasLtMatrixLayoutDestroy(lc); cublasLtMatmulDescDestroy(op);
  }
  return 0;
}
