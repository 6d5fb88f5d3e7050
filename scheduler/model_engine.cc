#include "scheduler/model_engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "scheduler/error_reason.h"
#include "scheduler/runner_session.h"

namespace gantry::scheduler {
namespace {

// Distinct grammars (schemas, regexes, choice lists) a model keeps compiled.
constexpr size_t kGrammarCacheSize = 64;

// What the engine reports of its model. An encoder's is made from its
// config: no KV blocks, and max_context is the longest input it takes.
runtime::ModelInfo EngineInfo(const LoadedModel& model) {
  if (model.runner) return model.runner->info();
  const runtime::EncoderInfo& encoder = model.encoder->info();
  runtime::ModelInfo info;
  info.config.architecture_name = encoder.config.architecture_name;
  info.config.vocab_size = encoder.config.vocab_size;
  info.config.hidden_size = encoder.config.hidden_size;
  info.config.intermediate_size = encoder.config.intermediate_size;
  info.config.num_layers = encoder.config.num_layers;
  info.config.num_heads = encoder.config.num_heads;
  info.config.num_kv_heads = encoder.config.num_heads;
  info.config.head_dim = encoder.config.hidden_size / encoder.config.num_heads;
  info.config.max_position_embeddings = encoder.config.max_position_embeddings;
  info.config.dtype = encoder.config.dtype;
  info.device = encoder.device;
  info.devices = {encoder.device};
  info.dtype = encoder.dtype;
  info.block_size = 1;
  info.max_context = encoder.max_tokens;
  const int64_t trained = model.task.embedding.max_seq_length;
  if (model.task.task == runtime::ModelTask::kEmbed && trained > 0) {
    info.max_context = std::min(info.max_context, trained);
  }
  info.weight_bytes = encoder.weight_bytes;
  info.execution = encoder.execution;
  info.weights_source = "disk";
  return info;
}

}  // namespace

ModelEngine::ModelEngine(std::string name, LoadedModel model, EngineOptions options, const Clock* clock,
                         SchedulerObserver* observer)
    : name_(std::move(name)),
      model_(std::move(model)),
      options_(options),
      info_(EngineInfo(model_)),
      clock_(clock),
      observer_(observer),
      kv_(info().num_blocks, info().block_size, options.prefix_caching) {
  if (model_.tokenizer && !model_.tokenizer->eos_ids().empty()) {
    eos_ids_ = model_.tokenizer->eos_ids();
  } else {
    for (int64_t id : info().config.eos_token_ids) eos_ids_.push_back(static_cast<int32_t>(id));
  }
  RefreshStats();
}

ModelEngine::~ModelEngine() { Stop(absl::ZeroDuration()); }

absl::StatusOr<std::shared_ptr<RequestStream>> ModelEngine::Submit(GenerationRequest request) {
  if (task() != runtime::ModelTask::kGenerate) {
    return WithReason(absl::FailedPreconditionError(absl::StrCat("model ", name_, " serves ",
                                                                 runtime::ModelTaskName(task()),
                                                                 ", not text generation")),
                      ErrorReason::kUnsupported);
  }
  const int64_t context = info().max_context;
  const int64_t prompt = static_cast<int64_t>(request.prompt.size());
  if (prompt == 0) {
    return WithReason(absl::InvalidArgumentError("prompt is empty: at least one token is needed"),
                      ErrorReason::kInvalidRequest);
  }
  const int64_t vocab = info().config.vocab_size;
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    if (request.prompt[i] < 0 || request.prompt[i] >= vocab) {
      return WithReason(absl::InvalidArgumentError(absl::StrCat("prompt token id ", request.prompt[i], " at index ",
                                                                i, " is outside the vocabulary [0, ", vocab, ")")),
                        ErrorReason::kInvalidRequest);
    }
  }
  if (prompt >= context) {
    return WithReason(absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt,
                                                              " tokens leaves no room in the context of ", context,
                                                              " tokens of model ", name_)),
                      ErrorReason::kContextLength);
  }
  if (request.max_tokens < 0) {
    return WithReason(absl::InvalidArgumentError("max_tokens must be >= 1"), ErrorReason::kInvalidRequest);
  }
  if (request.max_tokens == 0) request.max_tokens = context - prompt;
  if (prompt + request.max_tokens > context) {
    return WithReason(absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt, " tokens plus max_tokens ",
                                                              request.max_tokens, " exceeds the context of ", context,
                                                              " tokens of model ", name_)),
                      ErrorReason::kContextLength);
  }
  const int64_t blocks = BlocksFor(prompt + request.max_tokens, kv_.block_size());
  if (blocks > kv_.num_blocks()) {
    return WithReason(absl::ResourceExhaustedError(absl::StrCat("prompt plus max_tokens needs ", blocks,
                                                                " KV blocks; model ", name_, " has ",
                                                                kv_.num_blocks(), " in all")),
                      ErrorReason::kKvCapacity);
  }
  if (auto s = runtime::ValidateSamplingParams(request.sampling, vocab); !s.ok()) {
    return WithReason(s, ErrorReason::kInvalidRequest);
  }

  if (request.grammar &&
      request.grammar->vocabulary().mask_size() != static_cast<int32_t>(info().config.vocab_size)) {
    return WithReason(absl::InvalidArgumentError(absl::StrCat("grammar was compiled for ",
                                                              request.grammar->vocabulary().mask_size(),
                                                              " tokens; model ", name_, " has ",
                                                              info().config.vocab_size)),
                      ErrorReason::kInvalidRequest);
  }

  if (const auto& gate = request.reasoning_gate) {
    const int64_t vocab_size = info().config.vocab_size;
    if (!request.grammar || gate->open_token < 0 || gate->open_token >= vocab_size || gate->close_token < 0 ||
        gate->close_token >= vocab_size) {
      return WithReason(absl::InvalidArgumentError("reasoning_gate needs a grammar and token ids in the vocabulary"),
                        ErrorReason::kInvalidRequest);
    }
  }

  auto active = std::make_unique<Active>();
  if (request.grammar) {
    active->matcher.emplace(request.grammar);
    if (const auto& gate = request.reasoning_gate) {
      active->phase = gate->starts_in_reasoning ? Active::GrammarPhase::kReasoning : Active::GrammarPhase::kFirstToken;
    }
  }
  active->tokens = std::move(request.prompt);
  request.prompt.clear();
  active->num_prompt = prompt;
  active->request = std::move(request);
  active->stream = std::make_shared<RequestStream>();
  active->arrival = clock_->Now();
  if (model_.tokenizer) {
    active->decoder = std::make_unique<text::StreamDecoder>(*model_.tokenizer, active->request.stop,
                                                            active->request.skip_special_tokens);
  }
  std::shared_ptr<RequestStream> stream = active->stream;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!accepting_) {
      return WithReason(absl::UnavailableError(absl::StrCat("model ", name_, " is shutting down")),
                        ErrorReason::kShuttingDown);
    }
    if (stats_.waiting >= options_.max_queue) {  // counts incoming_ too
      return WithReason(absl::ResourceExhaustedError(absl::StrCat("queue of model ", name_, " is full (",
                                                                  options_.max_queue, " waiting requests)")),
                        ErrorReason::kQueueFull);
    }
    active->key = next_key_++;
    incoming_.push_back(std::move(active));
    stats_.waiting += 1;
  }
  work_.notify_all();
  return stream;
}

