// Copies tensors of a mapped checkpoint to the device: whole, sliced along
// a dimension (a tensor-parallel shard) or several concatenated (fused q/k/v),
// converting the dtype on the way. Shared by the decoder and encoder loaders.
// With a ByteSink (the CUDA loader's pinned, pipelined upload), every part
// that is a contiguous run of the file's bytes in the target dtype (whole
// tensors and dim-0 slices) goes through it instead; the rest (column slices
// of tensor-parallel shards, dtype conversions) is copied.
#ifndef GANTRY_RUNTIME_INTERNAL_TENSOR_LOADER_H_
#define GANTRY_RUNTIME_INTERNAL_TENSOR_LOADER_H_

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/checkpoint.h"

namespace gantry::runtime {

inline absl::StatusOr<at::ScalarType> FileScalarType(const TensorInfo& info) {
  switch (info.dtype) {
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", info.name, "\" has dtype ",
                                                     DTypeName(info.dtype),
                                                     "; weights must be F32, F16 or BF16"));
  }
}

// Bytes of an open file.
struct ByteRange {
  int fd = -1;
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

// Where a loader's file bytes can go instead of a copy: each Enqueue's ranges,
// concatenated, land at `dst` (memory of the loader's device) by the time
// Finish returns. Implementations: runtime.cc's staged GPU upload.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual absl::Status Enqueue(void* dst, std::vector<ByteRange> ranges) = 0;
  virtual absl::Status Finish() = 0;
};

// One tensor of the checkpoint, or a slice of it along `dim`.
struct TensorPart {
  std::string name;
  int dim = 0;
  int64_t start = 0;
  int64_t length = -1;  // -1: all of it
};

class TensorLoader {
 public:
  // Loaded tensors are complete once Finish returns (at once without `sink`).
  TensorLoader(const Checkpoint& checkpoint, const at::Device& device, at::ScalarType dtype,
               ByteSink* sink = nullptr)
      : checkpoint_(checkpoint), device_(device), dtype_(dtype), sink_(sink) {}

  // Copies the parts, concatenated along dim 0, into one new tensor.
  absl::StatusOr<at::Tensor> Load(const std::vector<TensorPart>& parts) {
    struct Mapped {
      at::Tensor view;   // the part, a view of the mapped bytes
      ByteRange range;   // its bytes in the file, when they are contiguous
    };
    std::vector<Mapped> mapped;
    int64_t rows = 0;
    for (const TensorPart& part : parts) {
      const auto* entry = checkpoint_.Find(part.name);
      auto file_type = FileScalarType(*entry->info);
      if (!file_type.ok()) return file_type.status();
      // A view of the mapped bytes: copy_ moves it to the device and converts
      // its dtype without an intermediate host tensor (only the slice's pages are read).
      const char* base = static_cast<const char*>(entry->file->Data(*entry->info));
      at::Tensor view = at::from_blob(const_cast<char*>(base), entry->info->shape, at::TensorOptions().dtype(*file_type));
      if (part.length >= 0) view = view.narrow(part.dim, part.start, part.length);
      // A contiguous view (a whole tensor, a dim-0 slice, or a slice that
      // covers its dimension) is one run of the file's bytes; others are copied.
      ByteRange range;
      if (view.is_contiguous()) {
        range = {entry->file->fd(),
                 entry->file->FileOffset(*entry->info) + static_cast<uint64_t>(static_cast<const char*>(view.data_ptr()) - base),
                 static_cast<uint64_t>(view.numel()) * view.element_size()};
      }
      rows += view.dim() == 0 ? 1 : view.size(0);
      mapped.push_back({view, range});
    }
    std::vector<int64_t> shape = mapped[0].view.sizes().vec();
    if (!shape.empty()) shape[0] = rows;
    at::Tensor out = at::empty(shape, at::TensorOptions().device(device_).dtype(dtype_));
    int64_t row = 0;
    for (const Mapped& part : mapped) {
      const int64_t n = part.view.dim() == 0 ? 1 : part.view.size(0);
      at::Tensor target = shape.empty() ? out : out.narrow(0, row, n);
      if (sink_ != nullptr && part.range.fd >= 0 && part.view.scalar_type() == dtype_ && part.range.bytes > 0) {
        if (absl::Status s = sink_->Enqueue(target.data_ptr(), {part.range}); !s.ok()) {
          (void)sink_->Finish();  // nothing may still write `out` once it goes
          return s;
        }
        sink_bytes_ += part.range.bytes;
      } else {
        target.copy_(part.view);
      }
      row += n;
    }
    bytes_ += static_cast<uint64_t>(out.numel()) * out.element_size();
    return out;
  }

