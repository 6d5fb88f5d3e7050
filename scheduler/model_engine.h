// Continuous batching for one loaded model: requests queue, join the running
// batch step by step (long prompts in chunks), stream each token as it is
// sampled, and leave when they stop; cancelled ones leave within one step and
// their KV blocks are freed. When blocks run out the newest running requests
// are preempted and later recomputed, with identical output.
#ifndef GANTRY_SCHEDULER_MODEL_ENGINE_H_
#define GANTRY_SCHEDULER_MODEL_ENGINE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/encoder_runner.h"
#include "runtime/model_runner.h"
#include "runtime/model_task.h"
#include "text/chat_template.h"
#include "text/guided/grammar.h"
#include "text/guided/grammar_cache.h"
#include "text/guided/matcher.h"
#include "text/stream_decoder.h"
#include "text/tokenizer.h"
#include "scheduler/batch_planner.h"
#include "scheduler/clock.h"
#include "scheduler/kv_cache_manager.h"
#include "scheduler/observer.h"
#include "scheduler/request_stream.h"

namespace gantry::scheduler {

struct GenerationRequest {
  std::vector<int32_t> prompt;
  runtime::SamplingParams sampling;
  int64_t max_tokens = 0;  // 0: what the context leaves after the prompt
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool skip_special_tokens = true;
  // Guided decoding: every token keeps the output a prefix of a match, and
  // the request ends (kStop) once the match is complete and cannot go on.
  // Compiled by ModelEngine::CompileGrammar; null: free generation.
  std::shared_ptr<const guided::Grammar> grammar;
  // A reasoning model's grammar waits for its <think> block to close, so it
  // thinks freely first. Set: the model may open the block with open_token as
  // its first token (or the prompt opened it); the grammar applies after
  // close_token, and stop tokens are refused until then.
  struct ReasoningGate {
    int32_t open_token = -1;
    int32_t close_token = -1;
    bool starts_in_reasoning = false;
  };
  std::optional<ReasoningGate> reasoning_gate;
};

// Encoder models: inputs already tokenized (special tokens in place) and,
// for cross-encoders, the pair's token types.
struct EncodeInput {
  std::vector<int32_t> tokens;
  std::vector<int32_t> token_types;  // empty: all 0
};

struct EncodeRequest {
  std::vector<EncodeInput> inputs;
};

struct EngineOptions {
  int64_t max_batch = 32;         // sequences (encoder models: inputs) per step
  int64_t max_step_tokens = 2048; // tokens per step; longer prompts are chunked (rerank through a causal LM too)
  // Encoder models (BERT, XLM-RoBERTa: embed, rerank): padded tokens per
  // step, which bound their activation memory. Larger than a generation
  // step's: an encoder's step is one forward with no decode to interleave,
  // and bigger batches use the GPU better (H100, bge-m3 shape, 512-token
  // inputs: 1,440 sequences/s 32 at a time against 291 one at a time).
  int64_t max_encode_tokens = 16384;
  int64_t max_queue = 256;        // waiting requests before RESOURCE_EXHAUSTED
  // Automatic prefix caching: a request reuses the KV blocks of the longest
  // prefix an earlier request computed (kv_cache_manager.h).
  bool prefix_caching = true;
  // Chat: special-token text in message content is encoded as special tokens
  // (false: as ordinary text, so clients cannot forge turns; text/chat_encoder.h).
  bool special_tokens_in_content = false;
  // Chat: the model's tool-call and reasoning output formats by name
  // (text/tool_call_parser.h, text/reasoning_parser.h); empty: detected from
  // its chat template.
  std::string tool_parser;
  std::string reasoning_parser;
  // Each step is launched and left running on the device while the engine
  // publishes the step before it, and collected at the next StepOnce
  // (false: collected at once; for comparison).
  bool overlap_steps = true;
  // With overlap_steps, on runners that can (ModelRunner::MaxStepsInFlight):
  // step N + 1 is planned and launched while step N runs, each sequence
  // step N samples for taking that token straight from the device, and only
  // then is step N collected; so the device does not wait for the host
  // between steps. A sequence that step N ends still runs in step N + 1,
  // whose output for it is dropped. Guided sequences cannot run ahead (their
  // next mask needs the token): while one is sampled, steps are collected
  // first.
  bool run_ahead = true;
};

struct EngineStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t blocks_total = 0;
  int64_t blocks_free = 0;
  int64_t preemptions = 0;
  int64_t prefix_query_tokens = 0;  // prompt tokens looked up in the prefix cache
  int64_t prefix_hit_tokens = 0;    // of those, tokens found cached (not computed again)
  int64_t cached_blocks = 0;        // blocks holding a reusable prefix
};

// The model an engine serves: the runner (generation) or the encoder
// (embed, rerank), plus, when the folder has them, its tokenizer and chat
// template.
struct LoadedModel {
  runtime::ModelTaskInfo task;                       // what it serves
  std::unique_ptr<runtime::ModelRunner> runner;      // task generate
  std::unique_ptr<runtime::EncoderRunner> encoder;   // task embed or rerank
  std::unique_ptr<text::Tokenizer> tokenizer;        // may be null: token-id prompts only
  std::unique_ptr<text::ChatTemplate> chat_template;  // null when there is no tokenizer
};

