#include "text/tool_call_parser.h"

#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "text/marker_match.h"

namespace gantry::text {
namespace {

constexpr absl::string_view kHermesOpen = "<tool_call>";
constexpr absl::string_view kHermesClose = "</tool_call>";
constexpr absl::string_view kPythonTag = "<|python_tag|>";
constexpr absl::string_view kMistralCalls = "[TOOL_CALLS]";
constexpr absl::string_view kMistralArgs = "[ARGS]";
constexpr absl::string_view kMistralCallId = "[CALL_ID]";
constexpr absl::string_view kDeepSeekCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr absl::string_view kDeepSeekCallsEnd = "<｜tool▁calls▁end｜>";
constexpr absl::string_view kDeepSeekCallBegin = "<｜tool▁call▁begin｜>";
constexpr absl::string_view kDeepSeekCallEnd = "<｜tool▁call▁end｜>";
constexpr absl::string_view kDeepSeekSep = "<｜tool▁sep｜>";
constexpr absl::string_view kFence = "```";
constexpr absl::string_view kJsonFence = "```json";

// Longest name, call id or DeepSeek call type waited for before the markup
// is taken for text.
constexpr size_t kMaxLabel = 256;

// The markers that start a call anywhere in the content.
absl::Span<const absl::string_view> ContentMarkers(ToolParserKind kind) {
  static constexpr absl::string_view kHermes[] = {kHermesOpen};
  static constexpr absl::string_view kMistral[] = {kMistralCalls};
  static constexpr absl::string_view kDeepSeek[] = {kDeepSeekCallsBegin, kDeepSeekCallBegin};
  switch (kind) {
    case ToolParserKind::kHermes:
      return kHermes;
    case ToolParserKind::kMistral:
      return kMistral;
    case ToolParserKind::kDeepSeekV3:
      return kDeepSeek;
    default:
      return {};
  }
}

// Keys a call object may have before its name and arguments are known; an
// object that starts with any other key is not a call.
bool IsCallKey(absl::string_view key) {
  return key == "name" || key == "arguments" || key == "parameters" || key == "type" || key == "id";
}

bool IsArgumentsKey(absl::string_view key) { return key == "arguments" || key == "parameters"; }

bool IsJsonObject(absl::string_view text) {
  const nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return value.is_object();
}

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ||
         static_cast<unsigned char>(c) >= 0x80;
}

enum class Read { kDone, kNeedMore, kBad };

// A complete JSON string at the start of `text`: its decoded value and the
// length of its JSON text.
Read ReadJsonString(absl::string_view text, std::string* value, size_t* length) {
  if (text.empty()) return Read::kNeedMore;
  if (text[0] != '"') return Read::kBad;
  for (size_t i = 1; i < text.size(); ++i) {
    if (text[i] == '\\') {
      ++i;
    } else if (text[i] == '"') {
      const nlohmann::json parsed = nlohmann::json::parse(text.substr(0, i + 1), nullptr, false);
      if (!parsed.is_string()) return Read::kBad;
      *value = parsed.get<std::string>();
      *length = i + 1;
      return Read::kDone;
    } else if (static_cast<unsigned char>(text[i]) < 0x20) {
      return Read::kBad;
    }
  }
  return Read::kNeedMore;
}

}  // namespace

enum class ToolCallParser::State {
  kContent,       // text; a content marker starts a call
  kPlainContent,  // text to the end
  kLlamaStart,    // Llama: before the reply's first non-whitespace
  kBetweenCalls,  // after a call: whitespace before another call is dropped
  kObject,        // a call object {"name": .., "arguments": ..}
  kArgumentsStart,
  kArguments,          // streaming the arguments object
  kAfterCall,          // Hermes: </tool_call>; Llama: ';'
  kMistralStart,       // after [TOOL_CALLS]: a list or a name
  kMistralName,        // name[ARGS] or name[CALL_ID]id[ARGS]
  kMistralListNext,    // ',' or ']' after a listed call
  kDeepSeekSection,    // between <｜tool▁calls▁begin｜> and <｜tool▁calls▁end｜>
  kDeepSeekType,       // "function" up to <｜tool▁sep｜>
  kDeepSeekName,       // NAME\n, or (V3.1) the arguments
  kDeepSeekFence,      // ```json
  kDeepSeekAfterArgs,  // ``` and <｜tool▁call▁end｜>
};
enum class ToolCallParser::Step { kProgress, kNeedMore };
enum class ToolCallParser::ObjectState { kOpen, kKeyOrEnd, kKey, kColon, kValue, kSkip, kCommaOrEnd };