  // Waits for what went through the sink: loaded tensors may be used after.
  absl::Status Finish() { return sink_ != nullptr ? sink_->Finish() : absl::OkStatus(); }

  absl::StatusOr<at::Tensor> LoadOptional(bool present, const std::vector<TensorPart>& parts) {
    if (!present) return at::Tensor();
    return Load(parts);
  }

  void Count(const at::Tensor& t) { bytes_ += static_cast<uint64_t>(t.numel()) * t.element_size(); }
  uint64_t bytes() const { return bytes_; }
  uint64_t sink_bytes() const { return sink_bytes_; }  // of bytes(), those that went through the sink

 private:
  const Checkpoint& checkpoint_;
  at::Device device_;
  at::ScalarType dtype_;
  ByteSink* sink_;
  uint64_t bytes_ = 0;
  uint64_t sink_bytes_ = 0;
};

// The first dozen names, then how many more (for error messages).
inline std::string ListNames(const std::vector<std::string>& names) {
  constexpr size_t kShown = 12;
  std::vector<std::string> shown(names.begin(), names.begin() + std::min(names.size(), kShown));
  std::string text = absl::StrJoin(shown, ", ");
  if (names.size() > kShown) absl::StrAppend(&text, ", and ", names.size() - kShown, " more");
  return text;
}

// Tensor name -> the shape the config asks for.
using ShapeMap = std::map<std::string, std::vector<int64_t>>;

// Checks a checkpoint against the tensors a config expects: one error
// listing every missing tensor, every unexpected one (unless `ignorable`)
// and every wrong shape, naming the folder and `architecture`.
inline absl::Status CheckTensorShapes(const Checkpoint& checkpoint, const ShapeMap& expected,
                                      const std::function<bool(const std::string&)>& ignorable,
                                      absl::string_view architecture) {
  std::vector<std::string> missing, unexpected, wrong_shape;
  for (const auto& [name, shape] : expected) {
    const auto* entry = checkpoint.Find(name);
    if (entry == nullptr) {
      missing.push_back(name);
    } else if (entry->info->shape != shape) {
      wrong_shape.push_back(absl::StrCat(name, " is [", absl::StrJoin(entry->info->shape, ", "),
                                         "], config needs [", absl::StrJoin(shape, ", "), "]"));
    }
  }
  for (const auto& name : checkpoint.Names()) {
    if (!expected.count(name) && !ignorable(name)) unexpected.push_back(name);
  }
  if (missing.empty() && unexpected.empty() && wrong_shape.empty()) return absl::OkStatus();
  std::vector<std::string> problems;
  if (!missing.empty()) problems.push_back(absl::StrCat("missing tensors: ", ListNames(missing)));
  if (!unexpected.empty()) problems.push_back(absl::StrCat("unexpected tensors: ", ListNames(unexpected)));
  if (!wrong_shape.empty()) problems.push_back(absl::StrCat("wrong shapes: ", ListNames(wrong_shape)));
  return absl::InvalidArgumentError(
      absl::StrCat(checkpoint.model_dir(), " (", architecture, "): ", absl::StrJoin(problems, "; ")));
}

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_TENSOR_LOADER_H_
