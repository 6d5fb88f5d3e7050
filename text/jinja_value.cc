#include "text/jinja_value.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace gantry::text::jinja {

const Value* Arguments::Keyword(const std::string& name) const {
  for (const auto& [key, value] : keywords) {
    if (key == name) return &value;
  }
  return nullptr;
}

const Value* Dict::Find(const std::string& key) const {
  for (const auto& [k, v] : entries) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Dict::Set(const std::string& key, Value value) {
  for (auto& [k, v] : entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(key, std::move(value));
}

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}
Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.b_ = b;
  return v;
}
Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.i_ = i;
  return v;
}
Value Value::Float(double f) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.f_ = f;
  return v;
}
Value Value::String(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.s_ = std::move(s);
  return v;
}
Value Value::List(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::kList;
  v.list_ = std::make_shared<std::vector<Value>>(std::move(items));
  return v;
}
Value Value::Dict(bool is_namespace) {
  Value v;
  v.kind_ = Kind::kDict;
  v.dict_ = std::make_shared<jinja::Dict>();
  v.dict_->is_namespace = is_namespace;
  return v;
}
Value Value::Func(Function f) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.function_ = std::move(f);
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::json::value_t::null: return None();
    case nlohmann::json::value_t::boolean: return Bool(json.get<bool>());
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return Int(json.get<int64_t>());
    case nlohmann::json::value_t::number_float: return Float(json.get<double>());
    case nlohmann::json::value_t::string: return String(json.get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      for (const auto& item : json) items.push_back(FromJson(item));
      return List(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Value dict = Dict();
      for (const auto& [key, item] : json.items()) dict.dict().Set(key, FromJson(item));
      return dict;
    }
    default: return Value();
  }
}

bool Value::is_namespace() const { return kind_ == Kind::kDict && dict_->is_namespace; }

int64_t Value::int_value() const {
  if (kind_ == Kind::kFloat) return static_cast<int64_t>(f_);
  if (kind_ == Kind::kBool) return b_ ? 1 : 0;
  return i_;
}

double Value::float_value() const {
  if (kind_ == Kind::kFloat) return f_;
  return static_cast<double>(int_value());
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return b_;
    case Kind::kInt: return i_ != 0;
    case Kind::kFloat: return f_ != 0.0;
    case Kind::kString: return !s_.empty();
    case Kind::kList: return !list_->empty();
    case Kind::kDict: return !dict_->entries.empty();
    case Kind::kFunction: return true;
  }
  return false;
}

namespace {

std::string FloatRepr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  // Shortest representation that round-trips, as Python's repr.
  char buffer[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, f);
    if (std::strtod(buffer, nullptr) == f) break;
  }
  std::string text = buffer;
  if (text.find_first_of(".eni") == std::string::npos) text += ".0";
  return text;
}

std::string QuoteJson(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof(buffer), "\\u%04x", c);
          out += buffer;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  return out + "\"";
}

// Python's repr() of a string inside a list or dict.
std::string QuotePython(const std::string& s) {
  const char quote = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
  std::string out(1, quote);
  for (char c : s) {
    if (c == quote || c == '\\') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out + quote;
}

std::string Repr(const Value& v) { return v.is_string() ? QuotePython(v.str()) : v.ToString(); }

}  // namespace

std::string Value::ToString() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return b_ ? "True" : "False";
    case Kind::kInt: return std::to_string(i_);
    case Kind::kFloat: return FloatRepr(f_);
    case Kind::kString: return s_;
    case Kind::kList: {
      std::string out = "[";
      for (size_t i = 0; i < list_->size(); ++i) out += (i ? ", " : "") + Repr((*list_)[i]);
      return out + "]";
    }
    case Kind::kDict: {
      std::string out = "{";
      for (size_t i = 0; i < dict_->entries.size(); ++i) {
        out += (i ? ", " : "") + QuotePython(dict_->entries[i].first) + ": " + Repr(dict_->entries[i].second);
      }
      return out + "}";
    }
    case Kind::kFunction: return "<function>";
  }
  return "";
}

std::string Value::ToJson(int indent, int depth) const {
  const std::string item_separator = indent >= 0 ? "," : ", ";
  const std::string pad = indent >= 0 ? "\n" + std::string(static_cast<size_t>(indent * (depth + 1)), ' ') : "";
  const std::string close_pad = indent >= 0 ? "\n" + std::string(static_cast<size_t>(indent * depth), ' ') : "";
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return "null";
    case Kind::kBool: return b_ ? "true" : "false";
    case Kind::kInt: return std::to_string(i_);
    case Kind::kFloat: return std::isfinite(f_) ? FloatRepr(f_) : (std::isnan(f_) ? "NaN" : f_ > 0 ? "Infinity" : "-Infinity");
    case Kind::kString: return QuoteJson(s_);
    case Kind::kList: {
      if (list_->empty()) return "[]";
      std::string out = "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        out += (i ? item_separator : "") + pad + (*list_)[i].ToJson(indent, depth + 1);
      }
      return out + close_pad + "]";
    }
    case Kind::kDict: {
      if (dict_->entries.empty()) return "{}";
      std::string out = "{";
      for (size_t i = 0; i < dict_->entries.size(); ++i) {
        out += (i ? item_separator : "") + pad + QuoteJson(dict_->entries[i].first) + ": " +
               dict_->entries[i].second.ToJson(indent, depth + 1);
      }
      return out + close_pad + "}";
    }
    case Kind::kFunction: return "null";
  }
  return "null";
}

std::string Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined: return "undefined";
    case Kind::kNone: return "none";
    case Kind::kBool: return "boolean";
    case Kind::kInt: return "integer";
    case Kind::kFloat: return "float";
    case Kind::kString: return "string";
    case Kind::kList: return "list";
    case Kind::kDict: return is_namespace() ? "namespace" : "dict";
    case Kind::kFunction: return "function";
  }
  return "?";
}

bool operator==(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Value::Kind::kFloat || b.kind() == Value::Kind::kFloat) return a.float_value() == b.float_value();
    return a.int_value() == b.int_value();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone: return true;
    case Value::Kind::kString: return a.str() == b.str();
    case Value::Kind::kList: return a.items() == b.items();
    case Value::Kind::kDict: {
      if (a.dict().entries.size() != b.dict().entries.size()) return false;
      for (const auto& [key, value] : a.dict().entries) {
        const Value* other = b.dict().Find(key);
        if (other == nullptr || *other != value) return false;
      }
      return true;
    }
    default: return false;
  }
}

bool LessThan(const Value& a, const Value& b, int line) {
  if (a.is_number() && b.is_number()) return a.float_value() < b.float_value();
  if (a.is_string() && b.is_string()) return a.str() < b.str();
  if (a.is_list() && b.is_list()) {
    return std::lexicographical_compare(a.items().begin(), a.items().end(), b.items().begin(), b.items().end(),
                                        [line](const Value& x, const Value& y) { return LessThan(x, y, line); });
  }
  throw Error(absl::StrCat("cannot compare ", a.TypeName(), " with ", b.TypeName()), line);
}

}  // namespace gantry::text::jinja
