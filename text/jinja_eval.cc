// Evaluation of the Jinja syntax tree: operators, attribute and method
// access, filters, tests, loops and macros, with Python's semantics where
// Jinja inherits them (chat templates are written against Python Jinja).
#include <algorithm>
#include <cmath>
#include <ctime>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "text/jinja_ast.h"
#include "text/utf8.h"

namespace gantry::text::jinja {
namespace {

[[noreturn]] void Fail(const std::string& message, int line) { throw Error(message, line); }

// Code point boundaries of a UTF-8 string: Python indexes strings by them.
std::vector<size_t> CodePointOffsets(const std::string& s) {
  std::vector<size_t> offsets;
  for (size_t pos = 0; pos < s.size();) {
    offsets.push_back(pos);
    NextCodePoint(s, &pos);
  }
  offsets.push_back(s.size());
  return offsets;
}

bool IsPySpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string Strip(const std::string& s, const Value* chars, bool left, bool right) {
  auto strip_char = [&](char c) {
    return chars && !chars->is_none() && !chars->is_undefined() ? chars->str().find(c) != std::string::npos
                                                                 : IsPySpace(c);
  };
  size_t begin = 0, end = s.size();
  if (left) while (begin < end && strip_char(s[begin])) ++begin;
  if (right) while (end > begin && strip_char(s[end - 1])) --end;
  return s.substr(begin, end - begin);
}

std::vector<Value> Split(const std::string& s, const Value* sep, int64_t max_split) {
  std::vector<Value> parts;
  if (sep == nullptr || sep->is_none() || sep->is_undefined()) {  // runs of whitespace, no empties
    size_t pos = 0;
    while (pos < s.size()) {
      while (pos < s.size() && IsPySpace(s[pos])) ++pos;
      if (pos >= s.size()) break;
      if (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split) {
        std::string rest = s.substr(pos);
        while (!rest.empty() && IsPySpace(rest.back())) rest.pop_back();
        parts.push_back(Value::String(rest));
        return parts;
      }
      size_t end = pos;
      while (end < s.size() && !IsPySpace(s[end])) ++end;
      parts.push_back(Value::String(s.substr(pos, end - pos)));
      pos = end;
    }
    return parts;
  }
  const std::string& delimiter = sep->str();
  if (delimiter.empty()) Fail("split: empty separator", 0);
  size_t start = 0;
  while (true) {
    size_t at = s.find(delimiter, start);
    if (at == std::string::npos || (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split)) break;
    parts.push_back(Value::String(s.substr(start, at - start)));
    start = at + delimiter.size();
  }
  parts.push_back(Value::String(s.substr(start)));
  return parts;
}

std::string Title(const std::string& s, bool only_first) {
  std::string out = s;
  bool start = true;
  for (size_t i = 0; i < out.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(out[i]);
    if (std::isalpha(c)) {
      out[i] = static_cast<char>(start ? std::toupper(c) : std::tolower(c));
      start = false;
    } else if (!only_first) {
      start = true;
    } else if (i == 0) {
      start = false;
    }
    if (only_first && i == 0 && !std::isalpha(c)) start = false;
  }
  return out;
}

std::string Replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) return s;
  std::string out;
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t at = s.find(from, start);
    if (at == std::string::npos) break;
    out.append(s, start, at - start);
    out += to;
    start = at + from.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

std::vector<Value> Iterate(const Value& v, int line) {
  switch (v.kind()) {
    case Value::Kind::kList: return v.items();
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      for (const auto& [key, value] : v.dict().entries) keys.push_back(Value::String(key));
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      auto offsets = CodePointOffsets(v.str());
      for (size_t i = 0; i + 1 < offsets.size(); ++i) {
        chars.push_back(Value::String(v.str().substr(offsets[i], offsets[i + 1] - offsets[i])));
      }
      return chars;
    }
    case Value::Kind::kUndefined:
    case Value::Kind::kNone: return {};
    default: Fail(absl::StrCat("cannot iterate over ", v.TypeName()), line);
  }
}

int64_t Length(const Value& v, int line) {
  switch (v.kind()) {
    case Value::Kind::kString: return static_cast<int64_t>(CodePointOffsets(v.str()).size() - 1);
    case Value::Kind::kList: return static_cast<int64_t>(v.items().size());
    case Value::Kind::kDict: return static_cast<int64_t>(v.dict().entries.size());
    case Value::Kind::kUndefined: return 0;
    default: Fail(absl::StrCat("object of type ", v.TypeName(), " has no length"), line);
  }
}

// By value: callers pass temporaries as `fallback` (found by the fuzzer: a
// reference to one outlived it).
Value Arg(const Arguments& args, size_t index, const char* name, const Value& fallback) {
  if (index < args.positional.size()) return args.positional[index];
  if (const Value* kw = args.Keyword(name)) return *kw;
  return fallback;
}

