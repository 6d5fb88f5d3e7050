// The JSON Schema compiler: each keyword's language, strict mode, whitespace,
// numbers, strings, and the errors for what is not supported.
#include "text/guided/json_schema.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/guided/guided_test_util.h"

namespace gantry::guided {
namespace {

using ::testing::HasSubstr;
using testing::Matches;
using testing::MustCompile;
using testing::SchemaSpec;
using testing::SmallVocabulary;

std::shared_ptr<const Grammar> Schema(const std::string& schema) {
  return MustCompile(SchemaSpec(schema), SmallVocabulary());
}

std::string Error(const std::string& schema) { return testing::CompileError(SchemaSpec(schema)); }

TEST(JsonSchemaTest, ScalarTypes) {
  auto s = Schema(R"({"type": "string"})");
  EXPECT_TRUE(Matches(s, R"("")"));
  EXPECT_TRUE(Matches(s, R"("a\"b\\c\/\n\u00e9\uD7FF")"));
  EXPECT_TRUE(Matches(s, "\"\xE4\xB8\xAD\xF0\x9F\x98\x80\""));
  EXPECT_FALSE(Matches(s, R"("a"b")"));
  EXPECT_FALSE(Matches(s, "\"a\nb\""));             // raw control character
  EXPECT_FALSE(Matches(s, R"("\ud800")"));          // a lone surrogate escape
  EXPECT_FALSE(Matches(s, R"("\x")"));
  EXPECT_FALSE(Matches(s, "\"\xE4\xB8\""));         // half a code point
  auto b = Schema(R"({"type": "boolean"})");
  EXPECT_TRUE(Matches(b, "true"));
  EXPECT_TRUE(Matches(b, "false"));
  EXPECT_FALSE(Matches(b, "null"));
  auto n = Schema(R"({"type": "null"})");
  EXPECT_TRUE(Matches(n, "null"));
  EXPECT_FALSE(Matches(n, "nul"));
  auto list = Schema(R"({"type": ["integer", "null"]})");
  EXPECT_TRUE(Matches(list, "-12"));
  EXPECT_TRUE(Matches(list, "null"));
  EXPECT_FALSE(Matches(list, "1.5"));
}

TEST(JsonSchemaTest, NumbersHaveBoundedDigits) {
  auto n = Schema(R"({"type": "number"})");
  for (const char* ok : {"0", "-0", "12.5", "-3e+12", "1E-99", "0.0001", "9999999999999999.9999999999999999e99"}) {
    EXPECT_TRUE(Matches(n, ok)) << ok;
  }
  for (const char* bad : {"01", "1.", ".5", "+1", "1e", "1e999", "99999999999999999", "1.00000000000000000", "--1",
                          "NaN", "Infinity"}) {
    EXPECT_FALSE(Matches(n, bad)) << bad;
  }
  auto nonneg = Schema(R"({"type": "number", "minimum": 0})");
  EXPECT_TRUE(Matches(nonneg, "2.5"));
  EXPECT_FALSE(Matches(nonneg, "-2.5"));
}

TEST(JsonSchemaTest, IntegerBoundsAreEnforced) {
  auto g = Schema(R"({"type": "integer", "minimum": -15, "maximum": 230})");
  for (int v = -40; v <= 300; ++v) {
    EXPECT_EQ(Matches(g, std::to_string(v)), v >= -15 && v <= 230) << v;
  }
  EXPECT_FALSE(Matches(g, "007"));
  EXPECT_FALSE(Matches(g, "-0"));
  auto ex = Schema(R"({"type": "integer", "exclusiveMinimum": 9, "exclusiveMaximum": 100})");
  EXPECT_FALSE(Matches(ex, "9"));
  EXPECT_TRUE(Matches(ex, "10"));
  EXPECT_TRUE(Matches(ex, "99"));
  EXPECT_FALSE(Matches(ex, "100"));
  auto any = Schema(R"({"type": "integer"})");
  EXPECT_TRUE(Matches(any, "-9999999999999999"));
  EXPECT_FALSE(Matches(any, "10000000000000000"));
  EXPECT_THAT(Error(R"({"type": "integer", "minimum": 5, "maximum": 4})"), HasSubstr("within the bounds"));
}

TEST(JsonSchemaTest, StringLengthsCountCodePointsAndEscapes) {
  auto g = Schema(R"({"type": "string", "minLength": 2, "maxLength": 3})");
  EXPECT_FALSE(Matches(g, R"("a")"));
  EXPECT_TRUE(Matches(g, R"("ab")"));
  EXPECT_TRUE(Matches(g, "\"\xE4\xB8\xAD\xF0\x9F\x98\x80\xC3\xA9\""));  // 3 code points, 9 bytes
  EXPECT_FALSE(Matches(g, "\"\xE4\xB8\xAD\xF0\x9F\x98\x80\xC3\xA9x\""));
  EXPECT_TRUE(Matches(g, R"("\n\u00e9\"")"));  // 3 escapes = 3 characters
  EXPECT_FALSE(Matches(g, R"("\n\u00e9\"a")"));
  EXPECT_THAT(Error(R"({"type": "string", "minLength": 3, "maxLength": 2})"), HasSubstr("maxLength"));
}

TEST(JsonSchemaTest, PatternAndFormats) {
  auto p = Schema(R"({"type": "string", "pattern": "^[a-z]+-\\d{2}\"?$"})");
  EXPECT_TRUE(Matches(p, R"("ab-12")"));
  EXPECT_TRUE(Matches(p, R"("ab-12\"")"));  // the quote is escaped in JSON
  EXPECT_FALSE(Matches(p, R"("ab-12"")"));
  EXPECT_FALSE(Matches(p, R"("Ab-12")"));
  auto date = Schema(R"({"type": "string", "format": "date"})");
  EXPECT_TRUE(Matches(date, R"("2024-01-31")"));
  EXPECT_FALSE(Matches(date, R"("2024-02-30")"));
  EXPECT_FALSE(Matches(date, R"("2024-13-01")"));
  auto dt = Schema(R"({"type": "string", "format": "date-time"})");
  EXPECT_TRUE(Matches(dt, R"("2024-01-15T12:30:00Z")"));
  EXPECT_TRUE(Matches(dt, R"("2024-01-15T12:30:00.25+05:30")"));
  EXPECT_FALSE(Matches(dt, R"("2024-01-15T24:00:00Z")"));
  auto time = Schema(R"({"type": "string", "format": "time"})");
  EXPECT_TRUE(Matches(time, R"("23:59:59-08:00")"));
  auto email = Schema(R"({"type": "string", "format": "email"})");
  EXPECT_TRUE(Matches(email, R"("a.b+c@example.com")"));
  EXPECT_FALSE(Matches(email, R"("a@b")"));
  auto uuid = Schema(R"({"type": "string", "format": "uuid"})");
  EXPECT_TRUE(Matches(uuid, R"("123e4567-e89b-12d3-a456-426614174000")"));
  EXPECT_FALSE(Matches(uuid, R"("123e4567-e89b-12d3-a456-42661417400")"));
  EXPECT_THAT(Error(R"({"type": "string", "format": "hostname"})"), HasSubstr("unsupported \"format\""));
  EXPECT_THAT(Error(R"({"type": "string", "pattern": "a(b"})"), HasSubstr("unclosed '(' at offset 1"));
}

TEST(JsonSchemaTest, EnumAndConst) {
  auto e = Schema(R"({"enum": ["a\"b", "x\\y", 3, null, {"k": [1, true]}]})");
  EXPECT_TRUE(Matches(e, R"("a\"b")"));
  EXPECT_TRUE(Matches(e, R"("x\\y")"));
  EXPECT_TRUE(Matches(e, "3"));
  EXPECT_TRUE(Matches(e, "null"));
  EXPECT_TRUE(Matches(e, R"({"k":[1,true]})"));
  EXPECT_FALSE(Matches(e, R"("a"b")"));
  EXPECT_FALSE(Matches(e, R"("ab")"));
  auto c = Schema(R"({"const": "fixed"})");
  EXPECT_TRUE(Matches(c, R"("fixed")"));
  EXPECT_FALSE(Matches(c, R"("fixe")"));
}

TEST(JsonSchemaTest, ObjectsAreStrictAndOrdered) {
  auto g = Schema(R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"},
                      "c": {"type": "boolean"}}, "required": ["b"]})");
  EXPECT_TRUE(Matches(g, R"({"b":"x"})"));
  EXPECT_TRUE(Matches(g, R"({"a":1,"b":"x","c":true})"));
  EXPECT_TRUE(Matches(g, R"({"a": 1, "b": "x"})"));
  EXPECT_TRUE(Matches(g, R"({"b":"x", "c":false})"));
  EXPECT_FALSE(Matches(g, R"({"a":1})"));                 // b is required
  EXPECT_FALSE(Matches(g, R"({"b":"x","a":1})"));         // schema order
  EXPECT_FALSE(Matches(g, R"({"b":"x","d":1})"));         // no additional properties
  EXPECT_FALSE(Matches(g, R"({ "b":"x"})"));              // whitespace only after : and ,
  EXPECT_FALSE(Matches(g, R"({"b":  "x"})"));
  EXPECT_FALSE(Matches(g, R"({"b":"x" })"));
  EXPECT_FALSE(Matches(g, "{\"b\":\n\"x\"}"));
  auto empty = Schema(R"({"type": "object"})");
  EXPECT_TRUE(Matches(empty, "{}"));
  EXPECT_FALSE(Matches(empty, R"({"a":1})"));
  auto all_optional = Schema(R"({"properties": {"a": {"type": "null"}, "b": {"type": "null"}}})");
  EXPECT_TRUE(Matches(all_optional, "{}"));
  EXPECT_TRUE(Matches(all_optional, R"({"b":null})"));
  EXPECT_FALSE(Matches(all_optional, R"({,"b":null})"));
  EXPECT_FALSE(Matches(all_optional, R"({"a":null,})"));
}

TEST(JsonSchemaTest, AdditionalProperties) {
  auto g = Schema(R"({"type": "object", "properties": {"name": {"type": "string"}},
                      "additionalProperties": {"type": "integer"}})");
  EXPECT_TRUE(Matches(g, R"({"name":"x","age":3,"n":4})"));
  EXPECT_TRUE(Matches(g, R"({"age":3})"));
  EXPECT_TRUE(Matches(g, R"({"nam":3,"names":4})"));
  EXPECT_FALSE(Matches(g, R"({"name":3})"));  // a declared key takes its own schema
  EXPECT_FALSE(Matches(g, R"({"age":"x"})"));
  auto any = Schema(R"({"type": "object", "additionalProperties": true})");
  EXPECT_TRUE(Matches(any, R"({"x":[1,{"y":null}],"z":"w"})"));
}

TEST(JsonSchemaTest, Arrays) {
  auto g = Schema(R"({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3})");
  EXPECT_FALSE(Matches(g, "[]"));
  EXPECT_TRUE(Matches(g, "[1]"));
  EXPECT_TRUE(Matches(g, "[1, 2,3]"));
  EXPECT_FALSE(Matches(g, "[1,2,3,4]"));
  EXPECT_FALSE(Matches(g, "[1,]"));
  auto empty = Schema(R"({"type": "array", "maxItems": 0})");
  EXPECT_TRUE(Matches(empty, "[]"));
  auto tuple = Schema(R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}],
                          "items": false, "minItems": 1})");
  EXPECT_TRUE(Matches(tuple, R"(["a"])"));
  EXPECT_TRUE(Matches(tuple, R"(["a",true])"));
  EXPECT_FALSE(Matches(tuple, R"(["a",true,1])"));
  EXPECT_FALSE(Matches(tuple, R"([true])"));
  auto tail = Schema(R"({"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "null"}})");
  EXPECT_TRUE(Matches(tail, R"(["a",null,null])"));
  EXPECT_FALSE(Matches(tail, R"(["a","b"])"));
  auto untyped = Schema(R"({"type": "array"})");
  EXPECT_TRUE(Matches(untyped, R"([1,"a",{"b":[]}])"));
}