void ModelEngine::Release(Active& active) {
  if (!active.holds_blocks) return;
  kv_.Release(active.key);
  model_.runner->ReleaseSequence(active.key);
  active.holds_blocks = false;
  active.num_computed = 0;
}

void ModelEngine::Finish(Active& active, FinishReason reason, std::string stop_reason, StreamEvent* event) {
  if (active.decoder && reason != FinishReason::kCancelled && !active.decoder->stopped()) {
    event->text += active.decoder->Finish().text;
  }
  event->reason = reason;
  event->stop_reason = std::move(stop_reason);
  event->usage.prompt_tokens = active.num_prompt;
  event->usage.cached_prompt_tokens = active.cached_prompt_tokens;
  event->usage.completion_tokens = active.num_generated();
  if (active.first_scheduled) event->usage.queue_seconds = absl::ToDoubleSeconds(*active.first_scheduled - active.arrival);
  if (active.first_token) {
    event->usage.time_to_first_token_seconds = absl::ToDoubleSeconds(*active.first_token - active.arrival);
  }
  Release(active);
}

absl::StatusOr<std::shared_ptr<const guided::Grammar>> ModelEngine::CompileGrammar(const guided::GrammarSpec& spec) {
  if (!model_.tokenizer) {
    return WithReason(absl::FailedPreconditionError(absl::StrCat("model ", name_,
                                                                 " has no tokenizer.json, so it cannot follow a grammar")),
                      ErrorReason::kUnsupported);
  }
  std::call_once(grammar_cache_once_, [&] {
    auto vocabulary =
        guided::VocabularyFromTokenizer(*model_.tokenizer, static_cast<int32_t>(info().config.vocab_size));
    if (!vocabulary.ok()) {
      grammar_cache_status_ = vocabulary.status();
      return;
    }
    grammar_cache_ = std::make_unique<guided::GrammarCache>(*std::move(vocabulary), kGrammarCacheSize);
  });
  if (!grammar_cache_) return grammar_cache_status_;
  auto grammar = grammar_cache_->Get(spec);
  if (!grammar.ok()) return WithReason(grammar.status(), ErrorReason::kInvalidRequest);
  return grammar;
}

