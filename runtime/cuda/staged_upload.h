// Uploads byte ranges of files (safetensors shards) into GPU memory through a
// pipeline of pinned staging buffers: reader threads pread file bytes into
// free buffers while the buffers filled before them are copied to the device
// with cudaMemcpyAsync, so page-cache (or disk) reads and PCIe copies overlap.
//
// Why: copying a tensor from the mmapped file (at::from_blob + copy_) is a
// synchronous pageable copy, which CUDA stages through its own small pinned
// buffer one tensor at a time: 6-7 GB/s for a 16 GB model, where the page
// cache and PCIe each give twice that or more. Why hand-written: NVIDIA GDS
// (cuFile), the library that reads files straight into device memory, is not
// available on these machines (the CUDA toolkit Gantry builds against ships
// no libcufile, and GDS also needs the nvidia-fs kernel driver), and LibTorch
// only copies from memory; no library at hand reads files into pinned
// buffers and overlaps the reads with the copies.
//
// Torch-free and free of CUDA headers, like kernels.h: the runtime passes raw
// device pointers and its stream.
#ifndef GANTRY_RUNTIME_CUDA_STAGED_UPLOAD_H_
#define GANTRY_RUNTIME_CUDA_STAGED_UPLOAD_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*
struct CUevent_st;   // cudaEvent_t is CUevent_st*

namespace gantry::cuda {

using Stream = CUstream_st*;  // the same alias as kernels.h's

// `bytes` bytes of an open file from `offset`, read with pread (the file
// position is neither used nor moved). The fd stays the caller's: it must
// stay open until Finish returns.
struct FileRange {
  int fd = -1;
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

enum class UploadTarget {
  kDevice,  // pinned buffers, cudaMemcpyAsync into device memory
  kHost,    // malloc'ed buffers, memcpy into host memory; no CUDA call at all
            // (tests the pipeline where no GPU is)
};

struct UploadOptions {
  // Bytes of one staging buffer: a range longer than this is split, shorter
  // ones share a buffer. Pinned memory in all: buffer_bytes * buffers.
  size_t buffer_bytes = size_t{64} << 20;
  int buffers = 8;         // buffers being read, waiting or being copied at once
  int reader_threads = 4;  // threads calling pread (page-cache copies need several cores)
  UploadTarget target = UploadTarget::kDevice;
};

struct UploadStats {
  uint64_t bytes = 0;    // bytes copied to their destination (or issued, before Finish)
  uint64_t pieces = 0;   // staging buffers filled and copied
  uint64_t copies = 0;   // cudaMemcpyAsync (or memcpy) calls
  double seconds = 0;    // time with work queued: from an Enqueue on an idle uploader to Finish
};

// Thread-safe. Typical use: Create once per model load, Enqueue every tensor,
// Finish, destroy (or Enqueue and Finish again). The first read or copy error
// stops the pipeline for good: what was queued is dropped and every later
// Enqueue and Finish returns that error. An Enqueue refused for its arguments
// queues nothing and stops nothing.
class StagedUploader {
 public:
  // Allocates the staging buffers (kDevice: cudaHostAlloc, for the device
  // current in this thread, which every later stream must belong to) and
  // starts the reader threads and the issuing thread.
  static absl::StatusOr<std::unique_ptr<StagedUploader>> Create(const UploadOptions& options);

  // Waits for everything queued (as Finish, dropping its status), then stops
  // the threads and frees the buffers. Safe after an error; never throws.
  ~StagedUploader();

  StagedUploader(const StagedUploader&) = delete;
  StagedUploader& operator=(const StagedUploader&) = delete;

