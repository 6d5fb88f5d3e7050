// The channel between a model's engine thread (producer) and the RPC that
// streams a request's tokens to its client (consumer).
#ifndef GANTRY_SCHEDULER_REQUEST_STREAM_H_
#define GANTRY_SCHEDULER_REQUEST_STREAM_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "runtime/model_runner.h"

namespace gantry::scheduler {

enum class FinishReason { kNone, kStop, kLength, kCancelled };

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t cached_prompt_tokens = 0;  // of the prompt tokens, those the prefix cache held
  int64_t completion_tokens = 0;
  double queue_seconds = 0;
  double time_to_first_token_seconds = 0;
};

struct GeneratedToken {
  int32_t id = 0;
  float logprob = 0;
  std::vector<runtime::TokenLogprob> top_logprobs;
};

// One update: new tokens and text; the last one has `reason` set (or an error).
struct StreamEvent {
  std::vector<GeneratedToken> tokens;
  std::string text;
  FinishReason reason = FinishReason::kNone;
  std::string stop_reason;
  Usage usage;
  // An encode request's one event: a row of floats per input, in order (the
  // pooled embedding, or the cross-encoder's logits); usage.prompt_tokens
  // counts its tokens.
  std::vector<std::vector<float>> outputs;
  absl::Status error;  // set alone: the request failed
  bool last() const { return reason != FinishReason::kNone || !error.ok(); }
};

// Consumers either block in Pop or, event-driven (the gRPC server), set a
// listener that is called after every Push and then Pop with a zero timeout.
class RequestStream {
 public:
  void Push(StreamEvent event) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      events_.push_back(std::move(event));
    }
    ready_.notify_all();
    std::lock_guard<std::mutex> lock(listener_mutex_);
    if (listener_) listener_();
  }

  // Called (on the pushing thread) after each Push; events pushed before it
  // was set are the listener's to pop too. Setting another, or none, waits
  // until a call in progress has returned, so a consumer that clears it may
  // then go away. The listener must not set the listener itself.
  void SetListener(std::function<void()> listener) {
    std::lock_guard<std::mutex> lock(listener_mutex_);
    listener_ = std::move(listener);
  }

  // Waits up to `timeout`; false when nothing arrived.
  bool Pop(StreamEvent* event, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!ready_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return !events_.empty(); })) return false;
    *event = std::move(events_.front());
    events_.pop_front();
    return true;
  }

  // The client went away or its deadline passed: the engine drops the
  // request at its next step and frees its blocks.
  void Cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<StreamEvent> events_;
  std::atomic<bool> cancelled_{false};
  std::mutex listener_mutex_;  // held while the listener runs
  std::function<void()> listener_;
};

}  // namespace gantry::scheduler

#endif  // GANTRY_SCHEDULER_REQUEST_STREAM_H_