bool ModelEngine::FillAllowedTokens(Active& active) {
  active.allowed_tokens.resize(runtime::AllowedTokenWords(info().config.vocab_size));
  auto set = [&](int32_t token, bool on) {
    uint32_t& word = active.allowed_tokens[static_cast<size_t>(token) / 32];
    word = on ? word | (1u << (token % 32)) : word & ~(1u << (token % 32));
  };
  if (active.phase == Active::GrammarPhase::kReasoning) {
    // Any token but a stop: the answer (and its grammar) is still to come.
    std::fill(active.allowed_tokens.begin(), active.allowed_tokens.end(), ~0u);
    for (int32_t eos : eos_ids_) set(eos, false);
    return true;
  }
  active.matcher->FillNextTokenMask(active.allowed_tokens.data());
  if (active.phase == Active::GrammarPhase::kFirstToken) set(active.request.reasoning_gate->open_token, true);
  for (uint32_t word : active.allowed_tokens) {
    if (word != 0) return true;
  }
  return false;
}

bool ModelEngine::OnToken(Active& active, const runtime::SequenceStepResult& result, StreamEvent* event) {
  const int32_t token = result.token;
  // Which tokens are the grammar's: not those of a reasoning block (its
  // opening and closing tokens included).
  using Phase = Active::GrammarPhase;
  bool grammar_token = active.matcher && active.phase == Phase::kGrammar;
  if (active.matcher && active.phase == Phase::kFirstToken) {
    grammar_token = token != active.request.reasoning_gate->open_token;
    active.phase = grammar_token ? Phase::kGrammar : Phase::kReasoning;
  } else if (active.matcher && active.phase == Phase::kReasoning &&
             token == active.request.reasoning_gate->close_token) {
    active.phase = Phase::kGrammar;
  }
  if (grammar_token) {
    if (absl::Status accepted = active.matcher->AcceptToken(token); !accepted.ok()) {
      // The mask allowed it, so this is Gantry's bug, not the client's.
      event->error = absl::InternalError(absl::StrCat("guided decoding: ", accepted.message()));
      Release(active);
      return true;
    }
  }
  if (active.placeholder) {  // it stood for this token in the step launched after this one
    active.tokens.back() = token;
    active.placeholder = false;
  } else {
    active.tokens.push_back(token);
  }
  if (!active.first_token) active.first_token = clock_->Now();
  event->tokens.push_back({token, result.logprob, result.top_logprobs});
  const auto& request = active.request;
  const bool eos = !request.ignore_eos && std::count(eos_ids_.begin(), eos_ids_.end(), token) > 0;
  const bool stop_token = std::count(request.stop_token_ids.begin(), request.stop_token_ids.end(), token) > 0;
  if (eos || stop_token) {
    std::string reason = model_.tokenizer ? model_.tokenizer->Decode(std::vector<int32_t>{token}) : std::to_string(token);
    Finish(active, FinishReason::kStop, std::move(reason), event);
    return true;
  }
  if (active.decoder) {
    text::StreamDecoder::Output out = active.decoder->Add(token);
    event->text += out.text;
    if (out.stopped) {
      Finish(active, FinishReason::kStop, out.stop, event);
      return true;
    }
  }
  if (active.matcher && active.phase == Phase::kGrammar && active.matcher->IsCompleted()) {  // it cannot go on
    Finish(active, FinishReason::kStop, "", event);
    return true;
  }
  if (EndsByLength(active, 0)) {
    Finish(active, FinishReason::kLength, "", event);
    return true;
  }
  return false;
}

// Events of a collected step, pushed at the end of StepOnce (after the next
// step is launched and the engine has published its stats): a client that
// sees its request end then also sees the engine without it.
class ModelEngine::Outbox {
 public:
  void Add(std::shared_ptr<RequestStream> stream, StreamEvent event) {
    events_.emplace_back(std::move(stream), std::move(event));
  }
  ~Outbox() {
    for (auto& [stream, event] : events_) stream->Push(std::move(event));
  }

 private:
  std::vector<std::pair<std::shared_ptr<RequestStream>, StreamEvent>> events_;
};

