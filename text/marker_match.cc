#include "text/marker_match.h"

#include <algorithm>

#include "absl/strings/match.h"

namespace gantry::text {

MarkerMatch MatchMarker(absl::string_view text, absl::string_view marker) {
  if (absl::StartsWith(text, marker)) return MarkerMatch::kFull;
  if (text.size() < marker.size() && absl::StartsWith(marker, text)) return MarkerMatch::kPartial;
  return MarkerMatch::kNo;
}

size_t PartialMarkerSuffix(absl::string_view text, absl::Span<const absl::string_view> markers) {
  size_t longest = 0;
  for (absl::string_view marker : markers) {
    for (size_t n = std::min(text.size(), marker.size() - 1); n > longest; --n) {
      if (absl::StartsWith(marker, text.substr(text.size() - n))) {
        longest = n;
        break;
      }
    }
  }
  return longest;
}

size_t LeadingWhitespace(absl::string_view text) {
  size_t n = 0;
  while (n < text.size() && (text[n] == ' ' || text[n] == '\t' || text[n] == '\n' || text[n] == '\r')) ++n;
  return n;
}

}  // namespace gantry::text