absl::StatusOr<ToolParserKind> ToolParserFromName(absl::string_view name) {
  if (name.empty() || name == "none") return ToolParserKind::kNone;
  if (name == "hermes" || name == "qwen" || name == "qwen2_5" || name == "qwen3") return ToolParserKind::kHermes;
  if (name == "llama3_json" || name == "llama3" || name == "llama") return ToolParserKind::kLlama3Json;
  if (name == "mistral") return ToolParserKind::kMistral;
  if (name == "deepseek_v3") return ToolParserKind::kDeepSeekV3;
  return absl::InvalidArgumentError(absl::StrCat("unknown tool call parser '", name,
                                                 "'; known: none, hermes, qwen, qwen2_5, qwen3, llama3_json, "
                                                 "llama3, llama, mistral, deepseek_v3"));
}

ToolParserKind DetectToolParser(absl::string_view chat_template) {
  if (absl::StrContains(chat_template, kHermesOpen)) return ToolParserKind::kHermes;
  if (absl::StrContains(chat_template, kDeepSeekCallBegin)) return ToolParserKind::kDeepSeekV3;
  if (absl::StrContains(chat_template, kMistralCalls)) return ToolParserKind::kMistral;
  if (absl::StrContains(chat_template, kPythonTag) ||
      (absl::StrContains(chat_template, "<|start_header_id|>") &&
       absl::StrContains(chat_template, "\"parameters\""))) {
    return ToolParserKind::kLlama3Json;
  }
  return ToolParserKind::kNone;
}

std::string RandomToolCallId(ToolParserKind kind) {
  static constexpr absl::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<size_t> pick(0, kAlphabet.size() - 1);
  const bool mistral = kind == ToolParserKind::kMistral;
  std::string id = mistral ? "" : "call_";
  for (int i = 0; i < (mistral ? 9 : 24); ++i) id += kAlphabet[pick(rng)];
  return id;
}

ToolCallParser::ToolCallParser(ToolParserKind kind, ToolCallIdGenerator id_generator)
    : kind_(kind),
      id_generator_(id_generator ? std::move(id_generator) : [kind] { return RandomToolCallId(kind); }),
      state_(kind == ToolParserKind::kNone         ? State::kPlainContent
             : kind == ToolParserKind::kLlama3Json ? State::kLlamaStart
                                                   : State::kContent),
      object_state_(ObjectState::kOpen),
      after_arguments_(State::kAfterCall) {}

void ToolCallParser::Feed(absl::string_view text, Output* out) {
  buf_.append(text.data(), text.size());
  Run(out);
}

void ToolCallParser::Finish(Output* out) {
  eof_ = true;
  Run(out);
}

void ToolCallParser::Run(Output* out) {
  for (;;) {
    if (StepOnce(out) == Step::kProgress) continue;
    if (!eof_ || EndOfInput(out) == Step::kNeedMore) break;
  }
  buf_.erase(0, pos_);
  pos_ = 0;
}

ToolCallParser::Step ToolCallParser::StepOnce(Output* out) {
  switch (state_) {
    case State::kContent:
      return Content(out);
    case State::kPlainContent:
      EmitContent(out, Rest());
      pos_ = buf_.size();
      return Step::kNeedMore;
    case State::kLlamaStart:
      return LlamaStart(out);
    case State::kBetweenCalls:
      return BetweenCalls(out);
    case State::kObject:
      return ObjectStep(out);
    case State::kArgumentsStart:
      return ArgumentsStart(out);
    case State::kArguments:
      return Arguments(out);
    case State::kAfterCall:
      return AfterCall(out);
    case State::kMistralStart:
      return MistralStart();
    case State::kMistralName:
      return MistralName(out);
    case State::kMistralListNext:
      return MistralListNext();
    case State::kDeepSeekSection:
      return DeepSeekSection(out);
    case State::kDeepSeekType:
      return DeepSeekType(out);
    case State::kDeepSeekName:
      return DeepSeekName(out);
    case State::kDeepSeekFence:
      return DeepSeekFence(out);
    case State::kDeepSeekAfterArgs:
      return DeepSeekAfterArgs();
  }
  return Step::kNeedMore;
}

