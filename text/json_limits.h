// JSON from clients with its nesting (containers inside containers) bounded. nlohmann's parser is iterative,
// but copying, converting (jinja::Value::FromJson) and walking a parsed value
// recurse once per level: a 40 KB request nested 20,000 deep would overflow
// the stack and take the whole process down. Elements deeper than the limit
// are dropped while parsing (never built) and the parse is refused.
#ifndef GANTRY_RUNTIME_TEXT_JSON_LIMITS_H_
#define GANTRY_RUNTIME_TEXT_JSON_LIMITS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace gantry::text {

// Deep enough for any real request (tool schemas nest a few dozen levels).
inline constexpr int kMaxJsonDepth = 100;

// Json is nlohmann::json or nlohmann::ordered_json. `what` names the input in
// errors ("tools_json", "request body").
template <typename Json>
absl::StatusOr<Json> ParseJsonLimited(absl::string_view text, absl::string_view what,
                                      int max_depth = kMaxJsonDepth) {
  bool too_deep = false;
  using Event = typename Json::parse_event_t;
  typename Json::parser_callback_t keep = [&](int depth, Event event, Json&) {
    // `depth` counts the containers around the event's element: an array or
    // object opening at depth max_depth is the (max_depth + 1)-th level.
    if ((event == Event::array_start || event == Event::object_start) && depth >= max_depth) too_deep = true;
    return !too_deep;
  };
  Json value = Json::parse(text.begin(), text.end(), keep, /*allow_exceptions=*/false);
  if (too_deep) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is nested deeper than ", max_depth, " levels"));
  }
  if (value.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(what, " is not valid JSON"));
  return value;
}

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_JSON_LIMITS_H_