Value GetAttribute(const Value& object, const std::string& name) {
  if (object.is_dict()) {
    if (const Value* v = object.dict().Find(name)) return *v;
  }
  return Value();
}

Value GetItem(const Value& object, const Value& key, int line) {
  if (object.is_dict()) {
    if (!key.is_string()) return Value();
    if (const Value* v = object.dict().Find(key.str())) return *v;
    return Value();
  }
  if (object.is_list() || object.is_string()) {
    if (!key.is_number()) Fail(absl::StrCat("indices must be integers, not ", key.TypeName()), line);
    int64_t n = Length(object, line), i = key.int_value();
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value();
    if (object.is_list()) return object.items()[i];
    auto offsets = CodePointOffsets(object.str());
    return Value::String(object.str().substr(offsets[i], offsets[i + 1] - offsets[i]));
  }
  return Value();
}

bool Contains(const Value& container, const Value& item, int line) {
  switch (container.kind()) {
    case Value::Kind::kString:
      if (!item.is_string()) Fail("'in <string>' needs a string on the left", line);
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::kList:
      return std::find(container.items().begin(), container.items().end(), item) != container.items().end();
    case Value::Kind::kDict: return item.is_string() && container.dict().Find(item.str()) != nullptr;
    case Value::Kind::kUndefined:
    case Value::Kind::kNone: return false;
    default: Fail(absl::StrCat("argument of type ", container.TypeName(), " is not iterable"), line);
  }
}

bool ApplyTest(const std::string& name, const Value& v, const Arguments& args, int line) {
  const Value none;
  const Value& other = Arg(args, 0, "value", none);
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.kind() == Value::Kind::kInt || v.kind() == Value::Kind::kFloat;
  if (name == "integer") return v.kind() == Value::Kind::kInt;
  if (name == "float") return v.kind() == Value::Kind::kFloat;
  if (name == "boolean") return v.kind() == Value::Kind::kBool;
  if (name == "true") return v.kind() == Value::Kind::kBool && v.bool_value();
  if (name == "false") return v.kind() == Value::Kind::kBool && !v.bool_value();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string();
  if (name == "sequence") return v.is_list() || v.is_string() || v.is_dict();
  if (name == "callable") return v.kind() == Value::Kind::kFunction;
  if (name == "odd") return v.int_value() % 2 != 0;
  if (name == "even") return v.int_value() % 2 == 0;
  if (name == "divisibleby") return other.int_value() != 0 && v.int_value() % other.int_value() == 0;
  if (name == "eq" || name == "equalto" || name == "==") return v == other;
  if (name == "ne" || name == "!=") return v != other;
  if (name == "sameas") return v == other && v.kind() == other.kind();
  if (name == "lt" || name == "lessthan") return LessThan(v, other, line);
  if (name == "gt" || name == "greaterthan") return LessThan(other, v, line);
  if (name == "le") return !LessThan(other, v, line);
  if (name == "ge") return !LessThan(v, other, line);
  if (name == "in") return Contains(other, v, line);
  if (name == "lower") {
    std::string lower = v.str();
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return v.is_string() && lower == v.str();
  }
  if (name == "upper") {
    std::string upper = v.str();
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return v.is_string() && upper == v.str();
  }
  Fail(absl::StrCat("unknown test '", name, "'"), line);
}

const std::set<std::string>& KnownTests() {
  static const std::set<std::string> tests = {
      "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true", "false",
      "mapping", "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq", "equalto", "==",
      "ne", "!=", "sameas", "lt", "lessthan", "gt", "greaterthan", "le", "ge", "in", "lower", "upper"};
  return tests;
}

