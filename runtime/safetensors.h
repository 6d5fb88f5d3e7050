// Safetensors reader: parses and validates the header, memory-maps the file;
// and the file head for the few files Gantry writes (the warm-up model).
//
// Written here rather than taken from a library: there is no C++ safetensors
// package in Debian, and the format is one little-endian length plus a JSON
// header (parsed with nlohmann-json). Owning the parser lets every validation
// failure name the file, the tensor and the numbers involved.
#ifndef GANTRY_RUNTIME_SAFETENSORS_H_
#define GANTRY_RUNTIME_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace gantry::runtime {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool, kF8E4M3, kF8E5M2 };

absl::StatusOr<DType> ParseDType(absl::string_view name);
absl::string_view DTypeName(DType dtype);
int64_t DTypeSize(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets inside the data section, [begin, end)
  uint64_t end = 0;

  int64_t NumElements() const;
  uint64_t NumBytes() const { return end - begin; }
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
};

// Parses and validates a header's JSON against a data section of
// `data_size` bytes. `source` names the file in error messages.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view json,
                                                         uint64_t data_size,
                                                         absl::string_view source);

// The first bytes of a safetensors file holding `header_json`: its length as
// 8 little-endian bytes, then the JSON. The data section follows.
std::string SafetensorsFileHead(absl::string_view header_json);

// Reads only the header of a file (no mapping): enough to size a model before
// loading it.
absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path);

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  const TensorInfo* Find(absl::string_view name) const;
  // Start of the tensor's bytes inside the mapping; valid while this lives.
  const void* Data(const TensorInfo& tensor) const;
  // The open file (read-only, valid while this lives) and the offset of a
  // tensor's bytes in it, for readers that pread instead of touching the
  // mapping (the staged GPU upload).
  int fd() const { return fd_; }
  uint64_t FileOffset(const TensorInfo& tensor) const { return data_offset_ + tensor.begin; }

 private:
  SafetensorsFile() = default;

  std::string path_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  const uint8_t* data_ = nullptr;  // first byte of the data section
  uint64_t data_offset_ = 0;       // its offset in the file
  int fd_ = -1;
};

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_SAFETENSORS_H_
