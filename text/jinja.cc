#include "text/jinja.h"

#include <ctime>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "text/jinja_ast.h"
#include "text/jinja_lexer.h"
#include "text/jinja_parser.h"

namespace gantry::text::jinja {
namespace {

// raise_exception() from the template: the input is what is wrong.
class RaisedException : public Error {
 public:
  explicit RaisedException(const std::string& message) : Error(message, 0) {}
};

void InstallGlobals(Context& ctx) {
  ctx.SetGlobal("raise_exception", Value::Func([](const Arguments& args) -> Value {
    throw RaisedException(args.positional.empty() ? "raise_exception" : args.positional[0].ToString());
  }));
  ctx.SetGlobal("strftime_now", Value::Func([](const Arguments& args) {
    std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buffer[256];
    const std::string format = args.positional.empty() ? "%Y-%m-%d" : args.positional[0].ToString();
    size_t n = std::strftime(buffer, sizeof(buffer), format.c_str(), &local);
    return Value::String(std::string(buffer, n));
  }));
  ctx.SetGlobal("namespace", Value::Func([](const Arguments& args) {
    Value ns = Value::Dict(/*is_namespace=*/true);
    for (const Value& positional : args.positional) {
      if (positional.is_dict()) {
        for (const auto& [key, value] : positional.dict().entries) ns.dict().Set(key, value);
      }
    }
    for (const auto& [key, value] : args.keywords) ns.dict().Set(key, value);
    return ns;
  }));
  ctx.SetGlobal("range", Value::Func([](const Arguments& args) {
    int64_t start = 0, stop = 0, step = 1;
    if (args.positional.size() == 1) {
      stop = args.positional[0].int_value();
    } else if (args.positional.size() >= 2) {
      start = args.positional[0].int_value();
      stop = args.positional[1].int_value();
      if (args.positional.size() >= 3) step = args.positional[2].int_value();
    }
    if (step == 0) throw Error("range() step must not be zero", 0);
    std::vector<Value> out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      out.push_back(Value::Int(i));
      if (out.size() > 1000000) throw Error("range() too large", 0);
    }
    return Value::List(std::move(out));
  }));
  ctx.SetGlobal("dict", Value::Func([](const Arguments& args) {
    Value dict = Value::Dict();
    for (const auto& [key, value] : args.keywords) dict.dict().Set(key, value);
    return dict;
  }));
}

}  // namespace

struct Template::Impl {
  Body body;
};

Template::Template() : impl_(std::make_unique<Impl>()) {}
Template::~Template() = default;

absl::StatusOr<std::unique_ptr<Template>> Template::Parse(const std::string& source) {
  std::unique_ptr<Template> t(new Template());
  try {
    t->impl_->body = jinja::Parse(Tokenize(source));
  } catch (const Error& e) {
    std::string message = e.what();
    if (message.find(" at line ") == std::string::npos) absl::StrAppend(&message, " at line ", e.line());
    return absl::InvalidArgumentError(absl::StrCat("chat template: ", message));
  } catch (const std::exception& e) {
    // A library call the parser makes on the template's text (a number
    // literal out of range, say): still the template's error, never the
    // process's end.
    return absl::InvalidArgumentError(absl::StrCat("chat template: ", e.what()));
  }
  return t;
}

absl::StatusOr<std::string> Template::Render(const nlohmann::ordered_json& context) const {
  Context ctx;
  InstallGlobals(ctx);
  if (context.is_object()) {
    for (const auto& [key, value] : context.items()) ctx.SetGlobal(key, Value::FromJson(value));
  }
  std::string out;
  try {
    ExecBody(impl_->body, ctx, &out);
  } catch (const RaisedException& e) {
    return absl::InvalidArgumentError(e.what());
  } catch (const Error& e) {
    return absl::InvalidArgumentError(absl::StrCat("chat template error at line ", e.line(), ": ", e.what()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("chat template error: ", e.what()));
  }
  return out;
}

}  // namespace gantry::text::jinja
