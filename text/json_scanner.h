// Finds where a JSON value ends in streamed text, one byte at a time, and
// checks its syntax on the way (strings, escapes, nesting, literals; numbers
// only by their characters). The tool-call parsers use it to stream a call's
// arguments without reading past them.
#ifndef GANTRY_TEXT_JSON_SCANNER_H_
#define GANTRY_TEXT_JSON_SCANNER_H_

#include <vector>

#include "absl/strings/string_view.h"

namespace gantry::text {

class JsonScanner {
 public:
  enum class Result {
    kMore,        // the byte belongs to the value, which goes on
    kDone,        // the byte ends the value (a closing bracket or quote, a literal's last letter)
    kDoneBefore,  // a top-level number ended before this byte, which is not part of it
    kError,       // the byte cannot continue a JSON value
  };

  // Starts over: the next byte is the first of a value (no leading whitespace).
  void Reset();
  Result Feed(char c);

 private:
  enum class Expect { kKeyOrClose, kKey, kColon, kValueOrClose, kValue, kCommaOrClose };
  struct Frame {
    bool object;
    Expect expect;
  };

  Result StartValue(char c);
  Result ValueEnded() const { return stack_.empty() ? Result::kDone : Result::kMore; }

  std::vector<Frame> stack_;
  bool in_string_ = false;
  bool escape_ = false;
  int hex_left_ = 0;
  bool in_number_ = false;
  absl::string_view literal_rest_;  // the letters a literal (true, false, null) still needs
};

}  // namespace gantry::text

#endif  // GANTRY_TEXT_JSON_SCANNER_H_
