// A Jinja template interpreter for model chat templates.
//
// Written here because no C++ Jinja implementation is packaged for Debian
// (Inja and Jinja2Cpp lack namespace(), loop controls or Python string
// methods that real templates use). It covers the subset Hugging Face chat
// templates use: if/elif/else, for (with loop.*, else, if-filter, unpacking),
// set (including namespace attributes and block sets), macro, break/continue,
// filters, tests, Python string/dict/list methods, slicing, and the globals
// transformers provides (raise_exception, strftime_now, namespace, range).
// Rendering follows transformers: trim_blocks and lstrip_blocks on.
#ifndef GANTRY_RUNTIME_TEXT_JINJA_H_
#define GANTRY_RUNTIME_TEXT_JINJA_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace gantry::text::jinja {

struct Stmt;

class Template {
 public:
  // Parses the whole template: an unsupported construct, filter or test, or a
  // syntax error, is INVALID_ARGUMENT naming it and its line.
  static absl::StatusOr<std::unique_ptr<Template>> Parse(const std::string& source);
  ~Template();

  // Renders with `context`'s keys as variables. raise_exception() in the
  // template is INVALID_ARGUMENT with its message; other runtime errors name
  // the line.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;

 private:
  Template();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gantry::text::jinja

#endif  // GANTRY_RUNTIME_TEXT_JINJA_H_
