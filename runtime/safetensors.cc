#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace gantry::runtime {
namespace {

struct DTypeEntry {
  DType dtype;
  absl::string_view name;
  int64_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kF64, "F64", 8},         {DType::kF32, "F32", 4},
    {DType::kF16, "F16", 2},         {DType::kBF16, "BF16", 2},
    {DType::kI64, "I64", 8},         {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},         {DType::kI8, "I8", 1},
    {DType::kU8, "U8", 1},           {DType::kBool, "BOOL", 1},
    {DType::kF8E4M3, "F8_E4M3", 1},  {DType::kF8E5M2, "F8_E5M2", 1},
};

// The reference implementation refuses headers over 100 MB; so do we, before
// allocating anything for a corrupt length.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Status ReadExactly(int fd, void* buffer, size_t size, uint64_t offset,
                         const std::string& path) {
  auto* out = static_cast<char*>(buffer);
  size_t done = 0;
  while (done < size) {
    ssize_t n = pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::DataLossError(absl::StrCat(path, ": read failed at byte ", offset + done,
                                              ": ", n < 0 ? strerror(errno) : "end of file"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

struct OpenedHeader {
  SafetensorsHeader header;
  uint64_t file_size = 0;
  uint64_t header_bytes = 0;
};

absl::StatusOr<OpenedHeader> ReadHeaderFromFd(int fd, const std::string& path) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    return absl::InternalError(absl::StrCat(path, ": fstat failed: ", strerror(errno)));
  }
  OpenedHeader opened;
  opened.file_size = static_cast<uint64_t>(st.st_size);
  if (opened.file_size < 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": truncated safetensors file: ", opened.file_size,
        " bytes, fewer than the 8-byte header length"));
  }
  uint8_t length_bytes[8];
  if (auto s = ReadExactly(fd, length_bytes, 8, 0, path); !s.ok()) return s;
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | length_bytes[i];
  if (header_bytes > opened.file_size - 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": header length ", header_bytes, " runs past the end of the file (",
        opened.file_size - 8, " bytes follow the length field)"));
  }
  if (header_bytes > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_bytes,
                                                   " exceeds the limit of ", kMaxHeaderBytes));
  }
  std::string json(header_bytes, '\0');
  if (auto s = ReadExactly(fd, json.data(), header_bytes, 8, path); !s.ok()) return s;
  opened.header_bytes = header_bytes;
  auto header = ParseSafetensorsHeader(json, opened.file_size - 8 - header_bytes, path);
  if (!header.ok()) return header.status();
  opened.header = *std::move(header);
  return opened;
}

absl::StatusOr<std::pair<std::unique_ptr<FileDescriptor>, std::string>> OpenFile(
    const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string message = absl::StrCat(path, ": cannot open: ", strerror(err));
    if (err == ENOENT) return absl::NotFoundError(message);
    return absl::PermissionDeniedError(message);
  }
  return std::make_pair(std::make_unique<FileDescriptor>(fd), path);
}

}  // namespace

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (const auto& entry : kDTypes) {
    if (entry.name == name) return entry.dtype;
  }
  std::vector<absl::string_view> known;
  for (const auto& entry : kDTypes) known.push_back(entry.name);
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype \"", name,
                                                 "\"; known: ", absl::StrJoin(known, ", ")));
}

absl::string_view DTypeName(DType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry.name;
  }
  return "?";
}

std::string SafetensorsFileHead(absl::string_view header_json) {
  std::string head(8, '\0');
  const uint64_t length = header_json.size();
  for (int i = 0; i < 8; ++i) head[i] = static_cast<char>((length >> (8 * i)) & 0xFF);
  head.append(header_json.data(), header_json.size());
  return head;
}

int64_t DTypeSize(DType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry.size;
  }
  return 0;
}