const std::set<std::string>& KnownFilters() {
  static const std::set<std::string> filters = {
      "trim", "length", "count", "tojson", "join", "upper", "lower", "title", "capitalize", "replace",
      "first", "last", "list", "string", "int", "float", "default", "d", "abs", "round", "reverse", "sort",
      "unique", "map", "select", "reject", "selectattr", "rejectattr", "items", "safe", "escape", "e",
      "indent", "max", "min", "sum", "dictsort", "wordcount", "batch", "center"};
  return filters;
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

Value ApplyFilter(const std::string& name, const Value& v, const Arguments& args, int line);

// select/reject/selectattr/rejectattr and map share their argument shapes.
std::vector<Value> FilterItems(const Value& v, const Arguments& args, bool by_attribute, bool keep, int line) {
  std::vector<Value> out;
  size_t first_arg = by_attribute ? 1 : 0;
  std::string attribute = by_attribute ? Arg(args, 0, "attribute", Value()).ToString() : "";
  std::string test = args.positional.size() > first_arg ? args.positional[first_arg].str() : "";
  Arguments test_args;
  for (size_t i = first_arg + 1; i < args.positional.size(); ++i) test_args.positional.push_back(args.positional[i]);
  for (const Value& item : Iterate(v, line)) {
    Value subject = by_attribute ? GetAttribute(item, attribute) : item;
    bool passes = test.empty() ? subject.Truthy() : ApplyTest(test, subject, test_args, line);
    if (passes == keep) out.push_back(item);
  }
  return out;
}

Value ApplyFilter(const std::string& name, const Value& v, const Arguments& args, int line) {
  const Value undefined;
  if (name == "trim") return Value::String(Strip(v.ToString(), nullptr, true, true));
  if (name == "length" || name == "count") return Value::Int(Length(v, line));
  if (name == "tojson") {
    const Value& indent = Arg(args, 0, "indent", undefined);
    return Value::String(v.ToJson(indent.is_number() ? static_cast<int>(indent.int_value()) : -1));
  }
  if (name == "join") {
    const std::string separator = Arg(args, 0, "d", Value::String("")).ToString();
    const Value& attribute = Arg(args, 1, "attribute", undefined);
    std::vector<std::string> parts;
    for (const Value& item : Iterate(v, line)) {
      parts.push_back(attribute.is_undefined() ? item.ToString() : GetAttribute(item, attribute.ToString()).ToString());
    }
    return Value::String(absl::StrJoin(parts, separator));
  }
  if (name == "upper" || name == "lower") {
    std::string s = v.ToString();
    for (char& c : s) c = static_cast<char>(name == "upper" ? std::toupper(static_cast<unsigned char>(c))
                                                              : std::tolower(static_cast<unsigned char>(c)));
    return Value::String(s);
  }
  if (name == "title") return Value::String(Title(v.ToString(), false));
  if (name == "capitalize") {
    std::string s = v.ToString();
    for (size_t i = 0; i < s.size(); ++i) {
      s[i] = static_cast<char>(i == 0 ? std::toupper(static_cast<unsigned char>(s[i]))
                                      : std::tolower(static_cast<unsigned char>(s[i])));
    }
    return Value::String(s);
  }
  if (name == "replace") {
    const Value& count = Arg(args, 2, "count", undefined);
    return Value::String(Replace(v.ToString(), Arg(args, 0, "old", undefined).ToString(),
                                 Arg(args, 1, "new", undefined).ToString(), count.is_number() ? count.int_value() : -1));
  }
  if (name == "first" || name == "last") {
    std::vector<Value> items = Iterate(v, line);
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return Value::List(Iterate(v, line));
  if (name == "string") return Value::String(v.ToString());
  if (name == "int") {
    if (v.is_number()) return Value::Int(v.int_value());
    try {
      return Value::Int(std::stoll(v.ToString()));
    } catch (...) {
      return Arg(args, 0, "default", Value::Int(0));
    }
  }
  if (name == "float") {
    if (v.is_number()) return Value::Float(v.float_value());
    try {
      return Value::Float(std::stod(v.ToString()));
    } catch (...) {
      return Arg(args, 0, "default", Value::Float(0));
    }
  }
  if (name == "default" || name == "d") {
    const bool boolean = Arg(args, 1, "boolean", Value::Bool(false)).Truthy();
    if (v.is_undefined() || (boolean && !v.Truthy())) return Arg(args, 0, "default_value", Value::String(""));
    return v;
  }
  if (name == "abs") {
    if (v.kind() == Value::Kind::kFloat) return Value::Float(std::fabs(v.float_value()));
    return Value::Int(std::llabs(v.int_value()));
  }
  if (name == "round") {
    const int64_t precision = Arg(args, 0, "precision", Value::Int(0)).int_value();
    const std::string method = Arg(args, 1, "method", Value::String("common")).ToString();
    const double scale = std::pow(10.0, static_cast<double>(precision));
    double x = v.float_value() * scale;
    x = method == "floor" ? std::floor(x) : method == "ceil" ? std::ceil(x) : std::round(x);
    return Value::Float(x / scale);
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::vector<Value> chars = Iterate(v, line);
      std::string out;
      for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += it->str();
      return Value::String(out);
    }
    std::vector<Value> items = Iterate(v, line);
    std::reverse(items.begin(), items.end());
    return Value::List(std::move(items));
  }
  if (name == "sort" || name == "dictsort") {
    std::vector<Value> items;
    if (name == "dictsort") {
      for (const auto& [key, value] : v.dict().entries) items.push_back(Value::List({Value::String(key), value}));
    } else {
      items = Iterate(v, line);
    }
    const bool reverse = Arg(args, 0, "reverse", Value::Bool(false)).Truthy();
    const Value& attribute = Arg(args, 2, "attribute", undefined);
    auto key = [&](const Value& item) {
      if (name == "dictsort") return item.items()[0];
      return attribute.is_undefined() ? item : GetAttribute(item, attribute.ToString());
    };
    std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
      return reverse ? LessThan(key(b), key(a), line) : LessThan(key(a), key(b), line);
    });
    return Value::List(std::move(items));
  }
  if (name == "unique") {
    std::vector<Value> out;
    for (const Value& item : Iterate(v, line)) {
      if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
    }
    return Value::List(std::move(out));
  }
  if (name == "map") {
    std::vector<Value> out;
    const Value* attribute = args.Keyword("attribute");
    for (const Value& item : Iterate(v, line)) {
      if (attribute) {
        Value got = GetAttribute(item, attribute->ToString());
        const Value* fallback = args.Keyword("default");
        out.push_back(got.is_undefined() && fallback ? *fallback : got);
      } else {
        if (args.positional.empty()) Fail("map needs a filter name or attribute=", line);
        Arguments rest;
        rest.positional.assign(args.positional.begin() + 1, args.positional.end());
        out.push_back(ApplyFilter(args.positional[0].str(), item, rest, line));
      }
    }
    return Value::List(std::move(out));
  }
  if (name == "select" || name == "reject") return Value::List(FilterItems(v, args, false, name == "select", line));
  if (name == "selectattr" || name == "rejectattr") {
    return Value::List(FilterItems(v, args, true, name == "selectattr", line));
  }
  if (name == "items") {
    std::vector<Value> out;
    if (v.is_dict()) {
      for (const auto& [key, value] : v.dict().entries) out.push_back(Value::List({Value::String(key), value}));
    }
    return Value::List(std::move(out));
  }
  if (name == "safe") return v;
  if (name == "escape" || name == "e") return Value::String(Escape(v.ToString()));
  if (name == "indent") {
    const Value& width_arg = Arg(args, 0, "width", Value::Int(4));
    const std::string pad = width_arg.is_string() ? width_arg.str() : std::string(width_arg.int_value(), ' ');
    const bool first = Arg(args, 1, "first", Value::Bool(false)).Truthy();
    const bool blank = Arg(args, 2, "blank", Value::Bool(false)).Truthy();
    const Value newline = Value::String("\n");
    std::vector<Value> lines = Split(v.ToString(), &newline, -1);
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) out += "\n";
      const std::string& text = lines[i].str();
      if ((i > 0 || first) && (blank || !text.empty())) out += pad;
      out += text;
    }
    return Value::String(out);
  }
  if (name == "max" || name == "min" || name == "sum") {
    std::vector<Value> items = Iterate(v, line);
    if (name == "sum") {
      Value total = Arg(args, 1, "start", Value::Int(0));
      bool is_float = total.kind() == Value::Kind::kFloat;
      double f = total.float_value();
      int64_t i = total.int_value();
      for (const Value& item : items) {
        is_float |= item.kind() == Value::Kind::kFloat;
        f += item.float_value();
        i += item.int_value();
      }
      return is_float ? Value::Float(f) : Value::Int(i);
    }
    if (items.empty()) return Value();
    auto cmp = [line](const Value& a, const Value& b) { return LessThan(a, b, line); };
    return name == "max" ? *std::max_element(items.begin(), items.end(), cmp)
                         : *std::min_element(items.begin(), items.end(), cmp);
  }
  if (name == "wordcount") return Value::Int(static_cast<int64_t>(Split(v.ToString(), nullptr, -1).size()));
  if (name == "center") {
    const int64_t width = Arg(args, 0, "width", Value::Int(80)).int_value();
    std::string s = v.ToString();
    int64_t total = width - Length(v, line);
    if (total <= 0) return Value::String(s);
    int64_t left = total / 2;
    return Value::String(std::string(left, ' ') + s + std::string(total - left, ' '));
  }
  if (name == "batch") {
    const int64_t size = Arg(args, 0, "linecount", Value::Int(1)).int_value();
    if (size < 1) Fail("batch size must be positive", line);
    std::vector<Value> out, current;
    for (const Value& item : Iterate(v, line)) {
      current.push_back(item);
      if (static_cast<int64_t>(current.size()) == size) out.push_back(Value::List(std::exchange(current, {})));
    }
    if (!current.empty()) out.push_back(Value::List(std::move(current)));
    return Value::List(std::move(out));
  }
  Fail(absl::StrCat("unknown filter '", name, "'"), line);
}

