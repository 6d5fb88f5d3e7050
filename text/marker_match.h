// Matching literal markers (special-token texts such as <think> or
// [TOOL_CALLS]) in streamed text, where a chunk may end inside a marker.
#ifndef GANTRY_TEXT_MARKER_MATCH_H_
#define GANTRY_TEXT_MARKER_MATCH_H_

#include <cstddef>
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace gantry::text {

enum class MarkerMatch {
  kNo,       // `text` does not start with the marker
  kPartial,  // `text` is a proper prefix of the marker: more text decides
  kFull,     // `text` starts with the marker
};
MarkerMatch MatchMarker(absl::string_view text, absl::string_view marker);

// The length of the longest suffix of `text` that is a proper prefix of one
// of `markers`: the part that must wait, since it may begin a marker.
size_t PartialMarkerSuffix(absl::string_view text, absl::Span<const absl::string_view> markers);

// The number of leading JSON whitespace bytes (space, tab, CR, LF) in `text`.
size_t LeadingWhitespace(absl::string_view text);

}  // namespace gantry::text

#endif  // GANTRY_TEXT_MARKER_MATCH_H_
