// JSON Schema -> grammar IR (json_schema.h says what the output looks like).
#include "text/guided/json_schema.h"

#include <cmath>
#include <functional>
#include <map>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "text/guided/regex_grammar.h"
#include "text/guided/utf8_ranges.h"
#include "text/json_limits.h"
#include "text/utf8.h"

namespace gantry::guided::internal {
namespace {

using Json = nlohmann::ordered_json;

constexpr int kMaxIntegerDigits = 16;
constexpr int kMaxFractionDigits = 16;
constexpr int kMaxExponentDigits = 2;
constexpr int64_t kMaxAbsInteger = 9999999999999999;  // 16 digits

// Unescaped string characters: any code point but '"', '\' and controls.
CodePointSet PlainStringChars() {
  CodePointSet special;
  special.Add(0, 0x1F);
  special.Add('"', '"');
  special.Add('\\', '\\');
  return special.Complement();
}

ExprPtr Digit() { return ByteRange('0', '9'); }
ExprPtr HexDigit() {
  ByteSet s;
  for (int c = '0'; c <= '9'; ++c) s.set(c);
  for (int c = 'a'; c <= 'f'; ++c) s.set(c), s.set(c - 32);
  return Bytes(s);
}
ExprPtr OneOf(absl::string_view chars) {
  ByteSet s;
  for (unsigned char c : chars) s.set(c);
  return Bytes(s);
}

// One string character: a plain code point or one escape.
ExprPtr StringChar() {
  ExprPtr hex = HexDigit();
  // \uXXXX outside D800-DFFF, so one escape is one code point.
  ExprPtr non_surrogate = Alt({Seq({OneOf("0123456789abcABC"), hex, hex, hex}), Seq({OneOf("dD"), ByteRange('0', '7'), hex, hex}),
                               Seq({OneOf("efEF"), hex, hex, hex})});
  return Alt({Utf8Class(PlainStringChars()),
              Seq({Literal("\\"), Alt({OneOf("\"\\/bfnrt"), Seq({Literal("u"), non_surrogate})})})});
}

ExprPtr Ws() { return Optional(Literal(" ")); }
ExprPtr Comma() { return Seq({Literal(","), Ws()}); }

ExprPtr NumberExpr(bool allow_negative) {
  ExprPtr integer = Alt({Literal("0"), Seq({ByteRange('1', '9'), Repeat(Digit(), 0, kMaxIntegerDigits - 1)})});
  ExprPtr fraction = Optional(Seq({Literal("."), Repeat(Digit(), 1, kMaxFractionDigits)}));
  ExprPtr exponent = Optional(Seq({OneOf("eE"), Optional(OneOf("+-")), Repeat(Digit(), 1, kMaxExponentDigits)}));
  return Seq({allow_negative ? Optional(Literal("-")) : Empty(), integer, fraction, exponent});
}

// Decimal strings of equal length, lo <= hi: every number between them.
ExprPtr SameLengthRange(absl::string_view lo, absl::string_view hi) {
  if (lo.empty()) return Empty();
  if (lo[0] == hi[0]) return Seq({Literal(lo.substr(0, 1)), SameLengthRange(lo.substr(1), hi.substr(1))});
  size_t rest = lo.size() - 1;
  bool lo_all_zero = lo.substr(1).find_first_not_of('0') == absl::string_view::npos;
  bool hi_all_nine = hi.substr(1).find_first_not_of('9') == absl::string_view::npos;
  std::vector<ExprPtr> options;
  char mid_lo = lo_all_zero ? lo[0] : lo[0] + 1;
  char mid_hi = hi_all_nine ? hi[0] : hi[0] - 1;
  if (!lo_all_zero) {
    options.push_back(Seq({Literal(lo.substr(0, 1)), SameLengthRange(lo.substr(1), std::string(rest, '9'))}));
  }
  if (mid_lo <= mid_hi) options.push_back(Seq({ByteRange(mid_lo, mid_hi), Repeat(Digit(), rest, rest)}));
  if (!hi_all_nine) {
    options.push_back(Seq({Literal(hi.substr(0, 1)), SameLengthRange(std::string(rest, '0'), hi.substr(1))}));
  }
  return Alt(std::move(options));
}

// Non-negative integers in [lo, hi], without leading zeros.
ExprPtr NonNegativeRange(int64_t lo, int64_t hi) {
  std::vector<ExprPtr> options;
  int64_t low = 1, high = 9;  // the numbers of one digit count: [low, high]
  for (int digits = 1; digits <= kMaxIntegerDigits; ++digits, low *= 10, high = high * 10 + 9) {
    int64_t a = std::max(lo, digits == 1 ? int64_t{0} : low), b = std::min(hi, high);
    if (a <= b) options.push_back(SameLengthRange(std::to_string(a), std::to_string(b)));
  }
  return Alt(std::move(options));
}

ExprPtr IntegerRange(int64_t lo, int64_t hi) {
  std::vector<ExprPtr> options;
  if (lo < 0) options.push_back(Seq({Literal("-"), NonNegativeRange(std::max<int64_t>(1, -hi), -lo)}));
  if (hi >= 0) options.push_back(NonNegativeRange(std::max<int64_t>(0, lo), hi));
  return Alt(std::move(options));
}

// The regexes of the supported formats (subsets of what ajv-formats accepts).
const char* FormatPattern(absl::string_view format) {
  if (format == "date") {
    return "[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|"
           "02-(?:0[1-9]|1[0-9]|2[0-8]))";
  }
  if (format == "time") return "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])";
  if (format == "date-time") {
    return "[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|"
           "02-(?:0[1-9]|1[0-9]|2[0-8]))T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?"
           "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])";
  }
  if (format == "email") {  // bounded, so a sampled address always ends
    return "[a-zA-Z0-9_%+-]{1,32}(?:\\.[a-zA-Z0-9_%+-]{1,32}){0,2}@"
           "(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\\.){1,3}[a-zA-Z]{2,24}";
  }
  if (format == "uuid") return "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
  return nullptr;
}

std::string PointerToken(absl::string_view key) {
  std::string out;
  for (char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Where(const std::string& pointer) { return pointer.empty() ? "the root" : pointer; }

class Converter {
 public:
  Converter(const Json& root, GrammarIr* ir) : root_(root), ir_(ir) {}

  absl::Status Run() {
    int32_t start = ir_->AddRule("root");
    absl::StatusOr<ExprPtr> e = Value(root_, "");
    if (!e.ok()) return e.status();
    ir_->Define(start, *e);
    return absl::OkStatus();
  }

  // "Any JSON value" and friends, added on first use.
  int32_t AnyValueRule() {
    if (any_value_ >= 0) return any_value_;
    any_value_ = ir_->AddRule("json_value");
    int32_t object = ir_->AddRule("json_object"), array = ir_->AddRule("json_array");
    int32_t string = StringRule(0, -1);
    ExprPtr member = Seq({Ref(string), Literal(":"), Ws(), Ref(any_value_)});
    ir_->Define(object, Seq({Literal("{"), Optional(Seq({member, Star(Seq({Comma(), member}))})), Literal("}")}));
    ir_->Define(array, Seq({Literal("["), Optional(Seq({Ref(any_value_), Star(Seq({Comma(), Ref(any_value_)}))})),
                            Literal("]")}));
    ir_->Define(any_value_, Alt({Ref(object), Ref(array), Ref(string), NumberExpr(true), Literal("true"),
                                 Literal("false"), Literal("null")}));
    any_object_ = object;
    return any_value_;
  }
  int32_t AnyObjectRule() {
    AnyValueRule();
    return any_object_;
  }

 private:
  static const absl::flat_hash_set<std::string>& Known() {
    static const auto* known = new absl::flat_hash_set<std::string>{
        "type", "properties", "required", "additionalProperties", "enum", "const", "anyOf", "oneOf", "allOf",
        "items", "prefixItems", "minItems", "maxItems", "minLength", "maxLength", "pattern", "format", "$ref",
        "$defs", "definitions", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "description",
        "title", "default", "examples", "$schema", "$id", "$comment"};
    return *known;
  }
  static bool IsAnnotation(const std::string& k) {
    return k == "description" || k == "title" || k == "default" || k == "examples" || k == "$schema" ||
           k == "$id" || k == "$comment" || k == "$defs" || k == "definitions";
  }

  // The rule for `key`: true and a new (undefined) rule named `name`, or false
  // and the one made before (rules are declared before their bodies are
  // built, so recursion finds them).
  bool NewRule(const std::string& key, const std::string& name, int32_t* rule) {
    auto [it, added] = rule_by_key_.emplace(key, 0);
    if (added) it->second = ir_->AddRule(name);
    *rule = it->second;
    return added;
  }

  absl::Status Invalid(const std::string& pointer, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("JSON Schema: ", what, " at ", Where(pointer)));
  }

  // The keywords of `schema` other than annotations and `except`.
  static std::vector<std::string> Constraints(const Json& schema, absl::string_view except) {
    std::vector<std::string> out;
    for (const auto& [k, v] : schema.items()) {
      if (!IsAnnotation(k) && k != except) out.push_back(k);
    }
    return out;
  }

  absl::StatusOr<ExprPtr> Value(const Json& schema, const std::string& pointer) {
    if (schema.is_boolean()) {
      if (schema.get<bool>()) return Ref(AnyValueRule());
      return Invalid(pointer, "the schema false matches nothing");
    }
    if (!schema.is_object()) return Invalid(pointer, "a schema must be an object or a boolean");
    for (const auto& [k, v] : schema.items()) {
      if (!Known().contains(k)) {
        return absl::InvalidArgumentError(
            absl::StrCat("unsupported JSON Schema keyword \"", k, "\" at ", Where(pointer)));
      }
    }
    if (schema.contains("$ref")) return RefValue(schema, pointer);
    for (const char* combinator : {"anyOf", "oneOf", "allOf"}) {
      if (!schema.contains(combinator)) continue;
      std::vector<std::string> others = Constraints(schema, combinator);
      if (!others.empty()) {
        return Invalid(pointer, absl::StrCat("\"", combinator, "\" together with \"", others[0], "\" is not supported"));
      }
      const Json& list = schema[combinator];
      if (!list.is_array() || list.empty()) return Invalid(pointer, absl::StrCat("\"", combinator, "\" must be a non-empty array"));
      if (std::string(combinator) == "allOf" && list.size() != 1) {
        return Invalid(pointer, "\"allOf\" with more than one schema is not supported");
      }
      std::vector<ExprPtr> options;
      for (size_t i = 0; i < list.size(); ++i) {
        absl::StatusOr<ExprPtr> e = Value(list[i], absl::StrCat(pointer, "/", combinator, "/", i));
        if (!e.ok()) return e.status();
        options.push_back(*e);
      }
      return Alt(std::move(options));
    }
    if (schema.contains("const")) return Literal(schema["const"].dump());
    if (schema.contains("enum")) {
      const Json& list = schema["enum"];
      if (!list.is_array() || list.empty()) return Invalid(pointer, "\"enum\" must be a non-empty array");
      std::vector<ExprPtr> options;
      for (const Json& v : list) options.push_back(Literal(v.dump()));
      return Alt(std::move(options));
    }
    std::vector<std::string> types;
    if (schema.contains("type")) {
      const Json& t = schema["type"];
      if (t.is_string()) {
        types.push_back(t.get<std::string>());
      } else if (t.is_array() && !t.empty()) {
        for (const Json& x : t) {
          if (!x.is_string()) return Invalid(pointer, "\"type\" must be a string or an array of strings");
          types.push_back(x.get<std::string>());
        }
      } else {
        return Invalid(pointer, "\"type\" must be a string or an array of strings");
      }
    } else if (schema.contains("properties") || schema.contains("additionalProperties") ||
               schema.contains("required")) {
      types.push_back("object");
    } else if (schema.contains("items") || schema.contains("prefixItems") || schema.contains("minItems") ||
               schema.contains("maxItems")) {
      types.push_back("array");
    } else if (schema.contains("minLength") || schema.contains("maxLength") || schema.contains("pattern") ||
               schema.contains("format")) {
      types.push_back("string");
    } else if (schema.contains("minimum") || schema.contains("maximum") || schema.contains("exclusiveMinimum") ||
               schema.contains("exclusiveMaximum")) {
      types.push_back("number");
    } else {
      return Ref(AnyValueRule());
    }
    std::vector<ExprPtr> options;
    for (const std::string& type : types) {
      absl::StatusOr<ExprPtr> e = Typed(schema, type, pointer);
      if (!e.ok()) return e.status();
      options.push_back(*e);
    }
    return Alt(std::move(options));
  }

  absl::StatusOr<ExprPtr> RefValue(const Json& schema, const std::string& pointer) {
    std::vector<std::string> others = Constraints(schema, "$ref");
    if (!others.empty()) return Invalid(pointer, absl::StrCat("\"$ref\" together with \"", others[0], "\" is not supported"));
    if (!schema["$ref"].is_string()) return Invalid(pointer, "\"$ref\" must be a string");
    std::string ref = schema["$ref"].get<std::string>();
    if (ref.empty() || ref[0] != '#') return Invalid(pointer, absl::StrCat("only local \"$ref\"s are supported, not \"", ref, "\""));
    std::string target_pointer = ref.substr(1);
    const Json* target = nullptr;
    try {
      target = &root_.at(Json::json_pointer(target_pointer));
    } catch (const std::exception&) {
      return Invalid(pointer, absl::StrCat("\"$ref\" \"", ref, "\" does not resolve"));
    }
    int32_t rule;
    if (!NewRule("ref:" + ref, "ref " + ref, &rule)) return Ref(rule);
    absl::StatusOr<ExprPtr> body = Value(*target, target_pointer);
    if (!body.ok()) return body.status();
    ir_->Define(rule, *body);
    return Ref(rule);
  }

  absl::StatusOr<int64_t> OptionalCount(const Json& schema, const char* key, const std::string& pointer,
                                        int64_t absent) {
    if (!schema.contains(key)) return absent;
    const Json& v = schema[key];
    if (!v.is_number_integer() && !(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>())) {
      return Invalid(pointer, absl::StrCat("\"", key, "\" must be a non-negative integer"));
    }
    double d = v.get<double>();
    if (d < 0) return Invalid(pointer, absl::StrCat("\"", key, "\" must be a non-negative integer"));
    return static_cast<int64_t>(std::min(d, 1e9));
  }

  absl::StatusOr<ExprPtr> Typed(const Json& schema, const std::string& type, const std::string& pointer) {
    if (type == "null") return Literal("null");
    if (type == "boolean") return Alt({Literal("true"), Literal("false")});
    if (type == "number") {
      bool non_negative = (schema.contains("minimum") && schema["minimum"].is_number() && schema["minimum"].get<double>() >= 0) ||
                          (schema.contains("exclusiveMinimum") && schema["exclusiveMinimum"].is_number() &&
                           schema["exclusiveMinimum"].get<double>() >= 0);
      return NumberExpr(!non_negative);
    }
    if (type == "integer") return Integer(schema, pointer);
    if (type == "string") return String(schema, pointer);
    if (type == "object") return Object(schema, pointer);
    if (type == "array") return Array(schema, pointer);
    return Invalid(pointer, absl::StrCat("unknown type \"", type, "\""));
  }

  absl::StatusOr<ExprPtr> Integer(const Json& schema, const std::string& pointer) {
    double lo = -static_cast<double>(kMaxAbsInteger), hi = static_cast<double>(kMaxAbsInteger);
    for (const char* key : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
      if (!schema.contains(key)) continue;
      if (!schema[key].is_number()) return Invalid(pointer, absl::StrCat("\"", key, "\" must be a number"));
      double v = schema[key].get<double>();
      std::string k = key;
      if (k == "minimum") lo = std::max(lo, std::ceil(v));
      if (k == "exclusiveMinimum") lo = std::max(lo, std::floor(v) + 1);
      if (k == "maximum") hi = std::min(hi, std::floor(v));
      if (k == "exclusiveMaximum") hi = std::min(hi, std::ceil(v) - 1);
    }
    if (lo > hi) return Invalid(pointer, "no integer with at most 16 digits is within the bounds");
    return IntegerRange(static_cast<int64_t>(lo), static_cast<int64_t>(hi));
  }

  int32_t StringRule(int64_t min, int64_t max) {
    std::string key = absl::StrCat("string:", min, ":", max);
    int32_t rule;
    if (!NewRule(key, max < 0 && min == 0 ? "json_string" : key, &rule)) return rule;
    ir_->Define(rule, Seq({Literal("\""), Repeat(StringChar(), static_cast<int32_t>(min), static_cast<int32_t>(max)),
                           Literal("\"")}));
    return rule;
  }

  absl::StatusOr<ExprPtr> String(const Json& schema, const std::string& pointer) {
    absl::StatusOr<int64_t> min = OptionalCount(schema, "minLength", pointer, 0);
    if (!min.ok()) return min.status();
    absl::StatusOr<int64_t> max = OptionalCount(schema, "maxLength", pointer, -1);
    if (!max.ok()) return max.status();
    if (*max >= 0 && *max < *min) return Invalid(pointer, "\"maxLength\" is below \"minLength\"");
    if (*min > 10000 || *max > 10000) return Invalid(pointer, "string lengths above 10000 are not supported");
    std::string pattern;
    if (schema.contains("format")) {
      if (!schema["format"].is_string()) return Invalid(pointer, "\"format\" must be a string");
      const char* p = FormatPattern(schema["format"].get<std::string>());
      if (p == nullptr) {
        return Invalid(pointer, absl::StrCat("unsupported \"format\" \"", schema["format"].get<std::string>(), "\""));
      }
      pattern = p;
    }
    if (schema.contains("pattern")) {
      if (!pattern.empty()) return Invalid(pointer, "\"pattern\" together with \"format\" is not supported");
      if (!schema["pattern"].is_string()) return Invalid(pointer, "\"pattern\" must be a string");
      pattern = schema["pattern"].get<std::string>();
    }
    if (pattern.empty()) return Ref(StringRule(*min, *max));
    if (schema.contains("minLength") || schema.contains("maxLength")) {
      return Invalid(pointer, "\"pattern\" or \"format\" together with \"minLength\"/\"maxLength\" is not supported");
    }
    absl::StatusOr<ExprPtr> content = RegexToExpr(pattern, RegexOutput::kJsonContent);
    if (!content.ok()) return Invalid(pointer, std::string(content.status().message()));
    int32_t rule;
    if (!NewRule("pattern:" + pattern, "pattern:" + pattern, &rule)) return Ref(rule);
    ir_->Define(rule, Seq({Literal("\""), *content, Literal("\"")}));
    return Ref(rule);
  }

  // Additional property keys: no escapes, and none of the declared names.
  ExprPtr KeyExcluding(const std::vector<std::string>& names) {
    struct Node {
      std::map<char32_t, int> children;
      bool terminal = false;
    };
    std::vector<Node> trie(1);
    CodePointSet plain = PlainStringChars();
    for (const std::string& name : names) {
      int node = 0;
      bool representable = true;
      for (size_t pos = 0; pos < name.size();) {
        char32_t c = text::NextCodePoint(name, &pos);  // names come from parsed JSON: valid UTF-8
        if (!plain.Contains(c)) {
          representable = false;
          break;
        }
        auto it = trie[node].children.find(c);
        if (it == trie[node].children.end()) {
          trie.emplace_back();
          it = trie[node].children.emplace(c, static_cast<int>(trie.size()) - 1).first;
        }
        node = it->second;
      }
      if (representable) trie[node].terminal = true;
    }
    ExprPtr any_rest = Star(Utf8Class(plain));
    std::function<ExprPtr(int)> build = [&](int node) {
      std::vector<ExprPtr> options;
      if (!trie[node].terminal) options.push_back(Empty());
      CodePointSet used;
      for (const auto& [c, child] : trie[node].children) {
        options.push_back(Seq({Utf8Class(CodePointSet::Range(c, c)), build(child)}));
        used.Add(c, c);
      }
      CodePointSet rest = plain.Intersect(used.Complement());
      if (!rest.empty()) options.push_back(Seq({Utf8Class(rest), any_rest}));
      return Alt(std::move(options));
    };
    return Seq({Literal("\""), build(0), Literal("\"")});
  }

  absl::StatusOr<ExprPtr> Object(const Json& schema, const std::string& pointer) {
    int32_t rule;
    if (!NewRule("object:" + schema.dump(), absl::StrCat("object ", Where(pointer)), &rule)) return Ref(rule);

    struct Property {
      std::string name;
      ExprPtr value;
      bool required = false;
    };
    std::vector<Property> props;
    absl::flat_hash_map<std::string, size_t> index;
    if (schema.contains("properties")) {
      const Json& p = schema["properties"];
      if (!p.is_object()) return Invalid(pointer, "\"properties\" must be an object");
      for (const auto& [name, sub] : p.items()) {
        absl::StatusOr<ExprPtr> v = Value(sub, absl::StrCat(pointer, "/properties/", PointerToken(name)));
        if (!v.ok()) return v.status();
        index[name] = props.size();
        props.push_back({name, *v, false});
      }
    }
    if (schema.contains("required")) {
      const Json& r = schema["required"];
      if (!r.is_array()) return Invalid(pointer, "\"required\" must be an array");
      for (const Json& name : r) {
        if (!name.is_string()) return Invalid(pointer, "\"required\" must list strings");
        auto found = index.find(name.get<std::string>());
        if (found == index.end()) {  // required but undeclared: any value
          index[name.get<std::string>()] = props.size();
          props.push_back({name.get<std::string>(), Ref(AnyValueRule()), true});
        } else {
          props[found->second].required = true;
        }
      }
    }
    ExprPtr extra;  // one additional "key": value, or null when none is allowed
    if (schema.contains("additionalProperties")) {
      const Json& a = schema["additionalProperties"];
      if (!(a.is_boolean() && !a.get<bool>())) {
        absl::StatusOr<ExprPtr> v = Value(a, pointer + "/additionalProperties");
        if (!v.ok()) return v.status();
        std::vector<std::string> names;
        for (const Property& p : props) names.push_back(p.name);
        extra = Seq({KeyExcluding(names), Literal(":"), Ws(), *v});
      }
    }
    auto member = [](const Property& p) { return Seq({Literal(Json(p.name).dump()), Literal(":"), Ws(), p.value}); };
    // after: the rest once something was written (each part starts with a
    // comma); first: the rest when nothing was written yet.
    ExprPtr after = extra ? Star(Seq({Comma(), extra})) : Empty();
    ExprPtr first = extra ? Optional(Seq({extra, Star(Seq({Comma(), extra}))})) : Empty();
    for (size_t i = props.size(); i-- > 0;) {
      ExprPtr m = member(props[i]);
      if (props[i].required) {
        first = Seq({m, after});
        after = Seq({Comma(), m, after});
      } else {
        first = Alt({Seq({m, after}), first});
        after = Seq({Optional(Seq({Comma(), m})), after});
      }
    }
    ir_->Define(rule, Seq({Literal("{"), first, Literal("}")}));
    return Ref(rule);
  }

  absl::StatusOr<ExprPtr> Array(const Json& schema, const std::string& pointer) {
    int32_t rule;
    if (!NewRule("array:" + schema.dump(), absl::StrCat("array ", Where(pointer)), &rule)) return Ref(rule);

    std::vector<ExprPtr> prefix;
    if (schema.contains("prefixItems")) {
      const Json& p = schema["prefixItems"];
      if (!p.is_array()) return Invalid(pointer, "\"prefixItems\" must be an array");
      for (size_t i = 0; i < p.size(); ++i) {
        absl::StatusOr<ExprPtr> v = Value(p[i], absl::StrCat(pointer, "/prefixItems/", i));
        if (!v.ok()) return v.status();
        prefix.push_back(*v);
      }
    }
    absl::StatusOr<int64_t> min = OptionalCount(schema, "minItems", pointer, 0);
    if (!min.ok()) return min.status();
    absl::StatusOr<int64_t> max = OptionalCount(schema, "maxItems", pointer, -1);
    if (!max.ok()) return max.status();
    ExprPtr item;  // null: no items beyond the prefix
    if (schema.contains("items")) {
      const Json& i = schema["items"];
      if (i.is_array()) return Invalid(pointer, "\"items\" as an array is not supported (use \"prefixItems\")");
      if (!(i.is_boolean() && !i.get<bool>())) {
        absl::StatusOr<ExprPtr> v = Value(i, pointer + "/items");
        if (!v.ok()) return v.status();
        item = *v;
      }
    } else {
      item = Ref(AnyValueRule());
    }
    const int64_t k = static_cast<int64_t>(prefix.size());
    int64_t hi = *max;
    if (!item) hi = hi < 0 ? k : std::min(hi, k);
    if (hi >= 0 && *min > hi) return Invalid(pointer, "no array length satisfies minItems, maxItems and items");
    if (*min > 10000 || hi > 10000) return Invalid(pointer, "array lengths above 10000 are not supported");
    // rest(i): the elements from index i on, after i >= 1 were written.
    std::function<ExprPtr(int64_t)> rest = [&](int64_t i) -> ExprPtr {
      if (hi >= 0 && i >= hi) return Empty();
      if (i >= k) {
        return Repeat(Seq({Comma(), item}), static_cast<int32_t>(std::max<int64_t>(0, *min - i)),
                      hi < 0 ? -1 : static_cast<int32_t>(hi - i));
      }
      ExprPtr next = Seq({Comma(), prefix[i], rest(i + 1)});
      return i >= *min ? Optional(next) : next;
    };
    ExprPtr body;
    if (hi == 0) {
      body = Literal("[]");
    } else {
      ExprPtr elements = Seq({k > 0 ? prefix[0] : item, rest(1)});
      body = Seq({Literal("["), *min == 0 ? Optional(elements) : elements, Literal("]")});
    }
    ir_->Define(rule, body);
    return Ref(rule);
  }

  const Json& root_;
  GrammarIr* ir_;
  absl::flat_hash_map<std::string, int32_t> rule_by_key_;
  int32_t any_value_ = -1;
  int32_t any_object_ = -1;
};

}  // namespace

absl::Status JsonSchemaToGrammar(absl::string_view schema_json, GrammarIr* ir) {
  Json schema;
  bool too_deep = false;
  Json::parser_callback_t limit = [&](int depth, Json::parse_event_t event, Json&) {
    if ((event == Json::parse_event_t::array_start || event == Json::parse_event_t::object_start) &&
        depth >= text::kMaxJsonDepth) {
      too_deep = true;
    }
    return !too_deep;
  };
  try {
    schema = Json::parse(schema_json.begin(), schema_json.end(), limit);
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann counts bytes from 1.
    return absl::InvalidArgumentError(
        absl::StrCat("malformed JSON Schema at byte offset ", e.byte > 0 ? e.byte - 1 : 0, ": ", e.what()));
  }
  if (too_deep) {
    return absl::InvalidArgumentError(absl::StrCat("JSON Schema is nested deeper than ", text::kMaxJsonDepth, " levels"));
  }
  return Converter(schema, ir).Run();
}

void AnyJsonObjectGrammar(GrammarIr* ir) {
  Json empty = Json::object();
  Converter converter(empty, ir);
  int32_t root = ir->AddRule("root");
  ir->Define(root, Ref(converter.AnyObjectRule()));
}

}  // namespace gantry::guided::internal