Value CallMethod(const Value& object, const std::string& name, const Arguments& args, int line) {
  const Value undefined;
  if (object.is_string()) {
    const std::string& s = object.str();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const Value* chars = args.positional.empty() ? nullptr : &args.positional[0];
      return Value::String(Strip(s, chars, name != "rstrip", name != "lstrip"));
    }
    if (name == "startswith" || name == "endswith") {
      const Value& arg = Arg(args, 0, "prefix", undefined);
      std::vector<Value> candidates = arg.is_list() ? arg.items() : std::vector<Value>{arg};
      for (const Value& c : candidates) {
        const std::string& p = c.str();
        if (name == "startswith" ? s.compare(0, p.size(), p) == 0
                                 : s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0) {
          return Value::Bool(true);
        }
      }
      return Value::Bool(false);
    }
    if (name == "split" || name == "rsplit") {
      const Value& sep = Arg(args, 0, "sep", Value::None());
      const int64_t max_split = Arg(args, 1, "maxsplit", Value::Int(-1)).int_value();
      if (name == "rsplit" && max_split >= 0) Fail("rsplit with maxsplit is not supported", line);
      return Value::List(Split(s, &sep, max_split));
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      return ApplyFilter(name, object, Arguments{}, line);
    }
    if (name == "replace") {
      const Value& count = Arg(args, 2, "count", undefined);
      return Value::String(Replace(s, Arg(args, 0, "old", undefined).ToString(), Arg(args, 1, "new", undefined).ToString(),
                                   count.is_number() ? count.int_value() : -1));
    }
    if (name == "find") {
      size_t at = s.find(Arg(args, 0, "sub", undefined).ToString());
      return Value::Int(at == std::string::npos ? -1 : static_cast<int64_t>(CodePointOffsets(s.substr(0, at)).size() - 1));
    }
    if (name == "count") {
      const std::string sub = Arg(args, 0, "sub", undefined).ToString();
      if (sub.empty()) return Value::Int(Length(object, line) + 1);
      int64_t n = 0;
      for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
      return Value::Int(n);
    }
    if (name == "join") {
      std::vector<std::string> parts;
      for (const Value& item : Iterate(Arg(args, 0, "iterable", undefined), line)) parts.push_back(item.ToString());
      return Value::String(absl::StrJoin(parts, s));
    }
    if (name == "splitlines") {
      std::vector<Value> lines;
      size_t start = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\n' || s[i] == '\r') {
          lines.push_back(Value::String(s.substr(start, i - start)));
          if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
          start = i + 1;
        }
      }
      if (start < s.size()) lines.push_back(Value::String(s.substr(start)));
      return Value::List(std::move(lines));
    }
    if (name == "removeprefix" || name == "removesuffix") {
      const std::string affix = Arg(args, 0, "prefix", undefined).ToString();
      if (name == "removeprefix" && s.compare(0, affix.size(), affix) == 0) return Value::String(s.substr(affix.size()));
      if (name == "removesuffix" && s.size() >= affix.size() &&
          s.compare(s.size() - affix.size(), affix.size(), affix) == 0) {
        return Value::String(s.substr(0, s.size() - affix.size()));
      }
      return object;
    }
    if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isalnum") {
      if (s.empty()) return Value::Bool(false);
      for (unsigned char c : s) {
        bool ok = name == "isdigit" ? std::isdigit(c) : name == "isalpha" ? std::isalpha(c)
                  : name == "isspace" ? IsPySpace(static_cast<char>(c)) : std::isalnum(c);
        if (!ok) return Value::Bool(false);
      }
      return Value::Bool(true);
    }
  }
  if (object.is_dict()) {
    if (const Value* member = object.dict().Find(name); member && member->kind() == Value::Kind::kFunction) {
      return member->function()(args);
    }
    if (name == "items" || name == "keys" || name == "values") {
      std::vector<Value> out;
      for (const auto& [key, value] : object.dict().entries) {
        if (name == "items") out.push_back(Value::List({Value::String(key), value}));
        if (name == "keys") out.push_back(Value::String(key));
        if (name == "values") out.push_back(value);
      }
      return Value::List(std::move(out));
    }
    if (name == "get") {
      const Value* found = object.dict().Find(Arg(args, 0, "key", undefined).ToString());
      return found ? *found : Arg(args, 1, "default", Value::None());
    }
  }
  if (object.is_list()) {
    if (name == "index") {
      const Value& item = Arg(args, 0, "value", undefined);
      auto it = std::find(object.items().begin(), object.items().end(), item);
      if (it == object.items().end()) Fail(absl::StrCat(item.ToString(), " is not in list"), line);
      return Value::Int(it - object.items().begin());
    }
    if (name == "count") {
      return Value::Int(std::count(object.items().begin(), object.items().end(), Arg(args, 0, "value", undefined)));
    }
  }
  Fail(absl::StrCat(object.TypeName(), " has no method '", name, "'"), line);
}

