#include "runtime/internal/byte_sink_pool.h"

#include <utility>

namespace gantry::runtime {

// Forwards to the pool's sink and remembers whether it is still healthy.
class ByteSinkPool::Leased final : public ByteSink {
 public:
  Leased(ByteSinkPool* pool, std::unique_ptr<ByteSink> sink) : pool_(pool), sink_(std::move(sink)) {}

  ~Leased() override {
    if (unfinished_) healthy_ = healthy_ && sink_->Finish().ok();  // wait for what was queued
    if (healthy_) pool_->GiveBack(std::move(sink_));
  }

  absl::Status Enqueue(void* dst, std::vector<ByteRange> ranges) override {
    unfinished_ = true;
    // An argument error queues nothing and leaves the sink usable; any other
    // error is the pipeline's own, which stays.
    absl::Status status = sink_->Enqueue(dst, std::move(ranges));
    if (!status.ok() && !absl::IsInvalidArgument(status)) healthy_ = false;
    return status;
  }

  absl::Status Finish() override {
    unfinished_ = false;
    absl::Status status = sink_->Finish();
    if (!status.ok()) healthy_ = false;
    return status;
  }

 private:
  ByteSinkPool* pool_;
  std::unique_ptr<ByteSink> sink_;
  bool unfinished_ = false;  // queued since the last Finish
  bool healthy_ = true;
};

absl::StatusOr<std::unique_ptr<ByteSink>> ByteSinkPool::Lease() {
  std::unique_ptr<ByteSink> sink;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!idle_.empty()) {
      sink = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  if (sink == nullptr) {
    // Outside the lock: making one may pin hundreds of MiB (about 90 ms).
    auto made = factory_();
    if (!made.ok()) return made.status();
    sink = *std::move(made);
    std::lock_guard<std::mutex> lock(mutex_);
    ++created_;
  }
  return std::unique_ptr<ByteSink>(std::make_unique<Leased>(this, std::move(sink)));
}

void ByteSinkPool::GiveBack(std::unique_ptr<ByteSink> sink) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (static_cast<int>(idle_.size()) < max_idle_) idle_.push_back(std::move(sink));
  }
  // Otherwise a surplus of loads that ran at once: `sink` frees it here, outside the lock.
}

int ByteSinkPool::idle() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(idle_.size());
}

int ByteSinkPool::created() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return created_;
}

}  // namespace gantry::runtime
