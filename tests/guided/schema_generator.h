// A deterministic generator of bounded JSON Schemas of a given depth, for
// the random walks (random_walk_test.cc) and the demo-model test
// (demo_model_test.cc): strings have maxLength, arrays maxItems, $defs are
// not recursive, so every output is finite; the keywords cover what the
// compiler supports (formats, patterns, enums with quotes, unicode names).
#ifndef GANTRY_TESTS_GUIDED_SCHEMA_GENERATOR_H_
#define GANTRY_TESTS_GUIDED_SCHEMA_GENERATOR_H_

#include <random>
#include <string>

#include "nlohmann/json.hpp"

namespace gantry::guided::testing {

// A deterministic generator of bounded schemas.
class SchemaGenerator {
  using Json = nlohmann::ordered_json;


 public:
  explicit SchemaGenerator(uint64_t seed) : rng_(seed) {}

  Json Generate(int depth) {
    defs_ = Json::object();
    Json schema = Node(depth);
    if (!defs_.empty()) {
      if (!schema.is_object() || schema.contains("$ref")) schema = Json{{"allOf", Json::array({schema})}};
      schema["$defs"] = defs_;
    }
    return schema;
  }

 private:
  int Pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }

  Json Node(int depth) {
    if (depth <= 0 || Pick(4) == 0) return Leaf();
    switch (Pick(5)) {
      case 0:
      case 1:
        return Object(depth);
      case 2: {
        int max = Pick(4);
        Json a = {{"type", "array"}, {"items", Node(depth - 1)}, {"maxItems", max}};
        if (Pick(2) == 0) a["minItems"] = Pick(max + 1);
        return a;
      }
      case 3: {
        Json prefix = Json::array();
        int k = 1 + Pick(2);
        for (int i = 0; i < k; ++i) prefix.push_back(Node(depth - 1));
        return Json{{"type", "array"}, {"prefixItems", prefix}, {"items", false}, {"minItems", Pick(k + 1)}};
      }
      default: {
        std::string name = "d" + std::to_string(defs_.size());
        defs_[name] = nullptr;  // reserve the name before generating nested defs
        defs_[name] = Node(depth - 1);
        Json ref = {{"$ref", "#/$defs/" + name}};
        // anyOf: the referenced schema may itself allow null (oneOf would then
        // need disjoint branches, which the compiler does not check).
        if (Pick(2) == 0) return Json{{"anyOf", Json::array({ref, Json{{"type", "null"}}})}};
        return ref;
      }
    }
  }

  Json Object(int depth) {
    static const char* kNames[] = {"id", "name", "na\"me", "caf\xC3\xA9", "\xE5\x90\x8D\xE5\xAD\x97", "a b",
                                   "x\\y", "items", "value", "nested", "k", "longer_property_name"};
    Json props = Json::object();
    Json required = Json::array();
    int n = Pick(5);
    for (int i = 0; i < n; ++i) {
      std::string name = kNames[Pick(12)];
      if (props.contains(name)) continue;
      props[name] = Node(depth - 1);
      if (Pick(2) == 0) required.push_back(name);
    }
    Json o = {{"type", "object"}, {"properties", props}};
    if (!required.empty()) o["required"] = required;
    if (Pick(3) == 0) o["additionalProperties"] = false;
    if (Pick(6) == 0) o["description"] = "ignored";
    return o;
  }

  Json Leaf() {
    switch (Pick(11)) {
      case 0: {
        int max = Pick(11);
        Json s = {{"type", "string"}, {"maxLength", max}};
        if (Pick(2) == 0) s["minLength"] = Pick(max + 1);
        return s;
      }
      case 1: {
        Json i = {{"type", "integer"}};
        if (Pick(2) == 0) i["minimum"] = Pick(200) - 100;
        if (Pick(2) == 0) i["maximum"] = 100 + Pick(100000);
        return i;
      }
      case 2:
        return Pick(2) == 0 ? Json{{"type", "number"}} : Json{{"type", "number"}, {"minimum", 0}};
      case 3:
        return Json{{"type", "boolean"}};
      case 4:
        return Json{{"type", "null"}};
      case 5:
        return Json{{"enum", Json::array({"a\"b", "back\\slash", "\xE4\xB8\xAD\xE6\x96\x87", 42, -1.5, nullptr, true,
                                          "plain"})}};
      case 6:
        return Json{{"const", Pick(2) == 0 ? Json("fixed \"value\"") : Json(7)}};
      case 7: {
        static const char* kFormats[] = {"date", "time", "date-time", "email", "uuid"};
        return Json{{"type", "string"}, {"format", kFormats[Pick(5)]}};
      }
      case 8: {
        static const char* kPatterns[] = {"^[A-Z]{2}-\\d{3}$", "[a-z]{1,10}(\\.[a-z]{1,10}){0,2}", "(yes|no|maybe)",
                                          "\\w{1,8}@\\w{1,8}", "[^\"\\\\]{0,5}\"?", ".{1,4}"};
        return Json{{"type", "string"}, {"pattern", kPatterns[Pick(6)]}};
      }
      case 9:
        return Json{{"type", Json::array({"string", "null"})}, {"maxLength", Pick(6)}};
      default:
        return Json{{Pick(2) == 0 ? "anyOf" : "oneOf",  // disjoint branches
                     Json::array({Json{{"type", "string"}, {"maxLength", 3}}, Json{{"type", "integer"}}})}};
    }
  }

  std::mt19937_64 rng_;
  Json defs_;
};

}  // namespace gantry::guided::testing

#endif  // GANTRY_TESTS_GUIDED_SCHEMA_GENERATOR_H_
