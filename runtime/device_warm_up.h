// Warming a device up for model loads, once per process.
//
// Why: the first model loaded onto a CUDA device pays, on top of its
// weights, for what every later load finds ready: the staging buffers'
// pinning, cuBLAS handles and workspaces, the lazy loading of the kernels
// (CUDA loads each on its first launch), the graph machinery. On the H100
// machine that made the first 8B load's set-up 0.41-0.51 s against 0.19 s
// for the next ones (serving_bench --swap_rounds, 2026-12-06). The server
// pays it at start-up instead, by loading a tiny zero-weight Llama with the
// production options.
//
// Torch-free: the server and benchmarks call it.
#ifndef GANTRY_RUNTIME_DEVICE_WARM_UP_H_
#define GANTRY_RUNTIME_DEVICE_WARM_UP_H_

#include <string>

#include "absl/status/statusor.h"

namespace gantry::runtime {

// Loads (then frees) a tiny Llama of `dtype` ("float32", "bfloat16",
// "float16") onto `device` ("cpu", "cuda", "cuda:N"), through the same path
// as a real model: staged upload, the CUDA forward's warm-up step and graph
// capture, sampling. Its files go to a temporary folder under $TMPDIR (else
// /tmp), removed before returning. Returns the seconds it took.
absl::StatusOr<double> WarmUpDevice(const std::string& device, const std::string& dtype);

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_DEVICE_WARM_UP_H_
