// The pipeline behind staged_upload.h. A buffer goes free -> a reader
// (pread) -> filled_ (waiting for its turn) -> the issuing thread
// (cudaMemcpyAsync + event record; kHost: memcpy) -> in_flight_ -> free again
// once its event completed (a reader short of buffers, or Finish, waits for
// it). Readers take pieces in queue order and only with a buffer in hand, so
// the piece the issuing thread waits for always has one: the pipeline cannot
// deadlock however few buffers there are.
#include "runtime/cuda/staged_upload.h"

#include <cuda_runtime.h>
#include <errno.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"

namespace gantry::cuda {
namespace {

// One pread call reads at most this much: Linux caps a call near 2 GiB, and
// shorter calls let a reader notice another thread's error sooner.
constexpr uint64_t kMaxRead = uint64_t{256} << 20;

absl::Status CudaError(const std::string& what, cudaError_t error) {
  (void)cudaGetLastError();  // clear it so the thread's next kernel launch check reports its own
  const std::string message =
      absl::StrCat(what, " failed: ", cudaGetErrorName(error), " (", cudaGetErrorString(error), ")");
  return error == cudaErrorMemoryAllocation ? absl::ResourceExhaustedError(message) : absl::InternalError(message);
}

// Reads exactly `bytes` bytes of `fd` from `offset` into out [bytes]; stops
// early (Cancelled) once `failed` says another thread's error ended the upload.
absl::Status ReadFully(int fd, uint64_t offset, uint64_t bytes, char* out, const std::atomic<bool>& failed) {
  uint64_t done = 0;
  while (done < bytes) {
    if (failed.load(std::memory_order_relaxed)) return absl::CancelledError("the upload failed elsewhere");
    const size_t want = static_cast<size_t>(std::min(bytes - done, kMaxRead));
    const ssize_t n = pread(fd, out + done, want, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("pread of fd ", fd, " at offset ", offset + done, " (reading ",
                                                     bytes, " bytes from offset ", offset, ")"));
    }
    if (n == 0) {
      return absl::OutOfRangeError(absl::StrCat("fd ", fd, " ends at offset ", offset + done, ", ", bytes - done,
                                                " bytes short of the ", bytes, " bytes to read from offset ", offset));
    }
    done += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<StagedUploader>> StagedUploader::Create(const UploadOptions& options) {
  if (options.buffer_bytes == 0) return absl::InvalidArgumentError("StagedUploader: buffer_bytes must be > 0");
  if (options.buffers < 1) {
    return absl::InvalidArgumentError(absl::StrCat("StagedUploader: buffers must be >= 1, not ", options.buffers));
  }
  if (options.reader_threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("StagedUploader: reader_threads must be >= 1, not ", options.reader_threads));
  }
  if (options.target != UploadTarget::kDevice && options.target != UploadTarget::kHost) {
    return absl::InvalidArgumentError("StagedUploader: unknown target");
  }
  std::unique_ptr<StagedUploader> uploader(new StagedUploader(options));
  // On failure the destructor stops the threads that started and frees the buffers.
  if (absl::Status status = uploader->Start(); !status.ok()) return status;
  return uploader;
}

absl::Status StagedUploader::Start() {
  const bool device = options_.target == UploadTarget::kDevice;
  if (device) {
    if (cudaError_t error = cudaGetDevice(&device_); error != cudaSuccess) {
      return CudaError("StagedUploader: cudaGetDevice", error);
    }
  }
  buffers_.resize(static_cast<size_t>(options_.buffers));
  for (int i = 0; i < options_.buffers; ++i) {
    Buffer& buffer = buffers_[i];
    if (device) {
      void* data = nullptr;
      if (cudaError_t error = cudaHostAlloc(&data, options_.buffer_bytes, cudaHostAllocDefault);
          error != cudaSuccess) {
        return CudaError(absl::StrCat("StagedUploader: cudaHostAlloc of ", options_.buffer_bytes,
                                      " pinned bytes (buffer ", i, " of ", options_.buffers, ")"),
                         error);
      }
      buffer.data = static_cast<char*>(data);
      // Blocking sync: a reader waiting for a copy sleeps instead of spinning
      // on a core the other readers' preads need.
      cudaEvent_t event = nullptr;
      if (cudaError_t error = cudaEventCreateWithFlags(&event, cudaEventDisableTiming | cudaEventBlockingSync);
          error != cudaSuccess) {
        return CudaError("StagedUploader: cudaEventCreateWithFlags", error);
      }
      buffer.event = event;
    } else {
      buffer.data = new (std::nothrow) char[options_.buffer_bytes];
      if (buffer.data == nullptr) {
        return absl::ResourceExhaustedError(absl::StrCat("StagedUploader: allocating ", options_.buffer_bytes,
                                                         " bytes (buffer ", i, " of ", options_.buffers, ")"));
      }
    }
    free_.push_back(i);
  }
  try {
    threads_.emplace_back(&StagedUploader::IssuerLoop, this);
    for (int i = 0; i < options_.reader_threads; ++i) threads_.emplace_back(&StagedUploader::ReaderLoop, this);
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(absl::StrCat("StagedUploader: starting a thread: ", e.what()));
  }
  return absl::OkStatus();
}

StagedUploader::~StagedUploader() {
  Finish().IgnoreError();  // the caller asks Finish for the status it cares about
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shutdown_ = true;
  }
  changed_.notify_all();
  for (std::thread& thread : threads_) thread.join();
  for (Buffer& buffer : buffers_) {
    if (options_.target == UploadTarget::kDevice) {
      if (buffer.event != nullptr) cudaEventDestroy(buffer.event);
      if (buffer.data != nullptr) cudaFreeHost(buffer.data);
    } else {
      delete[] buffer.data;
    }
  }
}

absl::Status StagedUploader::Enqueue(void* dst, const std::vector<FileRange>& ranges, Stream stream) {
  constexpr uint64_t kMaxFileOffset = static_cast<uint64_t>(std::numeric_limits<off_t>::max());
  uint64_t total = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const FileRange& range = ranges[i];
    if (range.bytes == 0) continue;
    if (range.fd < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("StagedUploader::Enqueue: range ", i, " has the invalid fd ", range.fd));
    }
    if (range.offset > kMaxFileOffset || range.bytes > kMaxFileOffset - range.offset ||
        range.bytes > std::numeric_limits<uintptr_t>::max() - total) {
      return absl::InvalidArgumentError(absl::StrCat("StagedUploader::Enqueue: range ", i, " (fd ", range.fd,
                                                     ", offset ", range.offset, ", ", range.bytes,
                                                     " bytes) overflows a file offset or the destination"));
    }
    total += range.bytes;
  }
  if (total > 0 && dst == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("StagedUploader::Enqueue: dst is null with ", total, " bytes to upload"));
  }
  if (total > std::numeric_limits<uintptr_t>::max() - reinterpret_cast<uintptr_t>(dst)) {
    return absl::InvalidArgumentError(
        absl::StrCat("StagedUploader::Enqueue: ", total, " bytes from dst run past the address space"));
  }
  if (options_.target == UploadTarget::kHost) {
    stream = nullptr;  // ignored; one value lets uploads on any stream share a buffer
  } else if (stream == cudaStreamPerThread) {
    return absl::InvalidArgumentError(
        "StagedUploader::Enqueue: cudaStreamPerThread would be the issuing thread's stream; pass a stream");
  }

  std::lock_guard<std::mutex> lock(mutex_);
  if (!error_.ok()) return error_;
  if (total == 0) return absl::OkStatus();
  if (!busy_) {
    busy_ = true;
    busy_since_ = std::chrono::steady_clock::now();
  }
  char* out = static_cast<char*>(dst);
  const uint64_t call = next_call_++;
  for (const FileRange& range : ranges) {
    uint64_t done = 0;
    while (done < range.bytes) {
      // The last queued piece takes these bytes while no reader has it, it
      // has room and copies on the same stream: small tensors (norms, biases)
      // share a buffer, and a pread and an event, instead of one each.
      if (pending_.empty() || pending_.back().stream != stream ||
          pending_.back().bytes == options_.buffer_bytes) {
        Piece piece;
        piece.sequence = next_sequence_++;
        piece.stream = stream;
        pending_.push_back(std::move(piece));
      }
      Piece& piece = pending_.back();
      const uint64_t n = std::min<uint64_t>(range.bytes - done, options_.buffer_bytes - piece.bytes);
      const uint64_t file_offset = range.offset + done;
      // Bytes that follow the previous ones in the file are one pread, and
      // bytes that follow them in the destination one copy.
      Segment* last_segment = piece.segments.empty() ? nullptr : &piece.segments.back();
      if (last_segment != nullptr && last_segment->fd == range.fd &&
          last_segment->file_offset + last_segment->bytes == file_offset) {
        last_segment->bytes += n;
      } else {
        piece.segments.push_back(Segment{range.fd, file_offset, n, piece.bytes});
      }
      // Only within this call: another call's destination that happens to
      // end where this one starts may be another allocation, and one copy
      // across two allocations fails (cudaErrorInvalidValue).
      Copy* last_copy = piece.copies.empty() ? nullptr : &piece.copies.back();
      if (last_copy != nullptr && last_copy->call == call && last_copy->dst + last_copy->bytes == out) {
        last_copy->bytes += n;
      } else {
        piece.copies.push_back(Copy{out, piece.bytes, n, call});
      }
      piece.bytes += n;
      out += n;
      done += n;
    }
  }
  changed_.notify_all();
  return absl::OkStatus();
}