Value Arithmetic(const std::string& op, const Value& a, const Value& b, int line) {
  const bool floats = a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat;
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      Context::CheckSize(static_cast<double>(a.str().size() + b.str().size()), line);
      return Value::String(a.str() + b.str());
    }
    if (a.is_list() && b.is_list()) {
      std::vector<Value> items = a.items();
      items.insert(items.end(), b.items().begin(), b.items().end());
      return Value::List(std::move(items));
    }
  }
  if (op == "*" && ((a.is_string() || a.is_list()) != (b.is_string() || b.is_list()))) {
    const Value& seq = a.is_string() || a.is_list() ? a : b;
    const int64_t n = (a.is_string() || a.is_list() ? b : a).int_value();
    if (seq.is_string()) {
      Context::CheckSize(static_cast<double>(n) * static_cast<double>(seq.str().size()), line);
      std::string out;
      for (int64_t i = 0; i < n; ++i) out += seq.str();
      return Value::String(out);
    }
    // A list costs at least a word per item: the same cap, in items.
    Context::CheckSize(static_cast<double>(n) * static_cast<double>(seq.items().size()) * 8, line);
    std::vector<Value> out;
    for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
    return Value::List(std::move(out));
  }
  if (!a.is_number() || !b.is_number()) {
    Fail(absl::StrCat("unsupported operand types for ", op, ": ", a.TypeName(), " and ", b.TypeName()), line);
  }
  if (op == "/") {
    if (b.float_value() == 0) Fail("division by zero", line);
    return Value::Float(a.float_value() / b.float_value());
  }
  if (op == "**") {
    double r = std::pow(a.float_value(), b.float_value());
    return floats || b.int_value() < 0 ? Value::Float(r) : Value::Int(static_cast<int64_t>(r));
  }
  if (floats) {
    double x = a.float_value(), y = b.float_value();
    if (op == "+") return Value::Float(x + y);
    if (op == "-") return Value::Float(x - y);
    if (op == "*") return Value::Float(x * y);
    if (y == 0) Fail("division by zero", line);
    if (op == "//") return Value::Float(std::floor(x / y));
    return Value::Float(x - std::floor(x / y) * y);  // %
  }
  int64_t x = a.int_value(), y = b.int_value();
  if (op == "+") return Value::Int(x + y);
  if (op == "-") return Value::Int(x - y);
  if (op == "*") return Value::Int(x * y);
  if (y == 0) Fail("division by zero", line);
  int64_t q = x / y, r = x % y;
  if (r != 0 && ((r < 0) != (y < 0))) {  // Python floors
    --q;
    r += y;
  }
  return op == "//" ? Value::Int(q) : Value::Int(r);
}