int64_t TensorInfo::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view json,
                                                         uint64_t data_size,
                                                         absl::string_view source) {
  nlohmann::json root = nlohmann::json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": safetensors header is not well-formed JSON"));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": safetensors header is not a JSON object"));
  }
  SafetensorsHeader header;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": __metadata__ is not an object"));
      }
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat(source, ": __metadata__ value for \"", mkey, "\" is not a string"));
        }
        header.metadata[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    const std::string& name = key;  // lambdas cannot capture structured bindings before C++20 (clang)
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": tensor \"", name, "\": ", what));
    };
    if (!value.is_object()) return bad("entry is not an object");
    TensorInfo info;
    info.name = key;
    auto dtype_it = value.find("dtype");
    if (dtype_it == value.end() || !dtype_it->is_string()) return bad("missing string \"dtype\"");
    auto dtype = ParseDType(dtype_it->get<std::string>());
    if (!dtype.ok()) return bad(dtype.status().message());
    info.dtype = *dtype;

    auto shape_it = value.find("shape");
    if (shape_it == value.end() || !shape_it->is_array()) return bad("missing array \"shape\"");
    uint64_t elements = 1;
    for (const auto& dim : *shape_it) {
      if (!dim.is_number_unsigned()) return bad("shape holds a value that is not a non-negative integer");
      uint64_t d = dim.get<uint64_t>();
      if (d != 0 && elements > std::numeric_limits<uint64_t>::max() / 16 / d) {
        return bad("shape is too large");
      }
      elements *= d;
      info.shape.push_back(static_cast<int64_t>(d));
    }
    auto offsets_it = value.find("data_offsets");
    if (offsets_it == value.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
      return bad("\"data_offsets\" must be two non-negative integers");
    }
    info.begin = (*offsets_it)[0].get<uint64_t>();
    info.end = (*offsets_it)[1].get<uint64_t>();
    if (info.begin > info.end) {
      return bad(absl::StrCat("data_offsets [", info.begin, ", ", info.end, "] end before they begin"));
    }
    if (info.end > data_size) {
      return bad(absl::StrCat("data_offsets [", info.begin, ", ", info.end,
                              "] run past the data section of ", data_size, " bytes"));
    }
    uint64_t expected = elements * static_cast<uint64_t>(DTypeSize(info.dtype));
    if (info.NumBytes() != expected) {
      return bad(absl::StrCat("holds ", info.NumBytes(), " bytes but dtype ",
                              DTypeName(info.dtype), " and shape [",
                              absl::StrJoin(info.shape, ", "), "] need ", expected));
    }
    header.tensors.push_back(std::move(info));
  }
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  for (size_t i = 1; i < header.tensors.size(); ++i) {
    const TensorInfo& prev = header.tensors[i - 1];
    const TensorInfo& cur = header.tensors[i];
    // Zero-sized tensors own no bytes and cannot overlap anything.
    if (cur.NumBytes() == 0 || prev.NumBytes() == 0) continue;
    if (cur.begin < prev.end) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": tensors \"", prev.name, "\" [", prev.begin, ", ", prev.end, ") and \"",
          cur.name, "\" [", cur.begin, ", ", cur.end, ") overlap"));
    }
  }
  return header;
}

absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const std::string& path) {
  auto file = OpenFile(path);
  if (!file.ok()) return file.status();
  auto opened = ReadHeaderFromFd(file->first->get(), path);
  if (!opened.ok()) return opened.status();
  return std::move(opened->header);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto file = OpenFile(path);
  if (!file.ok()) return file.status();
  int fd = file->first->get();
  auto opened = ReadHeaderFromFd(fd, path);
  if (!opened.ok()) return opened.status();

  std::unique_ptr<SafetensorsFile> result(new SafetensorsFile());
  result->path_ = path;
  result->header_ = std::move(opened->header);
  for (size_t i = 0; i < result->header_.tensors.size(); ++i) {
    result->index_.emplace(result->header_.tensors[i].name, i);
  }
  result->mapping_size_ = static_cast<size_t>(opened->file_size);
  void* mapping = mmap(nullptr, result->mapping_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (mapping == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat(path, ": mmap of ", result->mapping_size_, " bytes failed: ", strerror(errno)));
  }
  result->mapping_ = mapping;
  result->data_offset_ = 8 + opened->header_bytes;
  result->data_ = static_cast<const uint8_t*>(mapping) + result->data_offset_;
  result->fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (result->fd_ < 0) {
    return absl::ResourceExhaustedError(absl::StrCat(path, ": cannot keep the file open: ", strerror(errno)));
  }
  return result;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_size_);
  if (fd_ >= 0) close(fd_);
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

const void* SafetensorsFile::Data(const TensorInfo& tensor) const { return data_ + tensor.begin; }

}  // namespace gantry::runtime