absl::Status StagedUploader::Finish() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return QuiescentLocked() && (!error_.ok() || next_issue_ == next_sequence_); });
  // Every piece is issued (or dropped after an error); wait for the copies
  // still reading a buffer, so dst is complete (or no longer written).
  const std::vector<int> draining(in_flight_.begin(), in_flight_.end());
  in_flight_.clear();
  waiting_ += static_cast<int>(draining.size());
  lock.unlock();
  absl::Status status;
  for (int buffer : draining) {
    absl::Status waited = WaitForCopies(buffer);
    if (status.ok()) status = std::move(waited);
  }
  lock.lock();
  waiting_ -= static_cast<int>(draining.size());
  free_.insert(free_.end(), draining.begin(), draining.end());
  if (!status.ok()) FailLocked(std::move(status));
  if (busy_) {
    const auto now = std::chrono::steady_clock::now();
    stats_.seconds += std::chrono::duration<double>(now - busy_since_).count();
    busy_since_ = now;
    busy_ = error_.ok() && next_issue_ != next_sequence_;  // another thread queued more meanwhile
  }
  changed_.notify_all();
  return error_;
}

UploadStats StagedUploader::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  UploadStats stats = stats_;
  if (busy_) stats.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - busy_since_).count();
  return stats;
}

bool StagedUploader::StartWorker() {
  absl::Status status = SetDevice();
  if (status.ok()) return true;
  std::lock_guard<std::mutex> lock(mutex_);
  FailLocked(std::move(status));
  return false;
}