absl::StatusOr<std::shared_ptr<RequestStream>> ModelEngine::SubmitEncode(EncodeRequest request) {
  if (task() == runtime::ModelTask::kGenerate) {
    return WithReason(absl::FailedPreconditionError(absl::StrCat("model ", name_,
                                                                 " serves text generation, not embeddings or rerank")),
                      ErrorReason::kUnsupported);
  }
  if (request.inputs.empty()) {
    return WithReason(absl::InvalidArgumentError("no inputs: at least one is needed"), ErrorReason::kInvalidRequest);
  }
  const int64_t vocab_size = info_.config.vocab_size;
  // A causal-LM reranker takes no token types (only zeros).
  const int64_t type_vocab_size = model_.encoder ? model_.encoder->info().config.type_vocab_size : 1;
  auto active = std::make_unique<EncodeActive>();
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    const EncodeInput& input = request.inputs[i];
    const int64_t length = static_cast<int64_t>(input.tokens.size());
    absl::Status status = runtime::CheckEncoderInput({input.tokens, input.token_types}, i,
                                                     {info_.max_context, vocab_size, type_vocab_size});
    if (absl::IsOutOfRange(status)) {
      return WithReason(absl::InvalidArgumentError(absl::StrCat("input ", i, " has ", length, " tokens; model ", name_,
                                                                " takes at most ", info_.max_context)),
                        ErrorReason::kContextLength);
    }
    if (!status.ok()) return WithReason(status, ErrorReason::kInvalidRequest);
    if (model_.runner && BlocksFor(length, kv_.block_size()) > kv_.num_blocks()) {
      return WithReason(absl::ResourceExhaustedError(absl::StrCat("input ", i, " needs ",
                                                                  BlocksFor(length, kv_.block_size()),
                                                                  " KV blocks; model ", name_, " has ",
                                                                  kv_.num_blocks(), " in all")),
                        ErrorReason::kKvCapacity);
    }
    active->tokens += length;
  }
  active->inputs = std::move(request.inputs);
  active->outputs.resize(active->inputs.size());
  active->stream = std::make_shared<RequestStream>();
  active->arrival = clock_->Now();
  std::shared_ptr<RequestStream> stream = active->stream;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!accepting_) {
      return WithReason(absl::UnavailableError(absl::StrCat("model ", name_, " is shutting down")),
                        ErrorReason::kShuttingDown);
    }
    if (stats_.waiting >= options_.max_queue) {
      return WithReason(absl::ResourceExhaustedError(absl::StrCat("queue of model ", name_, " is full (",
                                                                  options_.max_queue, " waiting requests)")),
                        ErrorReason::kQueueFull);
    }
    encode_incoming_.push_back(std::move(active));
    stats_.waiting += 1;
  }
  work_.notify_all();
  return stream;
}