  // Queues an upload: the ranges, concatenated in order, land at `dst`
  // (kDevice: device memory, kHost: host memory; at least the sum of their
  // bytes, in one allocation). Uploads of different calls never share a
  // copy, even where one's destination ends where the next one's starts. Returns at once; an argument error (bad fd, overflowing range,
  // null dst) comes back here, read and copy errors from Finish.
  // kDevice: the copies are issued later, by the issuing thread, on `stream`
  // (nullptr: the legacy default stream; not cudaStreamPerThread, which would
  // name the issuing thread's own) in queue order, so they follow what was
  // queued on `stream` before them (e.g. whatever last used dst's memory). Work
  // queued on `stream` after Enqueue is NOT ordered after them: call Finish
  // before reading dst. kHost ignores `stream`.
  absl::Status Enqueue(void* dst, const std::vector<FileRange>& ranges, Stream stream);

  // Waits until every queued byte is at its destination (kDevice: the copies
  // have completed, so every stream sees them), or, after an error, until no
  // thread touches a buffer or a destination any more. Returns the first
  // error: a short read names the fd and offset, a CUDA error its name.
  absl::Status Finish();

  UploadStats stats() const;
  uint64_t bytes_uploaded() const { return stats().bytes; }
  double seconds() const { return stats().seconds; }

 private:
  // One pread into the piece's buffer.
  struct Segment {
    int fd;
    uint64_t file_offset;
    uint64_t bytes;
    uint64_t buffer_offset;
  };
  // One copy out of the piece's buffer into a contiguous destination.
  struct Copy {
    char* dst;  // [bytes]
    uint64_t buffer_offset;
    uint64_t bytes;
    uint64_t call;  // the Enqueue it is for: copies of one call may merge, of two never
  };
  // What one staging buffer carries: consecutive queued bytes, possibly of
  // several uploads (several copies), on one stream.
  struct Piece {
    uint64_t sequence = 0;  // queue order; copies are issued in it
    Stream stream = nullptr;
    uint64_t bytes = 0;     // bytes of the buffer in use, <= buffer_bytes
    std::vector<Segment> segments;
    std::vector<Copy> copies;
    int buffer = -1;        // once a reader took it
  };
  struct Buffer {
    char* data = nullptr;       // [buffer_bytes]
    CUevent_st* event = nullptr;  // kDevice: recorded after the buffer's copies
  };

  explicit StagedUploader(const UploadOptions& options) : options_(options) {}

  absl::Status Start();
  // A worker thread's start: the uploader's device current; false (the
  // pipeline failed) when that fails.
  bool StartWorker();
  void ReaderLoop();
  void IssuerLoop();
  absl::Status Fill(const Piece& piece);   // reads every segment into the piece's buffer
  absl::Status Issue(const Piece& piece);  // copies the buffer out, in the calling thread's order
  absl::Status WaitForCopies(int buffer);  // kDevice: the buffer's event
  absl::Status SetDevice() const;
  void FailLocked(absl::Status status);    // records the first error and drops the queue
  bool QuiescentLocked() const;

  const UploadOptions options_;
  int device_ = 0;
  std::vector<Buffer> buffers_;
  std::vector<std::thread> threads_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;  // any state below changed (notify_all)
  std::deque<Piece> pending_;        // queued, no reader yet; the back one may still grow
  std::map<uint64_t, Piece> filled_;  // read, waiting for their turn to be issued
  std::vector<int> free_;            // buffers ready for a reader
  std::deque<int> in_flight_;        // kDevice: copies issued, maybe not complete, oldest first
  uint64_t next_sequence_ = 0;       // of the next new piece
  uint64_t next_call_ = 0;           // of the next Enqueue
  uint64_t next_issue_ = 0;          // the piece the issuing thread waits for
  int reading_ = 0;                  // pieces taken by readers, not yet filled
  int waiting_ = 0;                  // in-flight buffers being waited for outside the lock
  bool issuing_ = false;
  bool shutdown_ = false;
  absl::Status error_;
  std::atomic<bool> failed_{false};  // error_ is set: readers check it between preads, without the lock
  UploadStats stats_;
  bool busy_ = false;                // work queued since the last Finish
  std::chrono::steady_clock::time_point busy_since_;
};

}  // namespace gantry::cuda

#endif  // GANTRY_RUNTIME_CUDA_STAGED_UPLOAD_H_
