// A compiled PCRE2 pattern (UTF-8, Unicode properties, JIT). PCRE2 rather than
// RE2 or std::regex: tokenizer patterns need \p{L}-style classes and look-ahead
// such as \s+(?!\S), which RE2 rejects and std::regex lacks.
#ifndef GANTRY_RUNTIME_TEXT_REGEX_H_
#define GANTRY_RUNTIME_TEXT_REGEX_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gantry::text {

class Regex {
 public:
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(const std::string& pattern);
  ~Regex();

  // Non-overlapping matches, left to right, as [begin, end) byte ranges.
  // Empty matches are skipped. `text` must be valid UTF-8.
  std::vector<std::pair<size_t, size_t>> FindAll(absl::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_REGEX_H_