bool ModelEngine::EncodeStepOnce() {
  Outbox outbox;  // declared first: flushed last, after RefreshStats
  bool cancel_all;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    while (!encode_incoming_.empty()) {
      encode_queue_.push_back(std::move(encode_incoming_.front()));
      encode_incoming_.pop_front();
    }
    cancel_all = std::exchange(cancel_all_, false);
  }
  bool worked = false;
  auto finish = [&](EncodeActive& a, StreamEvent event) {
    outbox.Add(a.stream, std::move(event));
    worked = true;
  };
  for (auto it = encode_queue_.begin(); it != encode_queue_.end();) {
    if (cancel_all || (*it)->stream->cancelled()) {
      StreamEvent event;
      event.reason = FinishReason::kCancelled;
      finish(**it, std::move(event));
      it = encode_queue_.erase(it);
    } else {
      ++it;
    }
  }

  // The pending inputs in queue order, as many as one step could take.
  struct Slot {
    EncodeActive* request;
    size_t index;
  };
  std::vector<Slot> slots;
  std::vector<int64_t> lengths;
  for (const auto& a : encode_queue_) {
    for (size_t i = a->next; i < a->inputs.size() && static_cast<int64_t>(slots.size()) < options_.max_batch; ++i) {
      slots.push_back({a.get(), i});
      lengths.push_back(static_cast<int64_t>(a->inputs[i].tokens.size()));
    }
  }
  const int64_t step_tokens = model_.encoder ? options_.max_encode_tokens : options_.max_step_tokens;
  int64_t taken = PlanEncodeStep(lengths, PlannerLimits{options_.max_batch, step_tokens});
  if (model_.runner) {
    // A causal-LM reranker holds KV blocks for the step only: as many
    // inputs as the free blocks hold (the first always fits, see SubmitEncode).
    int64_t blocks = 0, fit = 0;
    for (int64_t i = 0; i < taken; ++i) {
      blocks += BlocksFor(lengths[i], kv_.block_size());
      if (i > 0 && blocks > kv_.NumFreeBlocks()) break;
      fit = i + 1;
    }
    taken = fit;
  }
  slots.resize(static_cast<size_t>(taken));
  if (slots.empty()) {
    RefreshStats();
    return worked;
  }
  std::vector<runtime::EncoderInput> batch;
  int64_t tokens = 0;
  for (const Slot& slot : slots) {
    const EncodeInput& input = slot.request->inputs[slot.index];
    batch.push_back({input.tokens, input.token_types});
    tokens += static_cast<int64_t>(input.tokens.size());
    slot.request->next = slot.index + 1;
    if (!slot.request->first_scheduled) slot.request->first_scheduled = clock_->Now();
  }
  const absl::Time step_start = absl::Now();
  auto result = model_.encoder ? model_.encoder->Encode(batch) : DecoderOutputs(batch);
  if (observer_ != nullptr) {
    StepReport report;
    report.sequences = taken;
    report.prompt_tokens = tokens;
    report.duration = absl::Now() - step_start;
    observer_->OnStep(name_, report);
  }
  if (!result.ok()) {
    // The step's requests fail with the runtime's error; the rest carry on.
    const absl::Status error = result.status().code() == absl::StatusCode::kResourceExhausted
                                   ? WithReason(result.status(), ErrorReason::kDeviceMemory)
                                   : result.status();
    for (auto it = encode_queue_.begin(); it != encode_queue_.end();) {
      const bool in_step = std::any_of(slots.begin(), slots.end(), [&](const Slot& s) { return s.request == it->get(); });
      if (!in_step) {
        ++it;
        continue;
      }
      StreamEvent event;
      event.error = error;
      finish(**it, std::move(event));
      it = encode_queue_.erase(it);
    }
  } else {
    for (size_t i = 0; i < slots.size(); ++i) {
      slots[i].request->outputs[slots[i].index] = std::move((*result)[i]);
    }
    // Requests whose last input ran are done: they lead the queue.
    while (!encode_queue_.empty() && encode_queue_.front()->next == encode_queue_.front()->inputs.size()) {
      EncodeActive& a = *encode_queue_.front();
      StreamEvent event;
      event.reason = FinishReason::kStop;
      event.outputs = std::move(a.outputs);
      event.usage.prompt_tokens = a.tokens;
      event.usage.queue_seconds = absl::ToDoubleSeconds(*a.first_scheduled - a.arrival);
      finish(a, std::move(event));
      encode_queue_.pop_front();
    }
  }
  RefreshStats();
  return true;
}

absl::StatusOr<std::vector<std::vector<float>>> ModelEngine::DecoderOutputs(
    const std::vector<runtime::EncoderInput>& batch) {
  runtime::SamplingParams greedy;
  greedy.temperature = 0.0f;
  std::vector<int64_t> keys;
  auto release = [&] {
    for (int64_t key : keys) {
      kv_.Release(key);
      model_.runner->ReleaseSequence(key);
    }
  };
  // Every input's blocks first (a shared prompt prefix is computed once),
  // then one step over all of them.
  std::vector<int64_t> computed;
  for (const runtime::EncoderInput& input : batch) {
    const int64_t key = next_score_key_++;
    const PrefixHit hit = kv_.Start(key, input.tokens);
    keys.push_back(key);
    computed.push_back(hit.num_tokens);
    if (auto grown = kv_.Grow(key, static_cast<int64_t>(input.tokens.size())); !grown.ok()) {
      release();
      return absl::InternalError(absl::StrCat("planned rerank step does not fit the KV cache: ", grown.message()));
    }
  }
  std::vector<runtime::StepSequence> items;
  for (size_t i = 0; i < batch.size(); ++i) {
    const int64_t length = static_cast<int64_t>(batch[i].tokens.size());
    items.push_back(MakeStepSequence(kv_, keys[i], batch[i].tokens, length, computed[i], length - computed[i], &greedy));
    items.back().return_logits = true;
  }
  auto result = model_.runner->Step(items);
  std::vector<std::vector<float>> out;
  if (result.ok()) {
    for (size_t i = 0; i < batch.size(); ++i) {
      std::vector<float>& logits = result->sequences[i].logits;  // a bare decoder's: the hidden state
      if (model_.task.decoder_rerank) {
        out.push_back({logits[model_.task.no_token], logits[model_.task.yes_token]});
      } else {
        out.push_back(std::move(logits));  // the last token's: last-token pooling
      }
      kv_.CacheComputedBlocks(keys[i], batch[i].tokens, static_cast<int64_t>(batch[i].tokens.size()));
    }
  }
  release();
  if (!result.ok()) return result.status();
  return out;
}

