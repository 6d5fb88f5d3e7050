// Device side of programmatic dependent launch (launch.h's LaunchKernel).
// A kernel launched that way may be running while the kernel before it in the
// stream still is; griddepcontrol.wait blocks until that kernel has completed
// and its memory operations are visible (PTX ISA), and is a no-op when the
// launch was an ordinary one. Every thread block of such a kernel calls it
// before touching anything an earlier kernel writes or reads (loads of
// weights, which nothing writes, may go before), and before it exits, so the
// kernel never completes ahead of its predecessor. No kernel here triggers its
// dependents early (griddepcontrol.launch_dependents): the implicit trigger
// when a block exits is enough for grids that fit in one wave.
#ifndef GANTRY_RUNTIME_CUDA_PDL_CUH_
#define GANTRY_RUNTIME_CUDA_PDL_CUH_

namespace gantry::cuda {

__device__ __forceinline__ void WaitForPriorGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

}  // namespace gantry::cuda

#endif  // GANTRY_RUNTIME_CUDA_PDL_CUH_