TEST(JsonSchemaTest, CombinatorsAndRefs) {
  auto any_of = Schema(R"({"anyOf": [{"type": "string", "maxLength": 1}, {"type": "integer"}]})");
  EXPECT_TRUE(Matches(any_of, R"("a")"));
  EXPECT_TRUE(Matches(any_of, "12"));
  EXPECT_FALSE(Matches(any_of, R"("ab")"));
  auto one_of = Schema(R"({"oneOf": [{"type": "null"}, {"type": "boolean"}]})");
  EXPECT_TRUE(Matches(one_of, "null"));
  EXPECT_TRUE(Matches(one_of, "false"));
  auto all_of = Schema(R"({"allOf": [{"type": "boolean"}], "description": "d"})");
  EXPECT_TRUE(Matches(all_of, "true"));
  auto tree = Schema(R"({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object",
      "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
      "required": ["v"]}}})");
  EXPECT_TRUE(Matches(tree, R"({"v":1})"));
  EXPECT_TRUE(Matches(tree, R"({"v":1,"kids":[{"v":2,"kids":[{"v":3},{"v":4,"kids":[]}]}]})"));
  EXPECT_FALSE(Matches(tree, R"({"v":1,"kids":[{"kids":[]}]})"));
  auto old = Schema(R"({"type": "object", "properties": {"x": {"$ref": "#/definitions/x"}},
      "definitions": {"x": {"type": "string", "maxLength": 2}}})");
  EXPECT_TRUE(Matches(old, R"({"x":"ab"})"));
  EXPECT_FALSE(Matches(old, R"({"x":"abc"})"));
  auto any = Schema(R"({})");
  EXPECT_TRUE(Matches(any, R"([1,{"a":"b"}])"));
  EXPECT_TRUE(Matches(any, "-1.5e3"));
}

