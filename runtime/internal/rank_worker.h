// A thread that runs one tensor-parallel rank's part of each step. The model
// runner posts the same step to every rank's worker and runs rank 0 itself;
// the ranks meet in their collectives. One job at a time.
#ifndef GANTRY_RUNTIME_INTERNAL_RANK_WORKER_H_
#define GANTRY_RUNTIME_INTERNAL_RANK_WORKER_H_

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace gantry::runtime {

class RankWorker {
 public:
  RankWorker() : thread_([this] { Loop(); }) {}
  ~RankWorker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  RankWorker(const RankWorker&) = delete;
  RankWorker& operator=(const RankWorker&) = delete;

  // Starts `job` on the worker; the previous job must have been waited for.
  void Post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = std::move(job);
      done_ = false;
      error_ = nullptr;
    }
    cv_.notify_all();
  }

  // Blocks until the posted job has run; returns what it threw, if anything.
  std::exception_ptr Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
    return error_;
  }

 private:
  void Loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || job_; });
        if (!job_) return;  // stopping, nothing left to run
        job = std::move(job_);
        job_ = nullptr;
      }
      std::exception_ptr error;
      try {
        job();
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        error_ = error;
        done_ = true;
      }
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool done_ = true;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;  // last: starts after the state above exists
};

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_RANK_WORKER_H_