class ModelEngine {
 public:
  // `observer` (may be null) hears of every step.
  ModelEngine(std::string name, LoadedModel model, EngineOptions options, const Clock* clock,
              SchedulerObserver* observer = nullptr);
  ~ModelEngine();  // cancels what is left and joins the thread

  // Checks the request against the model (token ids in the vocabulary,
  // prompt + max_tokens within the context: INVALID_ARGUMENT with the
  // numbers) and queues it (RESOURCE_EXHAUSTED when the queue is full).
  // FAILED_PRECONDITION (UNSUPPORTED) for an embedding or rerank model.
  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(GenerationRequest request);
  // Encoder models: queues the inputs, which steps batch with other
  // requests' inputs; the stream gets one event with every output (or the
  // error). INVALID_ARGUMENT naming the input's index for an empty input, one
  // over info().max_context tokens (CONTEXT_LENGTH), a token id outside the
  // vocabulary or a bad token type; FAILED_PRECONDITION (UNSUPPORTED) for a
  // generation model.
  absl::StatusOr<std::shared_ptr<RequestStream>> SubmitEncode(EncodeRequest request);

  // One scheduling step; false when there was nothing to do. The background
  // thread calls it; tests call it directly instead of Start().
  bool StepOnce();
  void Start();
  // Stops accepting requests and returns once the engine is idle (its thread
  // exits). Running and waiting requests run to completion, or, with
  // `cancel_after`, end with FinishReason::kCancelled once that long has
  // passed (zero: at once).
  void Stop(std::optional<absl::Duration> cancel_after);
  // Ends running requests now (FinishReason::kCancelled) without stopping.
  void CancelAll();

  EngineStats Stats() const;
  const std::string& name() const { return name_; }
  const EngineOptions& options() const { return options_; }
  // For encoder models: the config's shape, device, dtype and weights;
  // max_context is the longest input (the sentence-transformers
  // max_seq_length when the folder sets one); no KV blocks.
  const runtime::ModelInfo& info() const { return info_; }
  runtime::ModelTask task() const { return model_.task.task; }
  const runtime::ModelTaskInfo& task_info() const { return model_.task; }
  // The encoder's own description (token types, labels); null for generation models.
  const runtime::EncoderInfo* encoder_info() const { return model_.encoder ? &model_.encoder->info() : nullptr; }
  // The runner's weights copied to host memory; only once Stop has returned
  // (no step runs then).
  absl::StatusOr<std::shared_ptr<const runtime::HostWeights>> CopyWeightsToHost() const {
    if (!model_.runner) return absl::UnimplementedError("encoder models are not kept in the host tier");
    return model_.runner->CopyWeightsToHost();
  }
  const text::Tokenizer* tokenizer() const { return model_.tokenizer.get(); }
  const text::ChatTemplate* chat_template() const { return model_.chat_template.get(); }
  // A grammar for this model's vocabulary (cached by spec, so the same
  // schema compiles once). INVALID_ARGUMENT naming what is wrong with the
  // spec; FAILED_PRECONDITION without a tokenizer. Thread-safe.
  absl::StatusOr<std::shared_ptr<const guided::Grammar>> CompileGrammar(const guided::GrammarSpec& spec);

 private:
  // A request from submission to its end. `key` is also its sequence id in
  // the KV cache manager and the runner.
  struct Active {
    int64_t key = 0;
    GenerationRequest request;  // its prompt moved into `tokens`
    std::shared_ptr<RequestStream> stream;
    std::vector<int32_t> tokens;  // prompt, then generated: the request's one token history
    int64_t num_prompt = 0;
    // Tokens in the KV cache once the launched steps have run; 0 while waiting.
    int64_t num_computed = 0;
    int64_t cached_prompt_tokens = 0;  // prompt tokens the prefix cache held at its first admission
    bool holds_blocks = false;
    // Launched, uncollected steps that sample a token for it (0 to 2).
    int awaiting = 0;
    // Running ahead: tokens.back() stands for the token the oldest launched
    // step samples, which it replaces when collected.
    bool placeholder = false;
    int64_t num_generated() const {
      return static_cast<int64_t>(tokens.size()) - num_prompt - (placeholder ? 1 : 0);
    }
    std::unique_ptr<text::StreamDecoder> decoder;
    std::optional<guided::GrammarMatcher> matcher;  // guided decoding: where the output is in the grammar
    std::vector<uint32_t> allowed_tokens;            // the matcher's mask for this step
    // With a reasoning gate: the next token may open the block (kFirstToken),
    // the block is open (kReasoning), or the grammar applies (kGrammar).
    enum class GrammarPhase { kGrammar, kFirstToken, kReasoning };
    GrammarPhase phase = GrammarPhase::kGrammar;
    absl::Time arrival;
    std::optional<absl::Time> first_scheduled, first_token;
  };

