#include "scheduler/error_reason.h"

#include "absl/strings/cord.h"

namespace gantry {
namespace {

constexpr absl::string_view kPayloadUrl = "type.gantry.dev/error_reason";

}  // namespace

const char* ErrorReasonName(ErrorReason reason) {
  switch (reason) {
    case ErrorReason::kQueueFull: return "QUEUE_FULL";
    case ErrorReason::kKvCapacity: return "KV_CAPACITY";
    case ErrorReason::kMemoryBudget: return "MEMORY_BUDGET";
    case ErrorReason::kContextLength: return "CONTEXT_LENGTH";
    case ErrorReason::kModelLoadFailed: return "MODEL_LOAD_FAILED";
    case ErrorReason::kModelNotFound: return "MODEL_NOT_FOUND";
    case ErrorReason::kShuttingDown: return "SHUTTING_DOWN";
    case ErrorReason::kDeviceMemory: return "DEVICE_MEMORY";
    case ErrorReason::kInvalidRequest: return "INVALID_REQUEST";
    case ErrorReason::kUnsupported: return "UNSUPPORTED";
    case ErrorReason::kUnauthenticated: return "UNAUTHENTICATED";
    case ErrorReason::kPermissionDenied: return "PERMISSION_DENIED";
  }
  return "UNKNOWN";
}

absl::Status WithReason(absl::Status status, ErrorReason reason) {
  if (!status.ok()) status.SetPayload(kPayloadUrl, absl::Cord(ErrorReasonName(reason)));
  return status;
}

std::optional<std::string> ReasonOf(const absl::Status& status) {
  auto payload = status.GetPayload(kPayloadUrl);  // absl::optional<absl::Cord>
  if (!payload) return std::nullopt;
  return std::string(*payload);
}

std::string ReasonOrCode(const absl::Status& status) {
  if (auto reason = ReasonOf(status)) return *reason;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange: return ErrorReasonName(ErrorReason::kInvalidRequest);
    case absl::StatusCode::kFailedPrecondition: return ErrorReasonName(ErrorReason::kUnsupported);
    case absl::StatusCode::kUnavailable: return "UNAVAILABLE";
    default: return absl::StatusCodeToString(status.code());  // e.g. NOT_FOUND, INTERNAL, CANCELLED
  }
}

}  // namespace gantry
