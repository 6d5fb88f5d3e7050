#include "text/reasoning_parser.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "text/marker_match.h"

namespace gantry::text {
namespace {

constexpr absl::string_view kThinkOpen = "<think>";
constexpr absl::string_view kThinkClose = "</think>";

}  // namespace

absl::StatusOr<ReasoningParserKind> ReasoningParserFromName(absl::string_view name) {
  if (name.empty() || name == "none") return ReasoningParserKind::kNone;
  if (name == "qwen3" || name == "deepseek_r1" || name == "think") return ReasoningParserKind::kThinkTags;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown reasoning parser '", name, "'; known: none, qwen3, deepseek_r1, think"));
}

ReasoningParserKind DetectReasoningParser(absl::string_view chat_template) {
  return absl::StrContains(chat_template, kThinkOpen) && absl::StrContains(chat_template, kThinkClose)
             ? ReasoningParserKind::kThinkTags
             : ReasoningParserKind::kNone;
}

bool PromptEndsInReasoning(absl::string_view prompt, ReasoningParserKind kind) {
  if (kind != ReasoningParserKind::kThinkTags) return false;
  return absl::EndsWith(absl::StripTrailingAsciiWhitespace(prompt), kThinkOpen);
}

ReasoningSplitter::ReasoningSplitter(ReasoningParserKind kind, bool starts_in_reasoning)
    : state_(kind == ReasoningParserKind::kNone ? State::kReply : State::kOpening),
      starts_in_reasoning_(starts_in_reasoning && kind != ReasoningParserKind::kNone) {}

void ReasoningSplitter::Feed(absl::string_view text, std::string* reasoning, std::string* reply) {
  if (state_ == State::kReply) {
    absl::StrAppend(reply, text);
    return;
  }
  absl::StrAppend(&held_, text);
  absl::string_view rest = held_;
  bool progress = true;
  while (progress) {
    progress = false;
    switch (state_) {
      case State::kOpening: {
        const size_t space = LeadingWhitespace(rest);
        const MarkerMatch match = MatchMarker(rest.substr(space), kThinkOpen);
        if (match == MarkerMatch::kFull) {
          rest.remove_prefix(space + kThinkOpen.size());
          state_ = State::kReasoning;
          progress = true;
        } else if (match == MarkerMatch::kNo) {
          state_ = starts_in_reasoning_ ? State::kReasoning : State::kReply;
          progress = true;
        }
        break;
      }
      case State::kReasoning: {
        const size_t close = rest.find(kThinkClose);
        if (close != absl::string_view::npos) {
          absl::StrAppend(reasoning, rest.substr(0, close));
          rest.remove_prefix(close + kThinkClose.size());
          state_ = State::kAfterClose;
          progress = true;
        } else {
          const size_t keep = PartialMarkerSuffix(rest, {kThinkClose});
          absl::StrAppend(reasoning, rest.substr(0, rest.size() - keep));
          rest.remove_prefix(rest.size() - keep);
        }
        break;
      }
      case State::kAfterClose: {
        size_t newlines = 0;
        while (newlines < rest.size() && rest[newlines] == '\n') ++newlines;
        rest.remove_prefix(newlines);
        if (!rest.empty()) {
          state_ = State::kReply;
          progress = true;
        }
        break;
      }
      case State::kReply:
        absl::StrAppend(reply, rest);
        rest = {};
        break;
    }
  }
  held_ = std::string(rest);
}

void ReasoningSplitter::Finish(std::string* reasoning, std::string* reply) {
  if (state_ == State::kReasoning || (state_ == State::kOpening && starts_in_reasoning_)) {
    absl::StrAppend(reasoning, held_);
  } else if (state_ != State::kAfterClose) {
    absl::StrAppend(reply, held_);
  }
  held_.clear();
  state_ = State::kReply;
}

}  // namespace gantry::text
