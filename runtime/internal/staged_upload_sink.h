// The staged GPU upload (runtime/cuda/staged_upload.h) as TensorLoader's
// ByteSink, lent to one load at a time from a pool per CUDA device
// (byte_sink_pool.h): the buffers are pinned once and reused by later loads.
#ifndef GANTRY_RUNTIME_INTERNAL_STAGED_UPLOAD_SINK_H_
#define GANTRY_RUNTIME_INTERNAL_STAGED_UPLOAD_SINK_H_

#include <ATen/ATen.h>

#include <memory>

#include "absl/status/statusor.h"
#include "runtime/internal/tensor_loader.h"

namespace gantry::runtime {

// A sink for one load onto `device`, to destroy when the load is done;
// nullptr (load by copies) when not `staged` (LoadOptions::cuda_staged_upload),
// for the CPU and for builds without Gantry's CUDA kernels. Errors: the pinned
// buffers could not be allocated.
absl::StatusOr<std::unique_ptr<ByteSink>> StagedUploadSinkFor(const at::Device& device, bool staged);

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_STAGED_UPLOAD_SINK_H_