  // An encode request from submission to its last output.
  struct EncodeActive {
    std::vector<EncodeInput> inputs;
    std::shared_ptr<RequestStream> stream;
    size_t next = 0;  // inputs handed to steps so far
    std::vector<std::vector<float>> outputs;
    int64_t tokens = 0;
    absl::Time arrival;
    std::optional<absl::Time> first_scheduled;
  };

  bool EncodeStepOnce();
  // A decoder's encode step (Qwen3-Reranker, Qwen3-Embedding): each input
  // run once through the runner (KV blocks held for the step only, prompt
  // prefixes shared through the prefix cache); per input, of the last
  // position, a reranker's logits of "no" and "yes", or a bare decoder's
  // hidden state (last-token pooling).
  absl::StatusOr<std::vector<std::vector<float>>> DecoderOutputs(const std::vector<runtime::EncoderInput>& batch);
  // Fills each guided sequence's allowed_tokens for a step that samples it;
  // false (with the error pushed to `active`'s stream) when the grammar
  // allows no token at all.
  bool FillAllowedTokens(Active& active);
  // Handles one sampled token; true when the request finished.
  bool OnToken(Active& active, const runtime::SequenceStepResult& result, StreamEvent* event);
  // Waits for the oldest launched step and takes in its results: tokens
  // appended and streamed (into `outbox`), finished requests dropped.
  class Outbox;
  void CollectStep(Outbox& outbox);
  // A step the runner failed: each of its requests still running ends with
  // `status` (typed DEVICE_MEMORY when out of memory), is released and
  // listed in `finished`.
  void FailStep(const std::vector<int64_t>& keys, const absl::Status& status, Outbox& outbox,
                std::vector<int64_t>* finished);
  // Whether `active` is at its max_tokens or the context once `more` tokens
  // past those it has are generated.
  bool EndsByLength(const Active& active, int64_t more) const;
  // The running request `key`, or null when it has left running_ (finished,
  // cancelled or preempted) since a step was launched with it.
  Active* FindRunning(int64_t key);
  // Whether the next step may be launched before the one in flight is
  // collected (EngineOptions::run_ahead, the runner, no guided sequence
  // waiting for a token).
  bool CanRunAhead() const;
  // Takes the listed requests out of running_.
  void DropFinished(const std::vector<int64_t>& finished);
  void Finish(Active& active, FinishReason reason, std::string stop_reason, StreamEvent* event);
  void Release(Active& active);
  void RefreshStats();
  // From any thread, under mutex_: the counts the engine publishes after
  // every step (waiting_ and running_ belong to the stepping thread).
  bool HasWorkLocked() const {
    return !incoming_.empty() || !encode_incoming_.empty() || stats_.running > 0 || stats_.waiting > 0;
  }

  const std::string name_;
  LoadedModel model_;
  const EngineOptions options_;
  const runtime::ModelInfo info_;
  const Clock* clock_;
  SchedulerObserver* const observer_;
  std::vector<int32_t> eos_ids_;
  // Made on the first guided request (its vocabulary walks the tokenizer).
  std::once_flag grammar_cache_once_;
  absl::Status grammar_cache_status_;
  std::unique_ptr<guided::GrammarCache> grammar_cache_;
  KvCacheManager kv_;  // owned by the stepping thread

  mutable std::mutex mutex_;  // guards incoming_, stats_, accepting_, stopping_, cancel_all_
  std::condition_variable work_;
  std::condition_variable idle_;
  std::deque<std::unique_ptr<Active>> incoming_;
  std::deque<std::unique_ptr<EncodeActive>> encode_incoming_;
  bool accepting_ = true;
  bool stopping_ = false;
  bool cancel_all_ = false;
  EngineStats stats_;
  int64_t next_key_ = 1;

  // Owned by the stepping thread.
  std::deque<std::unique_ptr<Active>> waiting_;  // arrival order
  std::vector<std::unique_ptr<Active>> running_; // arrival order
  std::deque<std::unique_ptr<EncodeActive>> encode_queue_;  // arrival order; the front may be partly done
  // Steps launched on the runner and not yet collected, oldest first: the
  // device runs them while this thread plans the next one or publishes the
  // one before. At most one between StepOnce calls; two for a moment when
  // running ahead. Requests are named by key: one may end (or be
  // cancelled) before a step that holds it is collected.
  struct LaunchedStep {
    std::vector<int64_t> keys;
    std::vector<int64_t> computed;  // per request: its num_computed once this step has run
    StepReport report;  // its start set at launch; duration and device_wait filled when collected
  };
  std::deque<LaunchedStep> launched_;
  int64_t next_score_key_ = int64_t{1} << 40;  // DecoderOutputs' sequence keys, apart from generation's
  std::thread thread_;
};

}  // namespace gantry::scheduler

#endif  // GANTRY_SCHEDULER_MODEL_ENGINE_H_