ToolCallParser::Step ToolCallParser::EndOfInput(Output* out) {
  switch (state_) {
    case State::kObject:
    case State::kArgumentsStart:
    case State::kArguments:
    case State::kMistralStart:
    case State::kMistralName:
    case State::kDeepSeekType:
    case State::kDeepSeekName:
    case State::kDeepSeekFence:
      return Invalid(out);  // an unfinished call
    case State::kDeepSeekSection:
      if (!raw_.empty() && marker_length_ > 0) return Invalid(out);  // a section with no call
      [[fallthrough]];
    default:
      // Whatever is left, or held as a possible marker, is text; whitespace
      // after the last call is dropped.
      if (state_ == State::kContent || state_ == State::kPlainContent || state_ == State::kLlamaStart ||
          LeadingWhitespace(Rest()) < Rest().size()) {
        EmitContent(out, Rest());
      }
      pos_ = buf_.size();
      return Step::kNeedMore;
  }
}

void ToolCallParser::Consume(size_t n) {
  raw_.append(buf_, pos_, n);
  pos_ += n;
}

void ToolCallParser::SkipWhitespace() { Consume(LeadingWhitespace(Rest())); }

void ToolCallParser::EmitContent(Output* out, absl::string_view text) {
  out->content.append(text.data(), text.size());
  out->whole_content.append(text.data(), text.size());
}

void ToolCallParser::ResetCall() {
  key_.clear();
  name_.clear();
  label_.clear();
  arguments_.clear();
  id_.clear();
  have_arguments_ = false;
  committed_ = false;
  arguments_sent_ = 0;
  fence_closed_ = false;
  object_state_ = ObjectState::kOpen;
}

void ToolCallParser::StartCall(size_t marker_length, State state) {
  raw_.clear();
  Consume(marker_length);
  marker_length_ = marker_length;
  in_list_ = false;
  ResetCall();
  state_ = state;
}

void ToolCallParser::StartArguments(State after) {
  after_arguments_ = after;
  state_ = State::kArgumentsStart;
}

void ToolCallParser::MaybeCommit(Output* out) {
  if (committed_ || name_.empty() || !have_arguments_) return;
  id_ = id_generator_();
  out->tool_calls.push_back({next_index_, id_, name_, arguments_});
  arguments_sent_ = arguments_.size();
  committed_ = true;
}

void ToolCallParser::SendArguments(Output* out) {
  if (!committed_ || arguments_sent_ == arguments_.size()) return;
  const std::string fragment = arguments_.substr(arguments_sent_);
  arguments_sent_ = arguments_.size();
  if (!out->tool_calls.empty() && out->tool_calls.back().index == next_index_) {
    out->tool_calls.back().arguments += fragment;
  } else {
    out->tool_calls.push_back({next_index_, "", "", fragment});
  }
}

