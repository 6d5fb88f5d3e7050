// Machine-readable reasons for refusals. A Status that clients act on
// carries one as a payload; the server sends it as a google.rpc.ErrorInfo in
// the gRPC status details, and the adapter picks HTTP codes from it, so no
// client ever parses a message. Torch- and gRPC-free: the scheduler sets
// reasons where refusals arise.
#ifndef GANTRY_SCHEDULER_ERROR_REASON_H_
#define GANTRY_SCHEDULER_ERROR_REASON_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gantry {

enum class ErrorReason {
  kQueueFull,        // the model's queue is full: retry later
  kKvCapacity,       // prompt plus max_tokens needs more KV blocks than the model has
  kMemoryBudget,     // the model does not fit the device's memory budget now
  kContextLength,    // prompt plus max_tokens exceeds the model's context
  kModelLoadFailed,  // loading the model failed (its files, or the device)
  kModelNotFound,    // no such model in the catalogue
  kShuttingDown,     // the server or the model is going away
  kDeviceMemory,     // the device ran out of memory running the request
  kInvalidRequest,   // a field is malformed or out of range (the message names it)
  kUnsupported,      // the model cannot do what was asked (e.g. no tokenizer for text)
  kUnauthenticated,  // no or unknown bearer token
  kPermissionDenied, // the token may not do this (e.g. unload without an admin token)
};

// The wire name, e.g. "QUEUE_FULL".
const char* ErrorReasonName(ErrorReason reason);
inline constexpr absl::string_view kErrorDomain = "gantry.dev";

// `status` with `reason` attached (replacing any earlier one); OK stays OK.
absl::Status WithReason(absl::Status status, ErrorReason reason);
// The reason attached to `status`, by wire name; nullopt when none is.
std::optional<std::string> ReasonOf(const absl::Status& status);
// The reason attached, or one derived from the status code when none is
// (INVALID_ARGUMENT -> INVALID_REQUEST, NOT_FOUND -> NOT_FOUND, ...): every
// refusal has one.
std::string ReasonOrCode(const absl::Status& status);

}  // namespace gantry

#endif  // GANTRY_SCHEDULER_ERROR_REASON_H_
