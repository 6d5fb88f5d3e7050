// FindInvalidUtf8Field and FirstInvalidUtf8Byte (proto/wire_utf8.h), checked
// against what protobuf's own parser accepts: the walker must name a field
// exactly when the parser rejects a well-formed message.
#include "proto/wire_utf8.h"

#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/text_format.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gantry/v1/gantry.pb.h"
#include "google/protobuf/descriptor.pb.h"
#include "gtest/gtest.h"

namespace gantry::proto {
namespace {

// Wire format by hand: the tests need bytes no setter would produce.
std::string Varint(uint64_t value) {
  std::string out;
  while (value >= 0x80) {
    out.push_back(static_cast<char>(value | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
  return out;
}
std::string Tag(uint32_t number, uint32_t wire_type) { return Varint((uint64_t{number} << 3) | wire_type); }
std::string Field(uint32_t number, const std::string& payload) {
  return Tag(number, 2) + Varint(payload.size()) + payload;
}

// "path@byte", or "none".
std::string Find(const google::protobuf::Descriptor& message, const std::string& wire) {
  std::optional<InvalidUtf8Field> field = FindInvalidUtf8Field(message, wire);
  return field ? absl::StrCat(field->path, "@", field->byte) : "none";
}

template <class Message>
bool Parses(const std::string& wire) {
  Message message;
  return message.ParseFromString(wire);
}

// Protobuf logs every invalid string it parses; the tests parse many.
class WireUtf8Test : public ::testing::Test {
 private:
  google::protobuf::LogSilencer silence_;
};

TEST_F(WireUtf8Test, ValidRequestsHaveNoInvalidField) {
  v1::ChatRequest chat;
  chat.set_model("demo");
  chat.add_messages()->set_content("你好 😀 é");
  chat.add_messages()->set_role("assistant");
  chat.mutable_parameters()->add_stop("\U0010FFFF");
  chat.mutable_parameters()->set_max_tokens(300);
  chat.set_tools_json("[]");
  const std::string wire = chat.SerializeAsString();
  ASSERT_TRUE(Parses<v1::ChatRequest>(wire));
  EXPECT_EQ(Find(*v1::ChatRequest::descriptor(), wire), "none");

  v1::GenerateRequest generate;
  generate.set_model("demo");
  generate.mutable_token_ids()->add_ids(1);
  generate.mutable_token_ids()->add_ids(200000);
  EXPECT_EQ(Find(*v1::GenerateRequest::descriptor(), generate.SerializeAsString()), "none");
  EXPECT_EQ(Find(*v1::GenerateRequest::descriptor(), ""), "none");
}

TEST_F(WireUtf8Test, TopLevelString) {
  const std::string wire = Field(1, "demo") + Field(2, "Hello \xFF");
  EXPECT_FALSE(Parses<v1::GenerateRequest>(wire));
  EXPECT_EQ(Find(*v1::GenerateRequest::descriptor(), wire), "text@6");
}

TEST_F(WireUtf8Test, RepeatedMessagesAreIndexedByOccurrence) {
  const std::string ok = Field(1, "user") + Field(2, "hi");
  std::string wire = Field(1, "demo") + Field(2, ok) + Field(2, ok) + Field(2, Field(1, "user") + Field(2, "ok \xC3("));
  EXPECT_FALSE(Parses<v1::ChatRequest>(wire));
  EXPECT_EQ(Find(*v1::ChatRequest::descriptor(), wire), "messages[2].content@3");

  wire = Field(2, ok) + Field(2, Field(1, "\xC0\x80") + Field(2, "hi"));
  EXPECT_FALSE(Parses<v1::ChatRequest>(wire));
  EXPECT_EQ(Find(*v1::ChatRequest::descriptor(), wire), "messages[1].role@0");
}

TEST_F(WireUtf8Test, RepeatedStringInANestedMessage) {
  // A surrogate (U+D800) is not valid UTF-8.
  const std::string wire = Field(1, "demo") + Field(3, Field(10, "a") + Field(10, "b\xED\xA0\x80"));
  EXPECT_FALSE(Parses<v1::ChatRequest>(wire));
  EXPECT_EQ(Find(*v1::ChatRequest::descriptor(), wire), "parameters.stop[1]@1");
}

TEST_F(WireUtf8Test, TheFirstInvalidFieldOnTheWireIsNamed) {
  const std::string tools = Field(4, "[\xF5]");
  const std::string message = Field(2, Field(2, "\x80"));
  EXPECT_EQ(Find(*v1::ChatRequest::descriptor(), tools + message), "tools_json@1");
  EXPECT_EQ(Find(*v1::ChatRequest::descriptor(), message + tools), "messages[0].content@0");
}

// Struct: map<string, Value>, a proto3 map with message values.
TEST_F(WireUtf8Test, MapEntriesAreNamedByKey) {
  const std::string bad_value = Field(3, "x\xFF");  // Value.string_value
  std::string wire = Field(1, Field(1, "ok") + Field(2, Field(3, "fine"))) +
                     Field(1, Field(1, "team") + Field(2, bad_value));
  EXPECT_FALSE(Parses<google::protobuf::Struct>(wire));
  EXPECT_EQ(Find(*google::protobuf::Struct::descriptor(), wire), "fields[\"team\"].string_value@1");

  // Value before key, and a key that needs escaping.
  wire = Field(1, Field(2, bad_value) + Field(1, "a\"b\n"));
  EXPECT_FALSE(Parses<google::protobuf::Struct>(wire));
  EXPECT_EQ(Find(*google::protobuf::Struct::descriptor(), wire), "fields[\"a\\\"b\\n\"].string_value@1");

  // No key: the default, "".
  wire = Field(1, Field(2, bad_value));
  EXPECT_EQ(Find(*google::protobuf::Struct::descriptor(), wire), "fields[\"\"].string_value@1");
}

TEST_F(WireUtf8Test, AnInvalidMapKeyIsNamedByIndex) {
  const std::string wire = Field(1, Field(1, "ok")) + Field(1, Field(1, "k\xFE"));
  EXPECT_FALSE(Parses<google::protobuf::Struct>(wire));
  EXPECT_EQ(Find(*google::protobuf::Struct::descriptor(), wire), "fields[1].key@1");
}

TEST_F(WireUtf8Test, PathsThroughNestedMessagesListsAndMaps) {
  // Value{struct_value{fields{"a": Value{list_value{values: ["ok", "\x80"]}}}}}
  const std::string list = Field(1, Field(3, "ok")) + Field(1, Field(3, "\x80"));
  const std::string wire = Field(5, Field(1, Field(1, "a") + Field(2, Field(6, list))));
  EXPECT_FALSE(Parses<google::protobuf::Value>(wire));
  EXPECT_EQ(Find(*google::protobuf::Value::descriptor(), wire),
            "struct_value.fields[\"a\"].list_value.values[1].string_value@0");
}

TEST_F(WireUtf8Test, MalformedBytesNameNoField) {
  const std::vector<std::string> malformed = {
      "\x0a\x05" "de",                                // length past the end
      "\x0f",                                         // wire type 7
      std::string("\x00\x01", 2),                     // field number 0
      "\x08" + std::string(10, '\xFF') + "\x01",      // varint of 11 bytes
      "\x0b",                                         // group never ended
      "\x0b\x14",                                     // group 1 ended as 2
      "\x0c",                                         // end of a group never started
      Field(2, "\x12\x05" "ab"),                      // nested length past its end
      "\x0f" + Field(1, "\xFF"),                      // garbage before an invalid string
  };
  for (const std::string& wire : malformed) {
    EXPECT_FALSE(Parses<v1::ChatRequest>(wire)) << absl::CEscape(wire);
    EXPECT_EQ(Find(*v1::ChatRequest::descriptor(), wire), "none") << absl::CEscape(wire);
  }
  // An invalid string before the garbage is found first.
  EXPECT_EQ(Find(*v1::ChatRequest::descriptor(), Field(1, "\xFF") + "\x0f"), "model@0");
}

TEST_F(WireUtf8Test, UnknownFieldsAndOtherWireTypesAreNotChecked) {
  // Protobuf keeps unknown fields as bytes, and parses a known field sent with
  // another wire type as an unknown one.
  const std::vector<std::string> accepted = {
      Field(1, "demo") + Field(99, "\xFF"),
      Tag(2, 0) + Varint(5),
      Tag(1, 5) + "\xFF\xFF\xFF\xFF",
      Tag(98, 3) + Field(1, "\xFF") + Tag(98, 4),
  };
  for (const std::string& wire : accepted) {
    EXPECT_TRUE(Parses<v1::ChatRequest>(wire)) << absl::CEscape(wire);
    EXPECT_EQ(Find(*v1::ChatRequest::descriptor(), wire), "none") << absl::CEscape(wire);
  }
  const std::string after_group = Tag(98, 3) + Field(1, "\xFF") + Tag(98, 4) + Field(1, "demo\xFF");
  EXPECT_FALSE(Parses<v1::ChatRequest>(after_group));
  EXPECT_EQ(Find(*v1::ChatRequest::descriptor(), after_group), "model@4");
}

TEST_F(WireUtf8Test, Proto2StringsAreNotChecked) {
  // descriptor.proto is proto2: protobuf accepts any bytes in its strings.
  const std::string wire = Field(1, "\xFF.proto");
  EXPECT_TRUE(Parses<google::protobuf::FileDescriptorProto>(wire));
  EXPECT_EQ(Find(*google::protobuf::FileDescriptorProto::descriptor(), wire), "none");
}

TEST_F(WireUtf8Test, GroupsOfAProto2MessageAreWalked) {
  google::protobuf::DescriptorPool pool;
  google::protobuf::FileDescriptorProto struct_file;
  google::protobuf::Struct::descriptor()->file()->CopyTo(&struct_file);
  ASSERT_NE(pool.BuildFile(struct_file), nullptr);
  google::protobuf::FileDescriptorProto file;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(R"pb(
    name: "group_test.proto"
    package: "gantry.test"
    dependency: "google/protobuf/struct.proto"
    message_type {
      name: "Outer"
      field { name: "item" number: 1 label: LABEL_REPEATED type: TYPE_GROUP type_name: ".gantry.test.Outer.Item" }
      nested_type {
        name: "Item"
        field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".google.protobuf.Value" }
      }
    }
  )pb", &file));
  ASSERT_NE(pool.BuildFile(file), nullptr);
  const google::protobuf::Descriptor* outer = pool.FindMessageTypeByName("gantry.test.Outer");
  ASSERT_NE(outer, nullptr);

  const std::string wire = Tag(1, 3) + Field(2, Field(3, "ok")) + Tag(1, 4) +  //
                           Tag(1, 3) + Field(2, Field(3, "\xFF")) + Tag(1, 4);
  google::protobuf::DynamicMessageFactory factory(&pool);
  std::unique_ptr<google::protobuf::Message> message(factory.GetPrototype(outer)->New());
  EXPECT_FALSE(message->ParseFromString(wire));
  EXPECT_EQ(Find(*outer, wire), "item[1].value.string_value@0");
}

TEST_F(WireUtf8Test, NestingIsWalkedToProtobufsDepthAndNoFurther) {
  // Value{list_value{values{...}}} `levels` deep around an invalid string.
  auto nested = [](int levels) {
    std::string wire = Field(3, "\xFF");
    for (int i = 0; i < levels; ++i) wire = Field(6, Field(1, wire));
    return wire;
  };
  std::string path;
  for (int i = 0; i < 20; ++i) path += "list_value.values[0].";
  EXPECT_FALSE(Parses<google::protobuf::Value>(nested(20)));
  EXPECT_EQ(Find(*google::protobuf::Value::descriptor(), nested(20)), path + "string_value@0");

  // Too deep for protobuf too: no answer, and no stack overflow.
  EXPECT_FALSE(Parses<google::protobuf::Value>(nested(5000)));
  EXPECT_EQ(Find(*google::protobuf::Value::descriptor(), nested(5000)), "none");
  std::string groups;
  for (int i = 0; i < 100000; ++i) groups += Tag(50, 3);
  EXPECT_EQ(Find(*v1::ChatRequest::descriptor(), groups), "none");
}

TEST(FirstInvalidUtf8ByteTest, Boundaries) {
  struct Case {
    std::string text;
    std::optional<size_t> byte;
  };
  const std::vector<Case> cases = {
      {"", std::nullopt},
      {"plain ASCII", std::nullopt},
      {std::string("nul \0 ok", 8), std::nullopt},
      {"\xC2\x80 \xDF\xBF", std::nullopt},                  // U+0080, U+07FF
      {"\xE0\xA0\x80 \xED\x9F\xBF \xEE\x80\x80 \xEF\xBF\xBF", std::nullopt},  // U+0800, U+D7FF, U+E000, U+FFFF
      {"\xF0\x90\x80\x80 \xF4\x8F\xBF\xBF", std::nullopt},  // U+10000, U+10FFFF
      {"ab\x80", 2},                                        // lone continuation byte
      {"\xC0\x80", 0},                                      // overlong NUL
      {"a\xC1\xBF", 1},                                     // overlong
      {"ab\xE0\x9F\xBF", 2},                                // overlong 3-byte
      {"\xED\xA0\x80", 0},                                  // surrogate U+D800
      {"x\xED\xBF\xBF", 1},                                 // surrogate U+DFFF
      {"\xF0\x8F\xBF\xBF", 0},                              // overlong 4-byte
      {"\xF4\x90\x80\x80", 0},                              // U+110000
      {"\xF5\x80\x80\x80", 0},
      {"\xFF", 0},
      {"€\xE2\x82", 3},                                     // truncated at the end
      {"\xE2\x82" "a", 0},                                  // bad continuation
      {"😀\xF0\x9F\x98", 4},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(FirstInvalidUtf8Byte(c.text), c.byte) << absl::CEscape(c.text);
  }
}

// Protobuf's verdict on one string, through a proto3 string field.
bool ProtobufAccepts(const std::string& text) { return Parses<v1::TokenizeRequest>(Field(2, text)); }

TEST_F(WireUtf8Test, Utf8ValidityIsProtobufs) {
  // Every 1- and 2-byte string; 3- and 4-byte ones from every lead and second
  // byte with the rest at the edges of the continuation range.
  const std::vector<uint8_t> edges = {0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
  std::vector<std::string> texts;
  for (int a = 0; a < 256; ++a) {
    texts.push_back(std::string(1, static_cast<char>(a)));
    for (int b = 0; b < 256; ++b) {
      const std::string two = {static_cast<char>(a), static_cast<char>(b)};
      texts.push_back(two);
      if (a < 0xE0) continue;
      for (uint8_t c : edges) {
        texts.push_back(two + static_cast<char>(c));
        if (a < 0xF0) continue;
        for (uint8_t d : edges) texts.push_back(two + static_cast<char>(c) + static_cast<char>(d));
      }
    }
  }
  int mismatches = 0;
  for (const std::string& text : texts) {
    const bool valid = !FirstInvalidUtf8Byte(text).has_value();
    if (valid != ProtobufAccepts(text) && ++mismatches <= 10) {
      ADD_FAILURE() << absl::CEscape(text) << ": ours " << valid << ", protobuf's " << !valid;
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << texts.size();
}

// Random ChatRequests whose strings are random mixes of valid and invalid
// UTF-8: the walker names a field exactly when protobuf rejects the bytes,
// the first invalid string on the wire, at the offset protobuf's own verdict
// on its prefixes gives.
TEST_F(WireUtf8Test, RandomRequestsAgreeWithProtobuf) {
  const std::vector<std::string> valid = {"a", "Z", " ", "é", "€", "你", "😀", "\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80",
                                          "\xED\x9F\xBF", "\xEE\x80\x80", "\xEF\xBF\xBF", "\xF0\x90\x80\x80",
                                          "\xF4\x8F\xBF\xBF"};
  const std::vector<std::string> invalid = {"\x80", "\xBF", "\xC0\x80", "\xC1\xBF", "\xE0\x80\x80", "\xE0\x9F\xBF",
                                            "\xED\xA0\x80", "\xED\xBF\xBF", "\xF0\x80\x80\x80", "\xF0\x8F\xBF\xBF",
                                            "\xF4\x90\x80\x80", "\xF5\x80\x80\x80", "\xFE", "\xFF", "\xE2\x82",
                                            "\xF0\x9F\x98", "\xC3"};
  std::mt19937 random(13);
  auto text = [&] {
    std::string out;
    const int pieces = std::uniform_int_distribution<int>(0, 4)(random);
    for (int i = 0; i < pieces; ++i) {
      const bool bad = std::uniform_int_distribution<int>(0, 29)(random) == 0;
      const auto& from = bad ? invalid : valid;
      out += from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(random)];
    }
    return out;
  };
  struct Slot {
    std::string path, text;
  };
  int rejected = 0;
  for (int round = 0; round < 3000; ++round) {
    // Wire order: model, messages (role, content), parameters.stop, tools_json.
    std::vector<Slot> slots;
    std::string wire;
    slots.push_back({"model", text()});
    wire += Field(1, slots.back().text);
    const int messages = std::uniform_int_distribution<int>(0, 3)(random);
    for (int m = 0; m < messages; ++m) {
      const std::string role = text(), content = text();
      slots.push_back({absl::StrCat("messages[", m, "].role"), role});
      slots.push_back({absl::StrCat("messages[", m, "].content"), content});
      wire += Field(2, Field(1, role) + Field(2, content));
    }
    // max_tokens with the wrong wire type: an unknown field, skipped.
    std::string parameters = Field(1, "\xFF");
    const int stops = std::uniform_int_distribution<int>(0, 2)(random);
    for (int s = 0; s < stops; ++s) {
      slots.push_back({absl::StrCat("parameters.stop[", s, "]"), text()});
      parameters += Field(10, slots.back().text);
    }
    wire += Field(3, parameters);
    slots.push_back({"tools_json", text()});
    wire += Field(4, slots.back().text);

    std::string expected = "none";
    for (const Slot& slot : slots) {
      if (ProtobufAccepts(slot.text)) continue;
      size_t byte = slot.text.size();  // the longest prefix protobuf accepts
      while (!ProtobufAccepts(slot.text.substr(0, byte))) --byte;
      expected = absl::StrCat(slot.path, "@", byte);
      break;
    }
    const bool parses = Parses<v1::ChatRequest>(wire);
    rejected += !parses;
    ASSERT_EQ(parses, expected == "none") << absl::CEscape(wire);
    ASSERT_EQ(Find(*v1::ChatRequest::descriptor(), wire), expected) << absl::CEscape(wire);
  }
  // Both outcomes were exercised.
  EXPECT_GT(rejected, 300);
  EXPECT_LT(rejected, 2700);
}

}  // namespace
}  // namespace gantry::proto
