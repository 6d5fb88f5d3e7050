// The staged GPU upload (runtime/cuda/staged_upload.h) as TensorLoader's
// ByteSink: one uploader per CUDA device for the whole process, created on
// first use (pinning its buffers once) and shared by every load on it.
#ifndef GANTRY_RUNTIME_INTERNAL_STAGED_UPLOAD_SINK_H_
#define GANTRY_RUNTIME_INTERNAL_STAGED_UPLOAD_SINK_H_

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "runtime/internal/tensor_loader.h"

namespace gantry::runtime {

// The sink for loads onto `device`; nullptr (load by copies) for the CPU and
// for builds without Gantry's CUDA kernels. Errors: the pinned buffers could
// not be allocated.
absl::StatusOr<ByteSink*> StagedUploadSinkFor(const at::Device& device);

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_STAGED_UPLOAD_SINK_H_