// Python slice indices for a sequence of length n.
std::vector<int64_t> SliceIndices(int64_t n, const Value& start_v, const Value& stop_v, const Value& step_v, int line) {
  int64_t step = step_v.is_number() ? step_v.int_value() : 1;
  if (step == 0) Fail("slice step cannot be zero", line);
  auto clamp = [&](const Value& v, int64_t fallback) {
    if (!v.is_number()) return fallback;
    int64_t i = v.int_value();
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  int64_t start = clamp(start_v, step > 0 ? 0 : n - 1);
  int64_t stop = clamp(stop_v, step > 0 ? n : -1);
  std::vector<int64_t> indices;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) indices.push_back(i);
  return indices;
}

}  // namespace

bool IsKnownFilter(const std::string& name) { return KnownFilters().count(name) > 0; }
bool IsKnownTest(const std::string& name) { return KnownTests().count(name) > 0; }

Context::Context() : scopes_(2) {}

Value Context::Lookup(const std::string& name) const {
  for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
    auto found = it->find(name);
    if (found != it->end()) return found->second;
  }
  return Value();
}

void Context::CheckSize(double bytes, int line) {
  if (bytes > static_cast<double>(kMaxStringBytes)) {
    Fail(absl::StrCat("the template builds a string of ", absl::SixDigits(bytes), " bytes, more than the limit of ",
                      kMaxStringBytes),
         line);
  }
}

std::vector<std::map<std::string, Value>> Context::EnterMacro(int line) {
  if (macro_depth_ >= kMaxMacroDepth) {
    Fail(absl::StrCat("macro calls nested deeper than ", kMaxMacroDepth, " levels (a recursive macro?)"), line);
  }
  ++macro_depth_;
  auto saved = scopes_;
  scopes_.resize(2);
  scopes_.emplace_back();
  return saved;
}

