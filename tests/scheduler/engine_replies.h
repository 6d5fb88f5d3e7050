// Steps an engine by hand until every stream has ended, collecting each
// reply's text, tokens, finish reason and error (for tests).
#ifndef GANTRY_TESTS_SCHEDULER_ENGINE_REPLIES_H_
#define GANTRY_TESTS_SCHEDULER_ENGINE_REPLIES_H_

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "scheduler/model_engine.h"

namespace gantry::testing {

// A request for `max_tokens` tokens after `prompt`, eos ignored (the fake
// runner's tokens run on).
inline scheduler::GenerationRequest RequestIgnoringEos(std::vector<int32_t> prompt, int64_t max_tokens) {
  scheduler::GenerationRequest request;
  request.prompt = std::move(prompt);
  request.max_tokens = max_tokens;
  request.ignore_eos = true;
  return request;
}

struct EngineReply {
  std::string text;
  std::vector<int32_t> tokens;
  scheduler::FinishReason reason = scheduler::FinishReason::kNone;
  absl::Status error;
};

inline std::vector<EngineReply> SubmitAndRun(scheduler::ModelEngine& engine,
                                             std::vector<scheduler::GenerationRequest> requests,
                                             int max_steps = 100000) {
  std::vector<std::shared_ptr<scheduler::RequestStream>> streams;
  for (auto& request : requests) {
    auto stream = engine.Submit(std::move(request));
    EXPECT_TRUE(stream.ok()) << stream.status();
    if (!stream.ok()) return {};
    streams.push_back(*stream);
  }
  std::vector<EngineReply> replies(streams.size());
  std::vector<bool> done(streams.size(), false);
  size_t finished = 0;
  for (int step = 0; step < max_steps && finished < streams.size(); ++step) {
    engine.StepOnce();
    for (size_t i = 0; i < streams.size(); ++i) {
      scheduler::StreamEvent event;
      while (!done[i] && streams[i]->Pop(&event, absl::ZeroDuration())) {
        replies[i].text += event.text;
        for (const auto& t : event.tokens) replies[i].tokens.push_back(t.id);
        if (!event.error.ok()) replies[i].error = event.error;
        if (event.last()) {
          replies[i].reason = event.reason;
          done[i] = true;
          ++finished;
        }
      }
    }
  }
  EXPECT_EQ(finished, streams.size()) << "requests did not finish";
  return replies;
}

}  // namespace gantry::testing

#endif  // GANTRY_TESTS_SCHEDULER_ENGINE_REPLIES_H_