void ModelEngine::FailStep(const std::vector<int64_t>& keys, const absl::Status& status, Outbox& outbox,
                           std::vector<int64_t>* finished) {
  // The step's requests fail with the runtime's error; the rest carry on.
  const absl::Status error = status.code() == absl::StatusCode::kResourceExhausted
                                 ? WithReason(status, ErrorReason::kDeviceMemory)
                                 : status;
  for (int64_t key : keys) {
    Active* a = FindRunning(key);
    if (a == nullptr) continue;  // ended or cancelled since the launch
    StreamEvent event;
    event.error = error;
    Release(*a);
    outbox.Add(a->stream, std::move(event));
    finished->push_back(key);
  }
}

bool ModelEngine::EndsByLength(const Active& active, int64_t more) const {
  const int64_t generated = active.num_generated() + more;
  return generated >= active.request.max_tokens || active.num_prompt + generated >= info().max_context;
}

ModelEngine::Active* ModelEngine::FindRunning(int64_t key) {
  // running_ is in key (arrival) order.
  auto it = std::lower_bound(running_.begin(), running_.end(), key,
                             [](const std::unique_ptr<Active>& a, int64_t k) { return a->key < k; });
  return it != running_.end() && (*it)->key == key ? it->get() : nullptr;
}

bool ModelEngine::CanRunAhead() const {
  if (!options_.overlap_steps || !options_.run_ahead || model_.runner->MaxStepsInFlight() < 2) return false;
  // A guided sequence's next mask needs the token the step in flight samples.
  return std::none_of(running_.begin(), running_.end(), [](const auto& a) { return a->awaiting > 0 && a->matcher; });
}

void ModelEngine::CollectStep(Outbox& outbox) {
  LaunchedStep step = std::move(launched_.front());
  launched_.pop_front();
  auto result = model_.runner->Collect();
  if (observer_ != nullptr) {
    step.report.duration = absl::Now() - step.report.start;
    if (result.ok()) step.report.device_wait = absl::Seconds(result->timing.device_seconds);
    observer_->OnStep(name_, step.report);
  }
  std::vector<int64_t> finished;
  if (!result.ok()) {
    FailStep(step.keys, result.status(), outbox, &finished);
  } else {
    for (size_t i = 0; i < step.keys.size(); ++i) {
      Active* a = FindRunning(step.keys[i]);
      if (a == nullptr) continue;  // ended or cancelled since the launch: its output is dropped
      // Only tokens known and computed: a placeholder past them is neither.
      kv_.CacheComputedBlocks(a->key, a->tokens, step.computed[i]);
      const runtime::SequenceStepResult& r = result->sequences[i];
      if (!r.sampled) continue;  // a prompt chunk that did not reach the end
      a->awaiting -= 1;
      StreamEvent event;
      if (OnToken(*a, r, &event)) finished.push_back(a->key);
      outbox.Add(a->stream, std::move(event));
    }
  }
  DropFinished(finished);
}

void ModelEngine::DropFinished(const std::vector<int64_t>& finished) {
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [&](const auto& a) { return std::count(finished.begin(), finished.end(), a->key) > 0; }),
                 running_.end());
}