void ExecBody(const Body& body, Context& ctx, std::string* out) {
  for (const auto& stmt : body) {
    stmt->Exec(ctx, out);
    Context::CheckSize(static_cast<double>(out->size()), stmt->line);
    if (ctx.signal != Context::LoopSignal::kNone) return;
  }
}

Arguments CallArgs::Eval(Context& ctx) const {
  Arguments args;
  for (const auto& e : positional) args.positional.push_back(e->Eval(ctx));
  for (const auto& [key, e] : keywords) args.keywords.emplace_back(key, e->Eval(ctx));
  return args;
}

Value ListExpr::Eval(Context& ctx) const {
  std::vector<Value> values;
  for (const auto& item : items) values.push_back(item->Eval(ctx));
  return Value::List(std::move(values));
}

Value DictExpr::Eval(Context& ctx) const {
  Value dict = Value::Dict();
  for (const auto& [key, value] : items) dict.dict().Set(key->Eval(ctx).ToString(), value->Eval(ctx));
  return dict;
}

Value Attribute::Eval(Context& ctx) const { return GetAttribute(object->Eval(ctx), name); }

Value Subscript::Eval(Context& ctx) const {
  Value target = object->Eval(ctx);
  if (!is_slice) return GetItem(target, index->Eval(ctx), line);
  Value start_v = start ? start->Eval(ctx) : Value(), stop_v = stop ? stop->Eval(ctx) : Value();
  Value step_v = step ? step->Eval(ctx) : Value();
  if (target.is_list()) {
    std::vector<Value> out;
    for (int64_t i : SliceIndices(static_cast<int64_t>(target.items().size()), start_v, stop_v, step_v, line)) {
      out.push_back(target.items()[i]);
    }
    return Value::List(std::move(out));
  }
  if (target.is_string()) {
    auto offsets = CodePointOffsets(target.str());
    std::string out;
    for (int64_t i : SliceIndices(static_cast<int64_t>(offsets.size()) - 1, start_v, stop_v, step_v, line)) {
      out += target.str().substr(offsets[i], offsets[i + 1] - offsets[i]);
    }
    return Value::String(out);
  }
  if (target.is_undefined() || target.is_none()) return Value();
  Fail(absl::StrCat("cannot slice ", target.TypeName()), line);
}

Value Call::Eval(Context& ctx) const {
  Arguments arguments = args.Eval(ctx);
  if (const auto* attribute = dynamic_cast<const Attribute*>(callee.get())) {
    return CallMethod(attribute->object->Eval(ctx), attribute->name, arguments, line);
  }
  Value function = callee->Eval(ctx);
  if (function.kind() != Value::Kind::kFunction) {
    const auto* name = dynamic_cast<const Name*>(callee.get());
    Fail(absl::StrCat("'", name ? name->name : function.TypeName(), "' is not callable"), line);
  }
  try {
    return function.function()(arguments);
  } catch (const Error& e) {
    if (e.line() != 0) throw;
    throw Error(e.what(), line);
  }
}

Value FilterExpr::Eval(Context& ctx) const { return ApplyFilter(name, input->Eval(ctx), args.Eval(ctx), line); }

Value TestExpr::Eval(Context& ctx) const {
  bool result = ApplyTest(name, input->Eval(ctx), args.Eval(ctx), line);
  return Value::Bool(negated ? !result : result);
}

Value Unary::Eval(Context& ctx) const {
  Value v = operand->Eval(ctx);
  if (op == "not") return Value::Bool(!v.Truthy());
  if (!v.is_number()) Fail(absl::StrCat("bad operand type for unary ", op, ": ", v.TypeName()), line);
  if (op == "+") return v;
  return v.kind() == Value::Kind::kFloat ? Value::Float(-v.float_value()) : Value::Int(-v.int_value());
}

Value Binary::Eval(Context& ctx) const {
  if (op == "and") {
    Value l = left->Eval(ctx);
    return l.Truthy() ? right->Eval(ctx) : l;
  }
  if (op == "or") {
    Value l = left->Eval(ctx);
    return l.Truthy() ? l : right->Eval(ctx);
  }
  Value l = left->Eval(ctx), r = right->Eval(ctx);
  if (op == "~") {
    std::string joined = l.ToString() + r.ToString();
    Context::CheckSize(static_cast<double>(joined.size()), line);
    return Value::String(std::move(joined));
  }
  if (op == "==") return Value::Bool(l == r);
  if (op == "!=") return Value::Bool(l != r);
  if (op == "<") return Value::Bool(LessThan(l, r, line));
  if (op == ">") return Value::Bool(LessThan(r, l, line));
  if (op == "<=") return Value::Bool(!LessThan(r, l, line));
  if (op == ">=") return Value::Bool(!LessThan(l, r, line));
  if (op == "in") return Value::Bool(Contains(r, l, line));
  if (op == "not in") return Value::Bool(!Contains(r, l, line));
  return Arithmetic(op, l, r, line);
}