void StagedUploader::ReaderLoop() {
  if (!StartWorker()) return;
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    changed_.wait(lock, [&] {
      return shutdown_ || (error_.ok() && !pending_.empty() && (!free_.empty() || !in_flight_.empty()));
    });
    if (shutdown_) return;
    if (free_.empty()) {
      // Every buffer is busy: wait for the oldest copy (on one stream, the
      // first to complete) and free its buffer.
      const int buffer = in_flight_.front();
      in_flight_.pop_front();
      ++waiting_;
      lock.unlock();
      absl::Status status = WaitForCopies(buffer);
      lock.lock();
      --waiting_;
      free_.push_back(buffer);
      if (!status.ok()) FailLocked(std::move(status));
      changed_.notify_all();
      continue;
    }
    Piece piece = std::move(pending_.front());
    pending_.pop_front();
    piece.buffer = free_.back();
    free_.pop_back();
    ++reading_;
    lock.unlock();
    absl::Status status = Fill(piece);
    lock.lock();
    --reading_;
    if (status.ok() && error_.ok()) {
      filled_.emplace(piece.sequence, std::move(piece));
    } else {
      free_.push_back(piece.buffer);
      if (!status.ok()) FailLocked(std::move(status));
    }
    changed_.notify_all();
  }
}

void StagedUploader::IssuerLoop() {
  if (!StartWorker()) return;
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    changed_.wait(lock, [&] { return shutdown_ || (error_.ok() && filled_.count(next_issue_) > 0); });
    if (shutdown_) return;
    auto it = filled_.find(next_issue_);
    Piece piece = std::move(it->second);
    filled_.erase(it);
    issuing_ = true;
    lock.unlock();
    absl::Status status = Issue(piece);
    lock.lock();
    issuing_ = false;
    ++next_issue_;
    if (status.ok()) {
      stats_.bytes += piece.bytes;
      ++stats_.pieces;
      stats_.copies += piece.copies.size();
      if (options_.target == UploadTarget::kDevice) {
        in_flight_.push_back(piece.buffer);
      } else {
        free_.push_back(piece.buffer);  // memcpy is done with it
      }
    } else {
      free_.push_back(piece.buffer);
      FailLocked(std::move(status));
    }
    changed_.notify_all();
  }
}