bool ModelEngine::StepOnce() {
  if (task() != runtime::ModelTask::kGenerate) return EncodeStepOnce();
  Outbox outbox;  // declared first: flushed last, after RefreshStats
  bool collected = false;
  auto collect = [&] {
    CollectStep(outbox);
    collected = true;
  };
  // Without running ahead, the step launched last time is collected first:
  // its tokens decide what this one computes.
  if (!launched_.empty() && !CanRunAhead()) collect();
  bool cancel_all;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    while (!incoming_.empty()) {
      waiting_.push_back(std::move(incoming_.front()));
      incoming_.pop_front();
    }
    cancel_all = std::exchange(cancel_all_, false);
  }
  // Cancelled requests leave before planning, so their blocks are free now
  // (a step in flight may still write them; any step that could reuse them
  // is enqueued behind it).
  auto drop_cancelled = [&](auto& list) {
    for (auto it = list.begin(); it != list.end();) {
      Active& a = **it;
      if (cancel_all || a.stream->cancelled()) {
        StreamEvent event;
        Finish(a, FinishReason::kCancelled, "", &event);
        outbox.Add(a.stream, std::move(event));
        it = list.erase(it);
      } else {
        ++it;
      }
    }
  };
  drop_cancelled(waiting_);
  drop_cancelled(running_);

  // Plan past the step in flight (running ahead), unless that would preempt:
  // then collect it and plan on what is known.
  StepPlan plan;
  while (true) {
    std::vector<RunningSequence> running;
    for (const auto& a : running_) {
      if (a->awaiting > 0) {
        // The step in flight samples its next token. A token that ends it
        // for sure (its last by max_tokens or the context) is not run on.
        if (EndsByLength(*a, 1)) continue;
        running.push_back({a->key, a->num_computed, 1});
      } else {
        running.push_back({a->key, a->num_computed, static_cast<int64_t>(a->tokens.size()) - a->num_computed});
      }
    }
    // Only as many waiting requests as the batch has room for can start; only
    // they are looked up in the prefix cache.
    std::vector<WaitingSequence> waiting;
    const size_t slots =
        static_cast<size_t>(std::max<int64_t>(0, options_.max_batch - static_cast<int64_t>(running_.size())));
    for (size_t i = 0; i < waiting_.size() && i < slots; ++i) {
      const Active& a = *waiting_[i];
      waiting.push_back({a.key, static_cast<int64_t>(a.tokens.size()), kv_.FindCachedPrefix(a.tokens)});
    }
    PlannerLimits limits{options_.max_batch, options_.max_step_tokens};
    plan = PlanStep(running, waiting, kv_, limits);
    if (plan.preempted.empty() || launched_.empty()) break;
    collect();
  }
  const bool ahead = !launched_.empty();

  // Preempted: drop their cache, back to the queue in arrival order.
  for (int64_t key : plan.preempted) {
    auto it = std::find_if(running_.begin(), running_.end(), [&](const auto& a) { return a->key == key; });
    Release(**it);
    auto pos = std::find_if(waiting_.begin(), waiting_.end(), [&](const auto& w) { return w->key > key; });
    waiting_.insert(pos, std::move(*it));
    running_.erase(it);
  }
  // Admitted: they start on their cached prefix (a recomputed one with its
  // tokens so far). Before any sequence grows, so the blocks they share
  // cannot be evicted under them.
  const KvCacheStats before_admission = kv_.Stats();  // the step's lookups: the manager's counts move by them
  for (int64_t key : plan.admitted) {
    auto it = std::find_if(waiting_.begin(), waiting_.end(), [&](const auto& a) { return a->key == key; });
    Active& a = **it;
    const PrefixHit hit = kv_.Start(a.key, a.tokens);
    a.holds_blocks = true;
    a.num_computed = hit.num_tokens;
    if (!a.first_scheduled) {
      a.first_scheduled = clock_->Now();
      a.cached_prompt_tokens = hit.num_tokens;
    }
    auto pos = std::find_if(running_.begin(), running_.end(), [&](const auto& r) { return r->key > key; });
    running_.insert(pos, std::move(*it));
    waiting_.erase(it);
  }

  std::vector<runtime::StepSequence> items;
  std::vector<Active*> scheduled;
  std::vector<int64_t> finished;
  for (const auto& s : plan.scheduled) {
    Active& a = *FindRunning(s.key);
    if (auto grown = kv_.Grow(a.key, a.num_computed + s.num_tokens); !grown.ok()) {
      // The planner counted these blocks free: a bookkeeping bug, not the
      // client's. The request fails; the rest go on.
      StreamEvent event;
      event.error = absl::InternalError(absl::StrCat("planned step does not fit the KV cache: ", grown.message()));
      Release(a);
      outbox.Add(a.stream, std::move(event));
      finished.push_back(a.key);
      continue;
    }
    const bool pending = a.awaiting > 0;  // its last token is the one the step in flight samples
    if (pending) {
      a.tokens.push_back(0);
      a.placeholder = true;
    }
    items.push_back(
        MakeStepSequence(kv_, a.key, a.tokens, a.num_prompt, a.num_computed, s.num_tokens, &a.request.sampling));
    items.back().last_token_pending = pending;
    const bool samples = a.num_computed + s.num_tokens == static_cast<int64_t>(a.tokens.size());
    if (a.matcher && samples) {  // never pending (CanRunAhead)
      if (!FillAllowedTokens(a)) {
        items.pop_back();
        StreamEvent event;
        event.error = absl::InternalError(absl::StrCat("guided decoding: the grammar allows no token after ",
                                                       a.num_generated(), " generated tokens"));
        Release(a);
        outbox.Add(a.stream, std::move(event));
        finished.push_back(a.key);
        continue;
      }
      items.back().allowed_tokens = a.allowed_tokens;
    }
    scheduled.push_back(&a);
  }
  if (plan.preempted.size() > 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.preemptions += static_cast<int64_t>(plan.preempted.size());
  }
  // What the observer hears of this step (a step that only preempts too);
  // a launched step's duration and device wait are filled when collected.
  StepReport report;
  report.sequences = static_cast<int64_t>(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const bool decode = items[i].num_tokens == 1 && (items[i].last_token_pending || scheduled[i]->num_generated() > 0);
    (decode ? report.decode_tokens : report.prompt_tokens) += items[i].num_tokens;
  }
  report.preempted = static_cast<int64_t>(plan.preempted.size());
  const KvCacheStats after_admission = kv_.Stats();
  report.prefix_query_tokens = after_admission.query_tokens - before_admission.query_tokens;
  report.prefix_hit_tokens = after_admission.hit_tokens - before_admission.hit_tokens;
  if (items.empty()) {
    if (observer_ != nullptr && !plan.preempted.empty()) observer_->OnStep(name_, report);
    DropFinished(finished);
    // Nothing runs on past the step in flight: take in its tokens now.
    if (ahead) collect();
    RefreshStats();
    return collected || !plan.preempted.empty() || !finished.empty();
  }

  // Launch and return: the device runs the step while this thread collects
  // the one before it (running ahead) or publishes what came before it
  // (stats, then the streams' events, as the outbox empties) and comes back
  // to collect it at the next StepOnce.
  report.start = absl::Now();
  std::vector<int64_t> keys;
  for (const Active* a : scheduled) keys.push_back(a->key);
  if (absl::Status launched = model_.runner->Launch(items); !launched.ok()) {
    if (observer_ != nullptr) {
      report.duration = absl::Now() - report.start;
      observer_->OnStep(name_, report);
    }
    FailStep(keys, launched, outbox, &finished);
  } else {
    LaunchedStep step;
    for (size_t i = 0; i < items.size(); ++i) {
      Active& a = *scheduled[i];
      a.num_computed += items[i].num_tokens;
      if (a.num_computed == static_cast<int64_t>(a.tokens.size())) a.awaiting += 1;
      step.computed.push_back(a.num_computed);
    }
    step.keys = std::move(keys);
    step.report = report;
    launched_.push_back(std::move(step));
    if (ahead || !options_.overlap_steps) collect();
  }
  DropFinished(finished);
  // A step left in flight with none of its requests running has nothing to
  // give: collect it rather than leave it for a later request.
  if (!launched_.empty() && running_.empty()) collect();
  RefreshStats();
  return true;
}

