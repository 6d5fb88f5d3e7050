// Device side of programmatic dependent launch (launch.h's LaunchKernel).
// A kernel launched that way may be running while the kernel before it in the
// stream still is; griddepcontrol.wait blocks until that kernel has completed
// and its memory operations are visible (PTX ISA), and is a no-op when the
// launch was an ordinary one. Every thread block of such a kernel calls it
// before touching anything an earlier kernel writes or reads (loads of
// weights, which nothing writes, may go before), and before it exits, so the
// kernel never completes ahead of its predecessor. Kernels of the decode step
// call AllowDependentLaunch() right after their wait, so the next kernel can
// be scheduled and start loading its weights while this one runs (the
// implicit trigger, when every block has exited, would let it start only at
// the end); its own wait still holds it until this grid has completed. Only
// after the wait, so at most two kernels of the stream are resident at once.
#ifndef GANTRY_RUNTIME_CUDA_PDL_CUH_
#define GANTRY_RUNTIME_CUDA_PDL_CUH_

namespace gantry::cuda {

__device__ __forceinline__ void WaitForPriorGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void AllowDependentLaunch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

}  // namespace gantry::cuda

#endif  // GANTRY_RUNTIME_CUDA_PDL_CUH_