TEST(JsonSchemaTest, AnnotationsAreIgnored) {
  auto g = Schema(R"({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "x", "title": "t",
      "description": "d", "type": "object", "properties": {"a": {"type": "integer", "default": 1,
      "examples": [1], "$comment": "c"}}, "required": ["a"]})");
  EXPECT_TRUE(Matches(g, R"({"a":1})"));
}

TEST(JsonSchemaTest, UnsupportedKeywordsAreNamedWithTheirPointer) {
  EXPECT_THAT(Error(R"({"type": "object", "properties": {"a": {"type": "object", "patternProperties": {}}}})"),
              HasSubstr("unsupported JSON Schema keyword \"patternProperties\" at /properties/a"));
  EXPECT_THAT(Error(R"({"type": "array", "items": {"uniqueItems": true}})"),
              HasSubstr("unsupported JSON Schema keyword \"uniqueItems\" at /items"));
  EXPECT_THAT(Error(R"({"not": {}})"), HasSubstr("unsupported JSON Schema keyword \"not\" at the root"));
  EXPECT_THAT(Error(R"({"properties": {"a/b": {"if": {}}}})"), HasSubstr("\"if\" at /properties/a~1b"));
  EXPECT_THAT(Error(R"({"anyOf": [{"type": "string"}, {"minProperties": 1}]})"),
              HasSubstr("\"minProperties\" at /anyOf/1"));
  EXPECT_THAT(Error(R"({"allOf": [{"type": "string"}, {"maxLength": 1}]})"), HasSubstr("more than one"));
  EXPECT_THAT(Error(R"({"$ref": "#/$defs/missing"})"), HasSubstr("does not resolve"));
  EXPECT_THAT(Error(R"({"$ref": "https://example.com/s.json"})"), HasSubstr("only local"));
  EXPECT_THAT(Error(R"({"type": "date"})"), HasSubstr("unknown type \"date\""));
  EXPECT_THAT(Error(R"({"type": "object", "properties": {"a": false}, "required": ["a"]})"),
              HasSubstr("matches nothing"));
}

TEST(JsonSchemaTest, MalformedAndImpossibleSchemas) {
  EXPECT_THAT(Error(R"({"type": "object",, })"), HasSubstr("malformed JSON Schema at byte offset 18"));
  // Required recursion has no finite output.
  EXPECT_THAT(Error(R"({"$ref": "#/$defs/a", "$defs": {"a": {"type": "object", "properties":
      {"next": {"$ref": "#/$defs/a"}}, "required": ["next"]}}})"),
              HasSubstr("matches no text"));
  // A reference to itself with nothing in between.
  EXPECT_THAT(Error(R"({"$ref": "#/$defs/a", "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}}})"),
              HasSubstr("left-recursive"));
  std::string deep;
  for (int i = 0; i < 200; ++i) deep += R"({"items":)";
  deep += "{}";
  for (int i = 0; i < 200; ++i) deep += "}";
  EXPECT_THAT(Error(deep), HasSubstr("nested deeper"));
}

TEST(AnyJsonTest, TopLevelObjectWithCompactWhitespace) {
  GrammarSpec spec;
  spec.kind = GrammarSpec::Kind::kAnyJson;
  auto g = MustCompile(spec, SmallVocabulary());
  EXPECT_TRUE(Matches(g, "{}"));
  EXPECT_TRUE(Matches(g, R"({"a": [1, 2.5e3, "x", {"b": null}], "c":{"d":[[]]}, "e":true})"));
  EXPECT_FALSE(Matches(g, "[]"));
  EXPECT_FALSE(Matches(g, R"("a")"));
  EXPECT_FALSE(Matches(g, R"({"a" :1})"));
  EXPECT_FALSE(Matches(g, R"({"a":1,})"));
  EXPECT_FALSE(Matches(g, R"({"a":01})"));
  EXPECT_FALSE(Matches(g, "{\"a\":\t1}"));
}

}  // namespace
}  // namespace gantry::guided