absl::Status StagedUploader::Fill(const Piece& piece) {
  char* data = buffers_[piece.buffer].data;
  for (const Segment& segment : piece.segments) {
    absl::Status status =
        ReadFully(segment.fd, segment.file_offset, segment.bytes, data + segment.buffer_offset, failed_);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status StagedUploader::Issue(const Piece& piece) {
  const Buffer& buffer = buffers_[piece.buffer];
  if (options_.target == UploadTarget::kHost) {
    for (const Copy& copy : piece.copies) std::memcpy(copy.dst, buffer.data + copy.buffer_offset, copy.bytes);
    return absl::OkStatus();
  }
  for (const Copy& copy : piece.copies) {
    const cudaError_t error = cudaMemcpyAsync(copy.dst, buffer.data + copy.buffer_offset, copy.bytes,
                                              cudaMemcpyHostToDevice, piece.stream);
    if (error != cudaSuccess) {
      (void)cudaStreamSynchronize(piece.stream);  // the copies issued before may still read the buffer
      (void)cudaGetLastError();
      // What CUDA knows of the destination: the usual cause is memory that
      // is not (or no longer) an allocation of this device.
      cudaPointerAttributes attributes{};
      const bool known = cudaPointerGetAttributes(&attributes, copy.dst) == cudaSuccess;
      (void)cudaGetLastError();
      return CudaError(absl::StrCat("cudaMemcpyAsync of ", copy.bytes, " bytes to 0x",
                                    absl::Hex(reinterpret_cast<uintptr_t>(copy.dst)), " (",
                                    known ? absl::StrCat("memory type ", static_cast<int>(attributes.type), " on device ",
                                                         attributes.device)
                                          : "unknown to CUDA",
                                    ", device ", device_, ", stream 0x",
                                    absl::Hex(reinterpret_cast<uintptr_t>(piece.stream)), ")"),
                       error);
    }
  }
  if (cudaError_t error = cudaEventRecord(buffer.event, piece.stream); error != cudaSuccess) {
    (void)cudaStreamSynchronize(piece.stream);
    return CudaError("cudaEventRecord after a staged copy", error);
  }
  return absl::OkStatus();
}

absl::Status StagedUploader::WaitForCopies(int buffer) {
  if (cudaError_t error = cudaEventSynchronize(buffers_[buffer].event); error != cudaSuccess) {
    return CudaError("cudaEventSynchronize after a staged copy", error);
  }
  return absl::OkStatus();
}

absl::Status StagedUploader::SetDevice() const {
  if (options_.target == UploadTarget::kHost) return absl::OkStatus();
  if (cudaError_t error = cudaSetDevice(device_); error != cudaSuccess) {
    return CudaError(absl::StrCat("StagedUploader: cudaSetDevice(", device_, ")"), error);
  }
  return absl::OkStatus();
}

void StagedUploader::FailLocked(absl::Status status) {
  if (error_.ok()) {
    error_ = std::move(status);
    failed_.store(true, std::memory_order_relaxed);
  }
  // Nothing more is read or issued: the queued pieces are dropped and the
  // read ones give their buffers back.
  pending_.clear();
  for (const auto& [sequence, piece] : filled_) free_.push_back(piece.buffer);
  filled_.clear();
  changed_.notify_all();
}

bool StagedUploader::QuiescentLocked() const { return reading_ == 0 && waiting_ == 0 && !issuing_; }

}  // namespace gantry::cuda
