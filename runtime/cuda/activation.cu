// SwiGLU activation of the fused gate/up projection (kernels.h):
// output = dtype(dtype(silu(gate)) * up), silu(g) = g / (1 + exp(-g)) in
// float32 as PyTorch computes it, then rounded to the storage type before the
// product, as transformers' act_fn(gate) * up does.
//
// Purely elementwise and memory-bound: grid.x walks the rows, grid.y the
// columns of a row, and each thread moves one 16-byte vector of gate, up and
// output when the dim and pointers allow it (one element otherwise).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "runtime/cuda/dtype.cuh"
#include "runtime/cuda/launch.h"
#include "runtime/cuda/pdl.cuh"

namespace gantry::cuda {
namespace {

constexpr int kThreads = 256;

// kN values of T moved as one aligned vector.
template <typename T, int kN>
struct alignas(sizeof(T) * kN) Pack {
  T v[kN];
};

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    SiluMulKernel(const T* __restrict__ gate_up,  // [rows, 2 * dim]: gate, then up
                  T* __restrict__ output,         // [rows, dim]
                  int64_t dim) {
  using P = Pack<T, kVec>;
  const int64_t i = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;  // vector in the row
  WaitForPriorGrid();  // gate_up comes from the projection just before
  AllowDependentLaunch();  // the next kernel may start loading its weights
  if (i >= dim / kVec) return;
  const int64_t row = blockIdx.x;
  const P g = reinterpret_cast<const P*>(gate_up + row * 2 * dim)[i];
  const P u = reinterpret_cast<const P*>(gate_up + row * 2 * dim + dim)[i];
  P out;
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    const float x = ToFloat(g.v[k]);
    // Accurate expf and division (no fast math): exp(-x) overflows to inf
    // for x < -88 and the quotient is then -0, as in PyTorch.
    out.v[k] = FromFloat<T>(Round<T>(x / (1.0f + expf(-x))) * ToFloat(u.v[k]));
  }
  reinterpret_cast<P*>(output + row * dim)[i] = out;
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T, int kVec>
cudaError_t LaunchWith(const SiluMulArgs& a, cudaStream_t stream) {
  const int64_t vecs = a.dim / kVec;
  // Narrow rows (small dims) get narrow blocks rather than idle threads.
  const int threads = static_cast<int>(std::min<int64_t>(kThreads, (vecs + 31) / 32 * 32));
  const dim3 grid(static_cast<unsigned>(a.rows), static_cast<unsigned>((vecs + threads - 1) / threads));
  return LaunchKernel(&SiluMulKernel<T, kVec>, grid, dim3(threads), 0, stream, static_cast<const T*>(a.gate_up),
                      static_cast<T*>(a.output), a.dim);
}

template <typename T>
cudaError_t Launch(const SiluMulArgs& a, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  // gate_up rows start at multiples of 2 * dim and up at + dim: all 16-byte
  // aligned when the base is and dim is a multiple of kVec.
  if (a.dim % kVec == 0 && Aligned16(a.gate_up) && Aligned16(a.output)) return LaunchWith<T, kVec>(a, stream);
  return LaunchWith<T, 1>(a, stream);
}

}  // namespace

cudaError_t LaunchSiluMul(const SiluMulArgs& args, cudaStream_t stream) {
  return DispatchDType(args.dtype, [&](auto t) { return Launch<decltype(t)>(args, stream); });
}

}  // namespace gantry::cuda
