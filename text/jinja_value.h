// Values of the Jinja interpreter (text/jinja.h): Python-like
// semantics for truthiness, equality, str() and tojson.
#ifndef GANTRY_TEXT_JINJA_VALUE_H_
#define GANTRY_TEXT_JINJA_VALUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "nlohmann/json_fwd.hpp"

namespace gantry::text::jinja {

// A template error; `line` is 1-based, 0 when unknown.
class Error : public std::runtime_error {
 public:
  Error(const std::string& message, int line) : std::runtime_error(message), line_(line) {}
  int line() const { return line_; }

 private:
  int line_;
};

class Value;
struct Dict;

struct Arguments {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
  const Value* Keyword(const std::string& name) const;
};

using Function = std::function<Value(const Arguments&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() = default;  // undefined
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double f);
  static Value String(std::string s);
  static Value List(std::vector<Value> items = {});
  static Value Dict(bool is_namespace = false);
  static Value Func(Function f);
  static Value FromJson(const nlohmann::ordered_json& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_namespace() const;

  bool bool_value() const { return b_; }
  int64_t int_value() const;
  double float_value() const;
  const std::string& str() const { return s_; }
  std::vector<Value>& items() const { return *list_; }
  jinja::Dict& dict() const { return *dict_; }
  const Function& function() const { return function_; }

  bool Truthy() const;
  std::string ToString() const;  // Python's str()
  // Python's json.dumps(ensure_ascii=False) with the given indent (< 0: none).
  std::string ToJson(int indent = -1, int depth = 0) const;
  std::string TypeName() const;

  friend bool operator==(const Value& a, const Value& b);
  friend bool operator!=(const Value& a, const Value& b) { return !(a == b); }

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;
  std::shared_ptr<std::vector<Value>> list_;
  std::shared_ptr<jinja::Dict> dict_;
  Function function_;
};

// Insertion-ordered string-keyed mapping (JSON objects keep their order).
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;
  bool is_namespace = false;
  const Value* Find(const std::string& key) const;
  void Set(const std::string& key, Value value);
};

// Python ordering for sort/min/max and < > comparisons; throws on mixed types.
bool LessThan(const Value& a, const Value& b, int line);

}  // namespace gantry::text::jinja

#endif  // GANTRY_TEXT_JINJA_VALUE_H_