void ModelEngine::RefreshStats() {
  std::lock_guard<std::mutex> lock(mutex_);
  // An encoder's running requests are those partly through their inputs.
  const int64_t encode_started = std::count_if(encode_queue_.begin(), encode_queue_.end(),
                                               [](const auto& a) { return a->next > 0; });
  stats_.running = static_cast<int64_t>(running_.size()) + encode_started;
  stats_.waiting = static_cast<int64_t>(waiting_.size() + incoming_.size() + encode_queue_.size() +
                                        encode_incoming_.size()) - encode_started;
  const KvCacheStats kv = kv_.Stats();
  stats_.blocks_total = kv.num_blocks;
  stats_.blocks_free = kv.free_blocks;
  stats_.cached_blocks = kv.cached_blocks;
  stats_.prefix_query_tokens = kv.query_tokens;
  stats_.prefix_hit_tokens = kv.hit_tokens;
  if (!HasWorkLocked()) idle_.notify_all();
}

EngineStats ModelEngine::Stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void ModelEngine::Start() {
  thread_ = std::thread([this] {
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_.wait(lock, [&] { return stopping_ || cancel_all_ || HasWorkLocked(); });
        if (stopping_ && !HasWorkLocked()) return;
      }
      StepOnce();
    }
  });
}

void ModelEngine::CancelAll() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cancel_all_ = true;
  }
  work_.notify_all();
}

void ModelEngine::Stop(std::optional<absl::Duration> cancel_after) {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    accepting_ = false;
    stopping_ = true;
    if (cancel_after && thread_.joinable() && *cancel_after > absl::ZeroDuration()) {
      // Grace period: let running requests finish, up to `cancel_after`.
      idle_.wait_for(lock, absl::ToChronoNanoseconds(*cancel_after), [&] { return !HasWorkLocked(); });
    }
    if (cancel_after) cancel_all_ = true;
  }
  work_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
    return;
  }
  // No thread (tests): drain synchronously.
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!HasWorkLocked() && !cancel_all_) break;
    }
    StepOnce();
  }
}

}  // namespace gantry::scheduler