Value Conditional::Eval(Context& ctx) const {
  if (condition->Eval(ctx).Truthy()) return then_value->Eval(ctx);
  return else_value ? else_value->Eval(ctx) : Value();
}

void OutputStmt::Exec(Context& ctx, std::string* out) const { *out += expr->Eval(ctx).ToString(); }

void IfStmt::Exec(Context& ctx, std::string* out) const {
  for (const auto& [condition, body] : branches) {
    if (condition->Eval(ctx).Truthy()) {
      ExecBody(body, ctx, out);
      return;
    }
  }
  ExecBody(else_body, ctx, out);
}

void ForStmt::Exec(Context& ctx, std::string* out) const {
  std::vector<Value> items = Iterate(iterable->Eval(ctx), line);
  auto bind = [&](const Value& item) {
    if (targets.size() == 1) {
      ctx.Set(targets[0], item);
      return;
    }
    std::vector<Value> parts = Iterate(item, line);
    if (parts.size() != targets.size()) {
      Fail(absl::StrCat("cannot unpack ", parts.size(), " values into ", targets.size(), " names"), line);
    }
    for (size_t i = 0; i < targets.size(); ++i) ctx.Set(targets[i], parts[i]);
  };
  ctx.Push();
  if (filter) {
    std::vector<Value> kept;
    for (const Value& item : items) {
      bind(item);
      if (filter->Eval(ctx).Truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    bind(items[i]);
    Value loop = Value::Dict();
    loop.dict().Set("index", Value::Int(i + 1));
    loop.dict().Set("index0", Value::Int(i));
    loop.dict().Set("revindex", Value::Int(n - i));
    loop.dict().Set("revindex0", Value::Int(n - i - 1));
    loop.dict().Set("first", Value::Bool(i == 0));
    loop.dict().Set("last", Value::Bool(i == n - 1));
    loop.dict().Set("length", Value::Int(n));
    loop.dict().Set("previtem", i > 0 ? items[i - 1] : Value());
    loop.dict().Set("nextitem", i + 1 < n ? items[i + 1] : Value());
    loop.dict().Set("cycle", Value::Func([i](const Arguments& args) {
      if (args.positional.empty()) return Value();
      return args.positional[static_cast<size_t>(i) % args.positional.size()];
    }));
    ctx.Set("loop", loop);
    ExecBody(body, ctx, out);
    if (ctx.signal == Context::LoopSignal::kBreak) {
      ctx.signal = Context::LoopSignal::kNone;
      break;
    }
    ctx.signal = Context::LoopSignal::kNone;
  }
  ctx.Pop();
  if (n == 0) ExecBody(else_body, ctx, out);
}

void SetStmt::Exec(Context& ctx, std::string* out) const {
  Value v;
  if (value) {
    v = value->Eval(ctx);
  } else {
    std::string captured;
    ExecBody(body, ctx, &captured);
    v = Value::String(captured);
  }
  if (!attribute.empty()) {
    Value target = ctx.Lookup(targets[0]);
    if (!target.is_namespace()) {
      Fail(absl::StrCat("cannot set attribute '", attribute, "' on ", targets[0], ": not a namespace"), line);
    }
    target.dict().Set(attribute, std::move(v));
    return;
  }
  if (targets.size() == 1) {
    ctx.Set(targets[0], std::move(v));
    return;
  }
  std::vector<Value> parts = Iterate(v, line);
  if (parts.size() != targets.size()) {
    Fail(absl::StrCat("cannot unpack ", parts.size(), " values into ", targets.size(), " names"), line);
  }
  for (size_t i = 0; i < targets.size(); ++i) ctx.Set(targets[i], parts[i]);
}

void MacroStmt::Exec(Context& ctx, std::string*) const {
  const MacroStmt* self = this;
  Context* context = &ctx;
  ctx.Set(name, Value::Func([self, context](const Arguments& args) {
    auto saved = context->EnterMacro(self->line);
    for (size_t i = 0; i < self->params.size(); ++i) {
      const auto& [param, fallback] = self->params[i];
      if (i < args.positional.size()) {
        context->Set(param, args.positional[i]);
      } else if (const Value* kw = args.Keyword(param)) {
        context->Set(param, *kw);
      } else {
        context->Set(param, fallback ? fallback->Eval(*context) : Value());
      }
    }
    std::string out;
    try {
      ExecBody(self->body, *context, &out);
    } catch (...) {
      context->LeaveMacro(std::move(saved));
      throw;
    }
    context->LeaveMacro(std::move(saved));
    return Value::String(out);
  }));
}

}  // namespace gantry::text::jinja