ToolCallParser::Step ToolCallParser::CompleteCall(Output* out, State after) {
  if (name_.empty()) return Invalid(out);
  if (!have_arguments_) {
    arguments_ = "{}";
    have_arguments_ = true;
  }
  if (!IsJsonObject(arguments_)) return Invalid(out);
  MaybeCommit(out);
  SendArguments(out);
  calls_.push_back({id_, name_, arguments_});
  ++next_index_;
  raw_.clear();
  marker_length_ = 0;
  ResetCall();
  state_ = after;
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::Invalid(Output* out) {
  if (committed_) {
    // Part of it was streamed already; the whole reply has it as text.
    out->whole_content += raw_;
    ++next_index_;
  } else {
    // Its marker is text; what followed is read again as text.
    EmitContent(out, absl::string_view(raw_).substr(0, marker_length_));
    buf_ = raw_.substr(marker_length_) + buf_.substr(pos_);
    pos_ = 0;
  }
  raw_.clear();
  marker_length_ = 0;
  in_list_ = false;
  ResetCall();
  state_ = kind_ == ToolParserKind::kLlama3Json ? State::kPlainContent : State::kContent;
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::Content(Output* out) {
  const absl::string_view rest = Rest();
  const absl::Span<const absl::string_view> markers = ContentMarkers(kind_);
  size_t first = absl::string_view::npos;
  absl::string_view marker;
  for (absl::string_view m : markers) {
    const size_t at = rest.find(m);
    if (at < first) {
      first = at;
      marker = m;
    }
  }
  if (first == absl::string_view::npos) {
    const size_t settled = rest.size() - PartialMarkerSuffix(rest, markers);
    EmitContent(out, rest.substr(0, settled));
    pos_ += settled;
    return Step::kNeedMore;
  }
  EmitContent(out, rest.substr(0, first));
  pos_ += first;
  StartCall(marker.size(), marker == kHermesOpen      ? State::kObject
                           : marker == kMistralCalls  ? State::kMistralStart
                           : marker == kDeepSeekCallsBegin ? State::kDeepSeekSection
                                                            : State::kDeepSeekType);
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::LlamaStart(Output* out) {
  // A call object, possibly after <|python_tag|>, or text to the end.
  const absl::string_view rest = Rest();
  const size_t space = LeadingWhitespace(rest);
  if (space == rest.size()) return Step::kNeedMore;
  const MarkerMatch tag = MatchMarker(rest.substr(space), kPythonTag);
  if (tag == MarkerMatch::kPartial) return Step::kNeedMore;
  if (tag == MarkerMatch::kFull) {
    StartCall(space + kPythonTag.size(), State::kObject);
  } else if (rest[space] == '{') {
    StartCall(space, State::kObject);
  } else {
    state_ = State::kPlainContent;
  }
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::BetweenCalls(Output* out) {
  const absl::string_view rest = Rest();
  const size_t space = LeadingWhitespace(rest);
  if (space == rest.size()) return Step::kNeedMore;
  const absl::string_view next = rest.substr(space);
  // Llama: another call object, or text to the end.
  if (kind_ == ToolParserKind::kLlama3Json) return LlamaStart(out);
  for (absl::string_view marker : ContentMarkers(kind_)) {
    const MarkerMatch match = MatchMarker(next, marker);
    if (match == MarkerMatch::kPartial) return Step::kNeedMore;
    if (match == MarkerMatch::kFull) {
      pos_ += space;  // whitespace between calls is dropped
      break;
    }
  }
  state_ = State::kContent;
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::ObjectStep(Output* out) {
  if (object_state_ != ObjectState::kSkip) SkipWhitespace();
  const absl::string_view rest = Rest();
  if (rest.empty() && object_state_ != ObjectState::kSkip) return Step::kNeedMore;
  switch (object_state_) {
    case ObjectState::kOpen:
      if (rest[0] != '{') return Invalid(out);
      Consume(1);
      object_state_ = ObjectState::kKeyOrEnd;
      return Step::kProgress;
    case ObjectState::kKeyOrEnd:
    case ObjectState::kKey: {
      if (rest[0] == '}' && object_state_ == ObjectState::kKeyOrEnd) {
        Consume(1);
        return CompleteCall(out, in_list_ ? State::kMistralListNext : State::kAfterCall);
      }
      size_t length = 0;
      const Read read = ReadJsonString(rest, &key_, &length);
      if (read == Read::kNeedMore) return Step::kNeedMore;
      if (read == Read::kBad || (!committed_ && !IsCallKey(key_))) return Invalid(out);
      Consume(length);
      object_state_ = ObjectState::kColon;
      return Step::kProgress;
    }
    case ObjectState::kColon:
      if (rest[0] != ':') return Invalid(out);
      Consume(1);
      object_state_ = ObjectState::kValue;
      return Step::kProgress;
    case ObjectState::kValue: {
      if (key_ == "name" && name_.empty()) {
        size_t length = 0;
        const Read read = ReadJsonString(rest, &name_, &length);
        if (read == Read::kNeedMore) return Step::kNeedMore;
        if (read == Read::kBad || name_.empty()) return Invalid(out);
        Consume(length);
        object_state_ = ObjectState::kCommaOrEnd;
        MaybeCommit(out);
        SendArguments(out);
        return Step::kProgress;
      }
      if (IsArgumentsKey(key_) && !have_arguments_) {
        if (rest[0] == '{') {
          StartArguments(State::kObject);
          return Step::kProgress;
        }
        // Arguments given as a string holding the JSON object.
        std::string text;
        size_t length = 0;
        const Read read = ReadJsonString(rest, &text, &length);
        if (read == Read::kNeedMore) return Step::kNeedMore;
        if (read == Read::kBad || !IsJsonObject(text)) return Invalid(out);
        Consume(length);
        arguments_ = std::move(text);
        have_arguments_ = true;
        object_state_ = ObjectState::kCommaOrEnd;
        MaybeCommit(out);
        return Step::kProgress;
      }
      scanner_.Reset();
      object_state_ = ObjectState::kSkip;
      return Step::kProgress;
    }
    case ObjectState::kSkip:
      for (size_t i = 0; i < rest.size(); ++i) {
        const JsonScanner::Result result = scanner_.Feed(rest[i]);
        if (result == JsonScanner::Result::kMore) continue;
        if (result == JsonScanner::Result::kError) {
          Consume(i);
          return Invalid(out);
        }
        Consume(result == JsonScanner::Result::kDone ? i + 1 : i);
        object_state_ = ObjectState::kCommaOrEnd;
        return Step::kProgress;
      }
      Consume(rest.size());
      return Step::kNeedMore;
    case ObjectState::kCommaOrEnd:
      if (rest[0] == ',') {
        Consume(1);
        object_state_ = ObjectState::kKey;
        return Step::kProgress;
      }
      if (rest[0] != '}') return Invalid(out);
      Consume(1);
      return CompleteCall(out, in_list_ ? State::kMistralListNext : State::kAfterCall);
  }
  return Step::kNeedMore;
}

ToolCallParser::Step ToolCallParser::ArgumentsStart(Output* out) {
  SkipWhitespace();
  const absl::string_view rest = Rest();
  if (rest.empty()) return Step::kNeedMore;
  if (rest[0] != '{') return Invalid(out);
  have_arguments_ = true;
  scanner_.Reset();
  state_ = State::kArguments;
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::Arguments(Output* out) {
  const absl::string_view rest = Rest();
  for (size_t i = 0; i < rest.size(); ++i) {
    const JsonScanner::Result result = scanner_.Feed(rest[i]);
    if (result == JsonScanner::Result::kMore) continue;
    if (result != JsonScanner::Result::kDone) {
      Consume(i);
      return Invalid(out);
    }
    arguments_.append(rest.data(), i + 1);
    Consume(i + 1);
    if (after_arguments_ != State::kObject) return CompleteCall(out, after_arguments_);
    MaybeCommit(out);
    SendArguments(out);
    state_ = State::kObject;
    object_state_ = ObjectState::kCommaOrEnd;
    return Step::kProgress;
  }
  arguments_.append(rest.data(), rest.size());
  Consume(rest.size());
  MaybeCommit(out);
  SendArguments(out);
  return Step::kNeedMore;
}

ToolCallParser::Step ToolCallParser::AfterCall(Output* out) {
  // Hermes: </tool_call>; Llama: ';'. Either may be missing.
  const absl::string_view rest = Rest();
  const size_t space = LeadingWhitespace(rest);
  if (space == rest.size()) return Step::kNeedMore;
  const absl::string_view next = rest.substr(space);
  if (kind_ == ToolParserKind::kHermes) {
    const MarkerMatch close = MatchMarker(next, kHermesClose);
    if (close == MarkerMatch::kPartial) return Step::kNeedMore;
    if (close == MarkerMatch::kFull) Consume(space + kHermesClose.size());
  } else if (next[0] == ';') {
    Consume(space + 1);
  }
  state_ = State::kBetweenCalls;
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::MistralStart() {
  SkipWhitespace();
  const absl::string_view rest = Rest();
  if (rest.empty()) return Step::kNeedMore;
  if (rest[0] == '[') {
    Consume(1);
    in_list_ = true;
    state_ = State::kObject;
  } else {
    state_ = State::kMistralName;
  }
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::MistralName(Output* out) {
  // name[ARGS], or name[CALL_ID]id[ARGS]; once name_ is set, this reads the id.
  const absl::string_view rest = Rest();
  size_t length = 0;
  while (length < rest.size() && IsNameChar(rest[length])) ++length;
  if (length == rest.size()) return length > kMaxLabel ? Invalid(out) : Step::kNeedMore;
  if (length == 0 || rest[length] != '[') return Invalid(out);
  const absl::string_view tail = rest.substr(length);
  const MarkerMatch args = MatchMarker(tail, kMistralArgs);
  const MarkerMatch call_id = name_.empty() ? MatchMarker(tail, kMistralCallId) : MarkerMatch::kNo;
  if (args == MarkerMatch::kPartial || call_id == MarkerMatch::kPartial) return Step::kNeedMore;
  if (args == MarkerMatch::kNo && call_id == MarkerMatch::kNo) return Invalid(out);
  if (name_.empty()) name_ = std::string(rest.substr(0, length));  // else this was the call's id
  Consume(length + (args == MarkerMatch::kFull ? kMistralArgs.size() : kMistralCallId.size()));
  if (args == MarkerMatch::kFull) StartArguments(State::kBetweenCalls);
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::MistralListNext() {
  SkipWhitespace();
  const absl::string_view rest = Rest();
  if (rest.empty()) return Step::kNeedMore;
  if (rest[0] == ',') {
    Consume(1);
    ResetCall();
    state_ = State::kObject;
    return Step::kProgress;
  }
  if (rest[0] == ']') Consume(1);
  in_list_ = false;
  state_ = State::kBetweenCalls;
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::DeepSeekSection(Output* out) {
  SkipWhitespace();
  const absl::string_view rest = Rest();
  const MarkerMatch call = MatchMarker(rest, kDeepSeekCallBegin);
  const MarkerMatch end = MatchMarker(rest, kDeepSeekCallsEnd);
  if (call == MarkerMatch::kFull) {
    Consume(kDeepSeekCallBegin.size());
    state_ = State::kDeepSeekType;
  } else if (end == MarkerMatch::kFull) {
    Consume(kDeepSeekCallsEnd.size());
    raw_.clear();
    marker_length_ = 0;
    state_ = State::kBetweenCalls;
  } else if (call == MarkerMatch::kPartial || end == MarkerMatch::kPartial) {
    return Step::kNeedMore;
  } else {
    return Invalid(out);
  }
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::DeepSeekType(Output* out) {
  const absl::string_view rest = Rest();
  const size_t sep = rest.find(kDeepSeekSep);
  if (sep == absl::string_view::npos) return rest.size() > kMaxLabel ? Invalid(out) : Step::kNeedMore;
  label_ = std::string(absl::StripAsciiWhitespace(rest.substr(0, sep)));
  Consume(sep + kDeepSeekSep.size());
  state_ = State::kDeepSeekName;
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::DeepSeekName(Output* out) {
  const absl::string_view rest = Rest();
  if (rest.empty()) return Step::kNeedMore;
  if (rest[0] == '{') {
    // DeepSeek-V3.1: <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{arguments}
    if (label_.empty()) return Invalid(out);
    name_ = label_;
    StartArguments(State::kDeepSeekAfterArgs);
    return Step::kProgress;
  }
  const size_t newline = rest.find('\n');
  if (newline == absl::string_view::npos) return rest.size() > kMaxLabel ? Invalid(out) : Step::kNeedMore;
  name_ = std::string(absl::StripAsciiWhitespace(rest.substr(0, newline)));
  if (name_.empty()) return Invalid(out);
  Consume(newline + 1);
  state_ = State::kDeepSeekFence;
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::DeepSeekFence(Output* out) {
  SkipWhitespace();
  const absl::string_view rest = Rest();
  const MarkerMatch fence = MatchMarker(rest, kJsonFence);
  if (fence == MarkerMatch::kPartial) return Step::kNeedMore;
  if (fence == MarkerMatch::kFull) {
    Consume(kJsonFence.size());
  } else if (rest[0] != '{') {
    return Invalid(out);
  }
  StartArguments(State::kDeepSeekAfterArgs);
  return Step::kProgress;
}

ToolCallParser::Step ToolCallParser::DeepSeekAfterArgs() {
  // The call is complete; its closing fence and <｜tool▁call▁end｜> are dropped.
  SkipWhitespace();
  const absl::string_view marker = fence_closed_ ? kDeepSeekCallEnd : kFence;
  const MarkerMatch match = MatchMarker(Rest(), marker);
  if (match == MarkerMatch::kPartial) return Step::kNeedMore;
  if (match == MarkerMatch::kFull) Consume(marker.size());
  if (fence_closed_) state_ = State::kDeepSeekSection;
  fence_closed_ = !fence_closed_;
  return Step::kProgress;
}

}  // namespace gantry::text
