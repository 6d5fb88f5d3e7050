// StagedUploader (runtime/cuda/staged_upload.h): ranges of temporary files of
// random bytes, uploaded and compared byte for byte, with guard bytes around
// every destination. The host target runs the whole pipeline (splitting,
// packing, threads, errors) without a GPU; the device target repeats the
// checks through pinned buffers and cudaMemcpyAsync where a GPU is.
#include "runtime/cuda/staged_upload.h"

#include <cuda_runtime.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "tests/cuda/kernel_test_util.h"

namespace gantry::cuda {
namespace {

using ::gantry::cuda::testing::DeviceBuffer;
using ::gantry::cuda::testing::Download;
using ::gantry::cuda::testing::Mix;

constexpr size_t kGuard = 64;      // bytes before and after each destination that must stay untouched
constexpr uint8_t kPoison = 0xFF;  // what the guards hold (DeviceBuffer::Poison's byte)

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> bytes(n);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = Mix(seed * 0x9E3779B97F4A7C15ull + i);
    std::memcpy(&bytes[i], &v, std::min<size_t>(8, n - i));
  }
  return bytes;
}

// A temporary file (mkstemp) of random bytes, open read-write; removed on
// destruction.
class TempFile {
 public:
  TempFile(size_t size, uint64_t seed) : bytes_(RandomBytes(size, seed)) {
    std::string path = ::testing::TempDir() + "staged_upload_XXXXXX";
    fd_ = mkstemp(path.data());
    path_ = path;
    if (fd_ < 0) {
      ADD_FAILURE() << "mkstemp " << path << ": " << std::strerror(errno);
      return;
    }
    size_t done = 0;
    while (done < bytes_.size()) {
      const ssize_t n = write(fd_, bytes_.data() + done, bytes_.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ADD_FAILURE() << "writing " << path_ << ": " << std::strerror(errno);
        return;
      }
      done += static_cast<size_t>(n);
    }
  }
  ~TempFile() {
    if (fd_ >= 0) close(fd_);
    unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  int fd() const { return fd_; }
  size_t size() const { return bytes_.size(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
  int fd_ = -1;
  std::string path_;
};

class Files {
 public:
  const TempFile& Add(size_t size, uint64_t seed) {
    files_.push_back(std::make_unique<TempFile>(size, seed));
    by_fd_[files_.back()->fd()] = files_.back().get();
    return *files_.back();
  }
  const TempFile& operator[](size_t i) const { return *files_[i]; }
  size_t count() const { return files_.size(); }
  const TempFile& ByFd(int fd) const { return *by_fd_.at(fd); }

 private:
  std::vector<std::unique_ptr<TempFile>> files_;
  std::map<int, const TempFile*> by_fd_;
};

// One destination: its ranges, concatenated.
struct Upload {
  std::vector<FileRange> ranges;
  int stream = 0;  // device target: which of the test's two streams
};

uint64_t TotalBytes(const Upload& upload) {
  uint64_t total = 0;
  for (const FileRange& range : upload.ranges) total += range.bytes;
  return total;
}

// The destination as it must be afterwards: guard, the ranges' bytes, guard.
std::vector<uint8_t> Expected(const Upload& upload, const Files& files) {
  std::vector<uint8_t> bytes(kGuard, kPoison);
  for (const FileRange& range : upload.ranges) {
    if (range.bytes == 0) continue;
    const std::vector<uint8_t>& file = files.ByFd(range.fd).bytes();
    bytes.insert(bytes.end(), file.begin() + range.offset, file.begin() + range.offset + range.bytes);
  }
  bytes.insert(bytes.end(), kGuard, kPoison);
  return bytes;
}

std::string Difference(const std::vector<uint8_t>& actual, const std::vector<uint8_t>& expected) {
  if (actual.size() != expected.size()) {
    return "size " + std::to_string(actual.size()) + " != " + std::to_string(expected.size());
  }
  for (size_t i = 0; i < actual.size(); ++i) {
    if (actual[i] != expected[i]) {
      const bool guard = i < kGuard || i >= actual.size() - kGuard;
      return "first difference at byte " + std::to_string(i) + (guard ? " (a guard byte)" : "") + ": " +
             std::to_string(actual[i]) + " != " + std::to_string(expected[i]);
    }
  }
  return "";
}

// Two CUDA streams, so uploads alternate between streams (device target).
class Streams {
 public:
  Streams() {
    for (cudaStream_t& stream : streams_) EXPECT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  }
  ~Streams() {
    for (cudaStream_t stream : streams_) {
      if (stream != nullptr) cudaStreamDestroy(stream);
    }
  }
  Stream operator[](int i) const { return streams_[i % 2]; }

 private:
  cudaStream_t streams_[2] = {nullptr, nullptr};
};

// Uploads every entry of the plan into its own guarded destination (host or
// device memory, as options.target says), then checks each byte for byte.
void CheckPlan(const UploadOptions& options, const std::vector<Upload>& plan, const Files& files,
               const std::string& what) {
  const bool device = options.target == UploadTarget::kDevice;
  absl::StatusOr<std::unique_ptr<StagedUploader>> uploader = StagedUploader::Create(options);
  ASSERT_TRUE(uploader.ok()) << what << ": " << uploader.status();
  std::unique_ptr<Streams> streams = device ? std::make_unique<Streams>() : nullptr;
  std::vector<std::vector<uint8_t>> host(plan.size());
  std::vector<DeviceBuffer> on_device(plan.size());
  uint64_t total = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    const size_t bytes = TotalBytes(plan[i]) + 2 * kGuard;
    char* base = nullptr;
    if (device) {
      on_device[i] = DeviceBuffer(bytes);
      on_device[i].Poison();
      base = on_device[i].as<char>();
    } else {
      host[i].assign(bytes, kPoison);
      base = reinterpret_cast<char*>(host[i].data());
    }
    const absl::Status status =
        (*uploader)->Enqueue(base + kGuard, plan[i].ranges, device ? (*streams)[plan[i].stream] : nullptr);
    ASSERT_TRUE(status.ok()) << what << ": upload " << i << ": " << status;
    total += TotalBytes(plan[i]);
  }
  const absl::Status finished = (*uploader)->Finish();
  ASSERT_TRUE(finished.ok()) << what << ": " << finished;
  EXPECT_EQ((*uploader)->bytes_uploaded(), total) << what;
  for (size_t i = 0; i < plan.size(); ++i) {
    const std::vector<uint8_t> actual = device ? Download<uint8_t>(on_device[i], on_device[i].bytes()) : host[i];
    const std::string difference = Difference(actual, Expected(plan[i], files));
    EXPECT_TRUE(difference.empty()) << what << ": upload " << i << ": " << difference;
  }
}

// Every kind of range the brief names, around a 4 KiB buffer: empty, one byte,
// one byte short of / exactly / one byte over a buffer, up to three buffers and
// more, runs of 1-byte ranges (packed into one buffer), ranges of two files
// interleaved, at unaligned offsets; more ranges and destinations than buffers.
std::vector<Upload> EveryRangeShape(const Files& files, uint64_t buffer) {
  const std::vector<uint64_t> sizes = {0,          1,          2,          3,          7,          buffer - 1,
                                       buffer,     buffer + 1, 2 * buffer - 3, 2 * buffer, 3 * buffer - 1,
                                       3 * buffer, 3 * buffer + 1, 13,     100,        555,        1};
  std::vector<Upload> plan;
  int k = 0;
  auto range = [&](uint64_t bytes) {
    const TempFile& file = files[k % files.count()];
    const uint64_t offset = (static_cast<uint64_t>(k) * 4099 + 1) % (file.size() - bytes + 1);
    ++k;
    return FileRange{file.fd(), offset, bytes};
  };
  // One range a destination, then the same sizes two and three to a destination.
  for (uint64_t bytes : sizes) plan.push_back({{range(bytes)}, k});
  for (size_t group : {2, 3}) {
    for (size_t i = 0; i < sizes.size(); i += group) {
      Upload upload;
      upload.stream = k;
      for (size_t j = i; j < std::min(sizes.size(), i + group); ++j) upload.ranges.push_back(range(sizes[j]));
      plan.push_back(upload);
    }
  }
  // 1-byte ranges: adjacent in one file (one pread), alternating files,
  // repeating the same byte, and crossing a buffer boundary in the destination.
  Upload ones;
  for (uint64_t i = 0; i < 50; ++i) ones.ranges.push_back({files[0].fd(), 1001 + i, 1});
  for (uint64_t i = 0; i < 50; ++i) ones.ranges.push_back({files[i % 2].fd(), 3 + 17 * i, 1});
  for (uint64_t i = 0; i < 20; ++i) ones.ranges.push_back({files[1].fd(), 77, 1});
  plan.push_back(ones);
  Upload across;
  across.ranges.push_back({files[0].fd(), 5, buffer - 2});
  for (uint64_t i = 0; i < 5; ++i) across.ranges.push_back({files[1].fd(), 900 + 3 * i, 1});
  plan.push_back(across);
  plan.push_back(Upload{});                                    // no ranges at all
  plan.push_back({{{files[0].fd(), 0, 0}, {files[1].fd(), 9, 0}}, 1});  // only empty ranges
  return plan;
}

// A random plan over `files`: range sizes of every kind relative to `buffer`.
std::vector<Upload> RandomPlan(std::mt19937_64& rng, const Files& files, uint64_t buffer, int uploads) {
  std::vector<Upload> plan(static_cast<size_t>(uploads));
  for (Upload& upload : plan) {
    upload.stream = static_cast<int>(rng() % 2);
    const int ranges = static_cast<int>(rng() % 7);
    for (int r = 0; r < ranges; ++r) {
      const TempFile& file = files[rng() % files.count()];
      uint64_t bytes = 0;
      switch (rng() % 6) {
        case 0: bytes = rng() % 2; break;
        case 1: bytes = 2 + rng() % 63; break;
        case 2:
        case 3: {
          const int64_t near = static_cast<int64_t>(buffer * (rng() % 4)) + static_cast<int64_t>(rng() % 5) - 2;
          bytes = static_cast<uint64_t>(std::max<int64_t>(0, near));
          break;
        }
        default: bytes = rng() % (3 * buffer + 1); break;
      }
      bytes = std::min<uint64_t>(bytes, file.size());
      upload.ranges.push_back({file.fd(), rng() % (file.size() - bytes + 1), bytes});
    }
  }
  return plan;
}

UploadOptions HostOptions(size_t buffer_bytes, int buffers, int reader_threads) {
  UploadOptions options;
  options.buffer_bytes = buffer_bytes;
  options.buffers = buffers;
  options.reader_threads = reader_threads;
  options.target = UploadTarget::kHost;
  return options;
}

UploadOptions DeviceOptions(size_t buffer_bytes, int buffers, int reader_threads) {
  UploadOptions options = HostOptions(buffer_bytes, buffers, reader_threads);
  options.target = UploadTarget::kDevice;
  return options;
}

// A file descriptor number that is not open (a dup, closed again).
int ClosedFd(int open_fd) {
  const int fd = dup(open_fd);
  EXPECT_GE(fd, 0);
  close(fd);
  return fd;
}

TEST(StagedUploadTest, HostEveryRangeShape) {
  constexpr uint64_t kBuffer = 4096;
  Files files;
  files.Add(5 * kBuffer + 123, 1);
  files.Add(4 * kBuffer + 77, 2);
  const std::vector<Upload> plan = EveryRangeShape(files, kBuffer);
  for (int buffers : {1, 2, 3, 8}) {
    for (int readers : {1, 2, 4}) {
      CheckPlan(HostOptions(kBuffer, buffers, readers), plan, files,
                "buffers=" + std::to_string(buffers) + " readers=" + std::to_string(readers));
    }
  }
}

TEST(StagedUploadTest, HostRandomPlans) {
  for (uint64_t seed = 0; seed < 40; ++seed) {
    std::mt19937_64 rng(seed);
    const uint64_t buffer = std::vector<uint64_t>{1, 3, 64, 1000, 4096, 65536}[rng() % 6];
    Files files;
    for (int f = 0; f < 3; ++f) files.Add(3 * buffer + 1 + rng() % (4 * buffer + 5000), seed * 3 + f);
    const int buffers = 1 + static_cast<int>(rng() % 6), readers = 1 + static_cast<int>(rng() % 5);
    const std::vector<Upload> plan = RandomPlan(rng, files, buffer, 1 + static_cast<int>(rng() % 40));
    CheckPlan(HostOptions(buffer, buffers, readers), plan, files,
              "seed " + std::to_string(seed) + " buffer=" + std::to_string(buffer) + " buffers=" +
                  std::to_string(buffers) + " readers=" + std::to_string(readers));
  }
}

// Small ranges of one destination share buffers: as many buffers filled as
// the bytes need, one copy each; a large range is split into buffer-sized pieces.
TEST(StagedUploadTest, HostPacksSmallRangesAndSplitsLargeOnes) {
  constexpr uint64_t kBuffer = 4096;
  Files files;
  const TempFile& file = files.Add(64 * 1024 + 3, 7);
  std::mt19937_64 rng(7);
  Upload small;
  uint64_t total = 0;
  for (int i = 0; i < 2000; ++i) {
    const uint64_t bytes = 1 + rng() % 7;
    small.ranges.push_back({file.fd(), rng() % (file.size() - bytes + 1), bytes});
    total += bytes;
  }
  {
    auto uploader = StagedUploader::Create(HostOptions(kBuffer, 2, 2));
    ASSERT_TRUE(uploader.ok()) << uploader.status();
    std::vector<uint8_t> dst(total + 2 * kGuard, kPoison);
    ASSERT_TRUE((*uploader)->Enqueue(dst.data() + kGuard, small.ranges, nullptr).ok());
    ASSERT_TRUE((*uploader)->Finish().ok());
    EXPECT_EQ(Difference(dst, Expected(small, files)), "");
    const UploadStats stats = (*uploader)->stats();
    EXPECT_EQ(stats.bytes, total);
    EXPECT_EQ(stats.pieces, (total + kBuffer - 1) / kBuffer) << "small ranges were not packed";
    EXPECT_EQ(stats.copies, stats.pieces) << "a contiguous destination takes one copy a buffer";
    EXPECT_GE(stats.seconds, 0.0);
  }
  {
    auto uploader = StagedUploader::Create(HostOptions(kBuffer, 3, 2));
    ASSERT_TRUE(uploader.ok()) << uploader.status();
    const Upload large{{{file.fd(), 11, 3 * kBuffer + 5}}, 0};
    std::vector<uint8_t> dst(TotalBytes(large) + 2 * kGuard, kPoison);
    ASSERT_TRUE((*uploader)->Enqueue(dst.data() + kGuard, large.ranges, nullptr).ok());
    ASSERT_TRUE((*uploader)->Finish().ok());
    EXPECT_EQ(Difference(dst, Expected(large, files)), "");
    EXPECT_EQ((*uploader)->stats().pieces, 4u);
  }
}

// Two uploads whose destinations touch are two copies: they may be two
// allocations (two tensors the allocator placed end to end), and one device
// copy across two allocations fails with cudaErrorInvalidValue. The case
// that matters is both uploads packed into one buffer (one pread), where the
// old code merged them into one copy. Packing depends on timing (a reader may
// take the first piece before the second Enqueue; CI's 2-core machine saw
// that once), so the pair is sent again until it packs, which must happen;
// every round checks one copy per upload and the bytes.
TEST(StagedUploadTest, HostUploadsNeverShareACopy) {
  constexpr uint64_t kBuffer = 4096;
  Files files;
  const TempFile& file = files.Add(3000, 9);
  const Upload first{{{file.fd(), 0, 1000}}, 0}, second{{{file.fd(), 1000, 1000}}, 0};
  const Upload both{{{file.fd(), 0, 2000}}, 0};
  bool packed = false;
  for (int round = 0; round < 50 && !packed; ++round) {
    auto uploader = StagedUploader::Create(HostOptions(kBuffer, 2, 2));
    ASSERT_TRUE(uploader.ok()) << uploader.status();
    std::vector<uint8_t> dst(2000 + 2 * kGuard, kPoison);
    ASSERT_TRUE((*uploader)->Enqueue(dst.data() + kGuard, first.ranges, nullptr).ok());
    ASSERT_TRUE((*uploader)->Enqueue(dst.data() + kGuard + 1000, second.ranges, nullptr).ok());
    ASSERT_TRUE((*uploader)->Finish().ok());
    const UploadStats stats = (*uploader)->stats();
    EXPECT_EQ(stats.copies, 2u) << "one copy per upload (round " << round << ", " << stats.pieces << " pieces)";
    EXPECT_EQ(Difference(dst, Expected(both, files)), "") << "round " << round;
    packed = stats.pieces == 1;
  }
  EXPECT_TRUE(packed) << "in 50 rounds the two uploads never shared a buffer (and one pread)";
}

TEST(StagedUploadTest, HostUploaderIsReusableAfterFinish) {
  Files files;
  const TempFile& file = files.Add(100000, 3);
  auto uploader = StagedUploader::Create(HostOptions(1000, 2, 2));
  ASSERT_TRUE(uploader.ok()) << uploader.status();
  for (int round = 0; round < 3; ++round) {
    const Upload upload{{{file.fd(), 17u + 1000u * round, 12345}}, 0};
    std::vector<uint8_t> dst(TotalBytes(upload) + 2 * kGuard, kPoison);
    ASSERT_TRUE((*uploader)->Enqueue(dst.data() + kGuard, upload.ranges, nullptr).ok());
    ASSERT_TRUE((*uploader)->Finish().ok());
    EXPECT_EQ(Difference(dst, Expected(upload, files)), "") << "round " << round;
    EXPECT_EQ((*uploader)->bytes_uploaded(), 12345u * (round + 1));
  }
  EXPECT_TRUE((*uploader)->Finish().ok());  // nothing queued
}

// The destructor waits for what is queued, Finish or not.
TEST(StagedUploadTest, HostDestructorCompletesQueuedUploads) {
  Files files;
  const TempFile& file = files.Add(300000, 4);
  const Upload upload{{{file.fd(), 3, 250000}, {file.fd(), 0, 1}}, 0};
  std::vector<uint8_t> dst(TotalBytes(upload) + 2 * kGuard, kPoison);
  {
    auto uploader = StagedUploader::Create(HostOptions(4096, 2, 3));
    ASSERT_TRUE(uploader.ok()) << uploader.status();
    ASSERT_TRUE((*uploader)->Enqueue(dst.data() + kGuard, upload.ranges, nullptr).ok());
  }
  EXPECT_EQ(Difference(dst, Expected(upload, files)), "");
}

TEST(StagedUploadTest, CreateRejectsBadOptions) {
  EXPECT_EQ(StagedUploader::Create(HostOptions(0, 1, 1)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StagedUploader::Create(HostOptions(16, 0, 1)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StagedUploader::Create(HostOptions(16, 1, 0)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StagedUploadTest, EnqueueRejectsBadArguments) {
  Files files;
  const TempFile& file = files.Add(1000, 5);
  auto uploader = StagedUploader::Create(HostOptions(256, 2, 1));
  ASSERT_TRUE(uploader.ok()) << uploader.status();
  std::vector<uint8_t> dst(1000);
  absl::Status status = (*uploader)->Enqueue(dst.data(), {{file.fd(), 0, 10}, {-1, 0, 10}}, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("range 1"), std::string::npos) << status;
  status = (*uploader)->Enqueue(nullptr, {{file.fd(), 0, 10}}, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  status = (*uploader)->Enqueue(dst.data(), {{file.fd(), ~uint64_t{0} - 5, 10}}, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  // Refused arguments queue nothing and leave the uploader usable.
  EXPECT_TRUE((*uploader)->Enqueue(nullptr, {{-1, 0, 0}}, nullptr).ok()) << "empty ranges need no fd or dst";
  EXPECT_TRUE((*uploader)->Finish().ok());
  EXPECT_EQ((*uploader)->bytes_uploaded(), 0u);
}

// Copies are issued in queue order: uploads that overwrite each other's
// destination bytes (one stream for the device target) leave what the last
// one wrote, as if run one after another.
void CheckQueueOrder(const UploadOptions& options) {
  const bool device = options.target == UploadTarget::kDevice;
  constexpr size_t kDst = 10000;
  Files files;
  const TempFile& file = files.Add(50000, 9);
  std::mt19937_64 rng(9);
  std::vector<uint8_t> expected(kDst, kPoison);
  DeviceBuffer on_device;
  std::vector<uint8_t> on_host;
  char* dst = nullptr;
  if (device) {
    on_device = DeviceBuffer(kDst);
    on_device.Poison();
    dst = on_device.as<char>();
  } else {
    on_host.assign(kDst, kPoison);
    dst = reinterpret_cast<char*>(on_host.data());
  }
  std::unique_ptr<Streams> streams = device ? std::make_unique<Streams>() : nullptr;
  auto uploader = StagedUploader::Create(options);
  ASSERT_TRUE(uploader.ok()) << uploader.status();
  for (int i = 0; i < 300; ++i) {
    const uint64_t at = rng() % kDst, bytes = 1 + rng() % (kDst - at), offset = rng() % (file.size() - bytes);
    ASSERT_TRUE((*uploader)->Enqueue(dst + at, {{file.fd(), offset, bytes}}, device ? (*streams)[0] : nullptr).ok());
    std::memcpy(expected.data() + at, file.bytes().data() + offset, bytes);
  }
  ASSERT_TRUE((*uploader)->Finish().ok());
  const std::vector<uint8_t> actual = device ? Download<uint8_t>(on_device, kDst) : on_host;
  EXPECT_EQ(Difference(actual, expected), "");
}

TEST(StagedUploadTest, HostCopiesRunInQueueOrder) {
  for (int buffers : {2, 8}) CheckQueueOrder(HostOptions(1000, buffers, 4));
}

// A range past the end of its file: Finish names the fd and the offset, and
// keeps returning the error, as Enqueue does from then on.
void CheckPastEndOfFile(const UploadOptions& options) {
  Files files;
  const TempFile& file = files.Add(10000, 6);
  auto uploader = StagedUploader::Create(options);
  ASSERT_TRUE(uploader.ok()) << uploader.status();
  const bool device = options.target == UploadTarget::kDevice;
  DeviceBuffer on_device;  // no CUDA call at all for the host target
  if (device) on_device = DeviceBuffer(4000);
  std::vector<uint8_t> on_host(device ? 0 : 4000);
  char* dst = device ? on_device.as<char>() : reinterpret_cast<char*>(on_host.data());
  ASSERT_TRUE((*uploader)->Enqueue(dst, {{file.fd(), 0, 1000}}, nullptr).ok());
  ASSERT_TRUE((*uploader)->Enqueue(dst + 1000, {{file.fd(), 9000, 2000}}, nullptr).ok());
  const absl::Status status = (*uploader)->Finish();
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << status;
  const std::string fd = "fd " + std::to_string(file.fd());
  EXPECT_NE(status.message().find(fd), std::string::npos) << status;
  EXPECT_NE(status.message().find("offset 9000"), std::string::npos) << status;
  EXPECT_NE(status.message().find("ends at offset 10000"), std::string::npos) << status;
  EXPECT_EQ((*uploader)->Enqueue(dst, {{file.fd(), 0, 10}}, nullptr), status);
  EXPECT_EQ((*uploader)->Finish(), status);
}

TEST(StagedUploadTest, HostRangePastEndOfFileFails) { CheckPastEndOfFile(HostOptions(4096, 2, 2)); }

TEST(StagedUploadTest, HostClosedFdFails) {
  Files files;
  const TempFile& file = files.Add(5000, 8);
  const int closed = ClosedFd(file.fd());
  auto uploader = StagedUploader::Create(HostOptions(4096, 2, 2));
  ASSERT_TRUE(uploader.ok()) << uploader.status();
  std::vector<uint8_t> dst(200);
  ASSERT_TRUE((*uploader)->Enqueue(dst.data(), {{file.fd(), 0, 100}, {closed, 50, 100}}, nullptr).ok());
  const absl::Status status = (*uploader)->Finish();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("pread of fd " + std::to_string(closed) + " at offset 50"), std::string::npos)
      << status;
}

// An error anywhere in a long queue stops the pipeline: Finish returns it,
// or the uploader is destroyed without Finish; neither hangs.
TEST(StagedUploadTest, HostErrorStopsThePipeline) {
  for (uint64_t seed = 0; seed < 40; ++seed) {
    std::mt19937_64 rng(seed + 100);
    const uint64_t buffer = std::vector<uint64_t>{7, 512, 4096}[rng() % 3];
    Files files;
    for (int f = 0; f < 2; ++f) files.Add(3 * buffer + 1 + rng() % (4 * buffer), seed * 2 + f + 1000);
    std::vector<Upload> plan = RandomPlan(rng, files, buffer, 30);
    const TempFile& file = files[rng() % 2];
    const bool past_end = rng() % 2 == 0;
    const FileRange bad = past_end ? FileRange{file.fd(), file.size() - 3, 4 + rng() % (2 * buffer)}
                                   : FileRange{ClosedFd(file.fd()), 0, 1 + rng() % (2 * buffer)};
    plan[rng() % plan.size()].ranges.push_back(bad);
    auto uploader = StagedUploader::Create(HostOptions(buffer, 1 + static_cast<int>(rng() % 4),
                                                       1 + static_cast<int>(rng() % 4)));
    ASSERT_TRUE(uploader.ok()) << uploader.status();
    std::vector<std::vector<uint8_t>> dst(plan.size());
    for (size_t i = 0; i < plan.size(); ++i) {
      dst[i].resize(TotalBytes(plan[i]));
      // After the error, Enqueue returns it instead of queueing.
      (*uploader)->Enqueue(dst[i].data(), plan[i].ranges, nullptr).IgnoreError();
    }
    if (seed % 2 == 0) {
      const absl::Status status = (*uploader)->Finish();
      EXPECT_FALSE(status.ok()) << "seed " << seed;
      EXPECT_NE(status.message().find("fd " + std::to_string(bad.fd)), std::string::npos)
          << "seed " << seed << ": " << status;
      if (past_end) {
        EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << status;
      }
    }
    uploader->reset();  // with or without Finish: must return
  }
}

// --- Device target (GPU only) ---

TEST(StagedUploadTest, DeviceEveryRangeShape) {
  GANTRY_REQUIRE_GPU();
  constexpr uint64_t kBuffer = 4096;
  Files files;
  files.Add(5 * kBuffer + 123, 1);
  files.Add(4 * kBuffer + 77, 2);
  const std::vector<Upload> plan = EveryRangeShape(files, kBuffer);
  for (int buffers : {1, 3, 8}) {
    CheckPlan(DeviceOptions(kBuffer, buffers, 2), plan, files, "buffers=" + std::to_string(buffers));
  }
}

TEST(StagedUploadTest, DeviceRandomPlans) {
  GANTRY_REQUIRE_GPU();
  for (uint64_t seed = 0; seed < 12; ++seed) {
    std::mt19937_64 rng(seed + 50);
    const uint64_t buffer = std::vector<uint64_t>{1, 64, 4096, 1 << 20}[rng() % 4];
    Files files;
    for (int f = 0; f < 3; ++f) files.Add(3 * buffer + 1 + rng() % (4 * buffer + 5000), seed * 3 + f + 500);
    const int buffers = 1 + static_cast<int>(rng() % 6), readers = 1 + static_cast<int>(rng() % 5);
    const std::vector<Upload> plan = RandomPlan(rng, files, buffer, 1 + static_cast<int>(rng() % 30));
    CheckPlan(DeviceOptions(buffer, buffers, readers), plan, files,
              "seed " + std::to_string(seed) + " buffer=" + std::to_string(buffer) + " buffers=" +
                  std::to_string(buffers) + " readers=" + std::to_string(readers));
  }
}

TEST(StagedUploadTest, DeviceCopiesRunInQueueOrder) {
  GANTRY_REQUIRE_GPU();
  for (int buffers : {2, 8}) CheckQueueOrder(DeviceOptions(1000, buffers, 4));
}

TEST(StagedUploadTest, DeviceRangePastEndOfFileFails) {
  GANTRY_REQUIRE_GPU();
  CheckPastEndOfFile(DeviceOptions(4096, 2, 2));
}

// GB/s of a 1 GiB file in tensor-sized ranges (mostly large, some small), each
// its own destination in one device allocation: first after dropping the
// file from the page cache, then from it, then with other options; and
// today's loader for comparison (a pageable cudaMemcpy per range from an
// mmap of the file). Printed, not asserted.
TEST(StagedUploadTest, PrintBandwidth) {
  GANTRY_REQUIRE_GPU();
  constexpr size_t kBytes = size_t{1} << 30;
  constexpr uint64_t kAlign = 256;
  Files files;
  const TempFile& file = files.Add(kBytes, 42);
  ASSERT_EQ(fsync(file.fd()), 0);
  std::mt19937_64 rng(42);
  struct Tensor {
    FileRange range;
    uint64_t dst_offset;
  };
  std::vector<Tensor> tensors;
  uint64_t dst_bytes = 0;
  for (uint64_t offset = 0; offset < kBytes;) {
    const uint64_t want = rng() % 10 < 3 ? 4096 + rng() % (60 << 10) : (1 << 20) + rng() % (96 << 20);
    const uint64_t bytes = std::min<uint64_t>(want, kBytes - offset);
    tensors.push_back({{file.fd(), offset, bytes}, dst_bytes});
    offset += bytes;
    dst_bytes += (bytes + kAlign - 1) / kAlign * kAlign;
  }
  DeviceBuffer dst(dst_bytes);
  const Streams streams;
  const Stream stream = streams[0];

  auto run = [&](const UploadOptions& options, const std::string& label, bool verify) {
    const auto start = std::chrono::steady_clock::now();
    auto uploader = StagedUploader::Create(options);
    ASSERT_TRUE(uploader.ok()) << uploader.status();
    const double create_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    for (const Tensor& t : tensors) {
      ASSERT_TRUE((*uploader)->Enqueue(dst.as<char>() + t.dst_offset, {t.range}, stream).ok());
    }
    const absl::Status status = (*uploader)->Finish();
    ASSERT_TRUE(status.ok()) << status;
    const UploadStats stats = (*uploader)->stats();
    std::printf("[ PERF ] StagedUpload 1 GiB, %zu ranges, %s, %zu MiB x %d buffers, %d readers: %.2f GB/s "
                "(%.3f s; %llu buffers filled; Create %.0f ms)\n",
                tensors.size(), label.c_str(), options.buffer_bytes >> 20, options.buffers, options.reader_threads,
                static_cast<double>(stats.bytes) / stats.seconds / 1e9, stats.seconds,
                static_cast<unsigned long long>(stats.pieces), create_ms);
    if (!verify) return;
    const std::vector<uint8_t> uploaded = Download<uint8_t>(dst, dst_bytes);
    for (const Tensor& t : tensors) {
      ASSERT_EQ(std::memcmp(uploaded.data() + t.dst_offset, file.bytes().data() + t.range.offset, t.range.bytes), 0)
          << "range at file offset " << t.range.offset;
    }
  };

  // The file's clean pages dropped from the page cache: read from disk
  // (unless the temporary directory is a tmpfs).
  const int advice = posix_fadvise(file.fd(), 0, 0, POSIX_FADV_DONTNEED);
  UploadOptions defaults;
  run(defaults, advice == 0 ? "first read (after POSIX_FADV_DONTNEED)" : "first read", /*verify=*/true);
  run(defaults, "page cache", /*verify=*/true);
  const std::vector<std::tuple<size_t, int, int>> variants = {{16, 8, 4}, {16, 16, 8}, {32, 8, 4},
                                                                {64, 8, 2},  {64, 8, 8},   {64, 16, 8}};
  for (const auto& [buffer_mib, buffers, readers] : variants) {
    UploadOptions options;
    options.buffer_bytes = buffer_mib << 20;
    options.buffers = buffers;
    options.reader_threads = readers;
    run(options, "page cache", /*verify=*/false);
  }

  // Today's loader: a synchronous pageable copy per tensor from the mapping.
  void* mapped = mmap(nullptr, kBytes, PROT_READ, MAP_SHARED, file.fd(), 0);
  ASSERT_NE(mapped, MAP_FAILED);
  const auto start = std::chrono::steady_clock::now();
  for (const Tensor& t : tensors) {
    ASSERT_EQ(cudaMemcpyAsync(dst.as<char>() + t.dst_offset, static_cast<const char*>(mapped) + t.range.offset,
                              t.range.bytes, cudaMemcpyHostToDevice, stream),
              cudaSuccess);
  }
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ PERF ] pageable cudaMemcpyAsync per range from an mmap (page cache): %.2f GB/s (%.3f s)\n",
              static_cast<double>(kBytes) / seconds / 1e9, seconds);
  munmap(mapped, kBytes);
}

}  // namespace
}  // namespace gantry::cuda
