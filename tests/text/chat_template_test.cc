#include "text/chat_template.h"

#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "text/json_limits.h"
#include "tests/text/text_test_util.h"

namespace gantry::text {
namespace {

using ::testing::HasSubstr;
using ordered_json = nlohmann::ordered_json;

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

TEST(ChatTemplateTest, RendersLikeHuggingFaceJinja) {
  ordered_json golden = ordered_json::parse(ReadText(std::string(GANTRY_TEXT_DIR) + "/golden/chat.json"));
  std::map<std::string, std::unique_ptr<ChatTemplate>> templates;
  for (const auto& [name, info] : golden["templates"].items()) {
    std::string source;
    if (info["file"].is_string()) {
      source = ReadText(std::string(GANTRY_TEXT_DIR) + "/" + info["file"].get<std::string>());
    } else {
      auto tokenizer = testing::LoadTokenizer(name);
      ASSERT_NE(tokenizer, nullptr);
      source = tokenizer->chat_template();
    }
    auto chat = ChatTemplate::Create(source, info["bos"], info["eos"]);
    ASSERT_TRUE(chat.ok()) << name << ": " << chat.status();
    templates[name] = *std::move(chat);
  }
  int renders = 0;
  for (const auto& c : golden["cases"]) {
    const std::string label = c["template"].get<std::string>() + "/" + c["conversation"].get<std::string>() +
                              (c["add_generation_prompt"].get<bool>() ? "+prompt" : "") +
                              (c["tools"].is_null() ? "" : "+tools");
    auto rendered = templates.at(c["template"])->Render(golden["conversations"][c["conversation"].get<std::string>()],
                                                        c["add_generation_prompt"], c["tools"]);
    if (c["error"].is_string()) {
      ASSERT_FALSE(rendered.ok()) << label;
      EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(rendered.status().message(), HasSubstr(c["error"].get<std::string>())) << label;
    } else {
      ASSERT_TRUE(rendered.ok()) << label << ": " << rendered.status();
      EXPECT_EQ(*rendered, c["output"].get<std::string>()) << label;
    }
    ++renders;
  }
  EXPECT_GE(renders, 70);
}

TEST(ChatTemplateTest, UnsupportedConstructsFailAtLoadNamingLine) {
  struct Case {
    std::string source, message;
  };
  for (const Case& c : std::vector<Case>{
           {"line one\n{% include 'other.jinja' %}", "unsupported construct {% include %} at line 2"},
           {"{% extends 'base' %}", "unsupported construct {% extends %} at line 1"},
           {"{% raw %}x{% endraw %}", "unsupported construct {% raw %} at line 1"},
           {"a\nb\n{{ x | frobnicate }}", "unsupported filter 'frobnicate' at line 3"},
           {"{% if x is prime %}{% endif %}", "unsupported test 'prime' at line 1"},
           {"{% for m in messages %}\n{{ m }}", "missing {% endfor %} before the end of the template"},
           {"{% if x %}", "missing {% endif %}"},
           {"{{ x ", "unterminated {{ at line 1"},
           {"{% break %}", "{% break %} outside a loop"},
           {"{{ 'abc }}", "unterminated string"},
       }) {
    auto chat = ChatTemplate::Create(c.source, "", "");
    ASSERT_FALSE(chat.ok()) << c.source;
    EXPECT_EQ(chat.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(chat.status().message(), HasSubstr(c.message)) << c.source;
  }
}

TEST(ChatTemplateTest, RuntimeErrorsNameTheLine) {
  auto chat = ChatTemplate::Create("ok\n{{ messages[0].content + 1 }}", "", "");
  ASSERT_TRUE(chat.ok()) << chat.status();
  auto rendered = (*chat)->Render(ordered_json::parse(R"([{"role": "user", "content": "x"}])"), false);
  ASSERT_FALSE(rendered.ok());
  EXPECT_THAT(rendered.status().message(), HasSubstr("line 2"));
  EXPECT_THAT(rendered.status().message(), HasSubstr("unsupported operand types for +: string and integer"));
}

// Hostile templates fail with an error instead of overflowing the stack
// (each of these crashed the server before the nesting limits).
TEST(ChatTemplateTest, DeepNestingIsRefusedAtLoad) {
  const std::string parens = "{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}";
  const std::string lists = "{{ " + std::string(100000, '[') + std::string(100000, ']') + " }}";
  const std::string minus = "{{ " + std::string(100000, '-') + "1 }}";
  const std::string nots = "{{ " + [] {
    std::string s;
    for (int i = 0; i < 100000; ++i) s += "not ";
    return s;
  }() + "x }}";
  std::string ifs;
  for (int i = 0; i < 100000; ++i) ifs += "{% if x %}";
  for (const std::string* source : std::vector<const std::string*>{&parens, &lists, &minus, &nots, &ifs}) {
    auto chat = ChatTemplate::Create(*source, "", "");
    ASSERT_FALSE(chat.ok());
    EXPECT_EQ(chat.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(chat.status().message(), HasSubstr("nested deeper than 200 levels"));
  }
  // Real nesting well inside the limit still works.
  auto fine = ChatTemplate::Create("{{ " + std::string(30, '(') + "1" + std::string(30, ')') + " }}", "", "");
  EXPECT_TRUE(fine.ok()) << fine.status();
}

TEST(ChatTemplateTest, BadEscapesAndHugeLiteralsAreErrorsNotCrashes) {
  // Found by tests/fuzz: "\\u" without four hex digits and an integer literal
  // past int64 threw out of the parser, which would take the server down
  // while loading the model.
  for (const char* source : {"{{ '\\u+1ab' }}", "{{ '\\uZZZZ' }}", "{{ 99999999999999999999999 }}"}) {
    auto chat = ChatTemplate::Create(source, "", "");
    ASSERT_FALSE(chat.ok()) << source;
    EXPECT_EQ(chat.status().code(), absl::StatusCode::kInvalidArgument) << source;
  }
  auto fine = ChatTemplate::Create("{{ '\\u00e9' }}", "", "");
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(*(*fine)->Render(ordered_json::parse("[]"), false), "\xc3\xa9");
}

TEST(ChatTemplateTest, DefaultArgumentsOutliveTheCall) {
  // Found by tests/fuzz (ASan, stack-use-after-scope): split() without a
  // separator read a destroyed default; indent() likewise.
  auto chat = ChatTemplate::Create("{{ 'a b  c'.split() | join(',') }}|{{ 'x\ny' | indent }}", "", "");
  ASSERT_TRUE(chat.ok()) << chat.status();
  auto text = (*chat)->Render(ordered_json::parse(R"([])"), false);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "a,b,c|x\n    y");
}

TEST(ChatTemplateTest, HugeOutputIsRefusedBeforeItIsBuilt) {
  // Issue 13: a template emitted 200 MB of prompt before the context check.
  const ordered_json messages = ordered_json::parse(R"([{"role": "user", "content": "x"}])");
  for (const char* source : {"{{ 'a' * 200000000 }}", "{{ [1] * 100000000000 }}",
                             "{% set s = 'abcdefgh' %}{% for i in range(30) %}{% set s = s ~ s %}{% endfor %}{{ s }}",
                             "{% for i in range(1000) %}{% for j in range(1000) %}{{ 'xxxxxxxxxx' }}{% endfor %}{% endfor %}",
                             "{{ 'a' * 9223372036854775807 }}"}) {
    auto chat = ChatTemplate::Create(source, "", "");
    ASSERT_TRUE(chat.ok()) << chat.status();
    auto rendered = (*chat)->Render(messages, false);
    ASSERT_FALSE(rendered.ok()) << source;
    EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(rendered.status().message(), HasSubstr("more than the limit of 8388608")) << source;
  }
  // Below the limit renders.
  auto fine = ChatTemplate::Create("{{ 'ab' * 1000 }}", "", "");
  ASSERT_TRUE(fine.ok());
  EXPECT_EQ((*fine)->Render(messages, false)->size(), 2000u);
}

TEST(ChatTemplateTest, RecursiveMacroIsAnErrorNotACrash) {
  auto chat = ChatTemplate::Create("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}", "", "");
  ASSERT_TRUE(chat.ok()) << chat.status();
  auto rendered = (*chat)->Render(ordered_json::parse(R"([{"role": "user", "content": "x"}])"), false);
  ASSERT_FALSE(rendered.ok());
  EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rendered.status().message(), HasSubstr("macro calls nested deeper than 64 levels"));
  // Bounded recursion renders.
  auto bounded = ChatTemplate::Create(
      "{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(10) }}", "", "");
  ASSERT_TRUE(bounded.ok()) << bounded.status();
  auto text = (*bounded)->Render(ordered_json::parse(R"([{"role": "user", "content": "x"}])"), false);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "10987654321");
}

TEST(JsonLimitsTest, DeepJsonIsRefusedWithoutBuildingIt) {
  const std::string deep = std::string(20000, '[') + std::string(20000, ']');
  auto parsed = ParseJsonLimited<ordered_json>(deep, "tools_json");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(parsed.status().message(), "tools_json is nested deeper than 100 levels");
  const std::string at_limit = std::string(100, '[') + std::string(100, ']');
  EXPECT_TRUE(ParseJsonLimited<ordered_json>(at_limit, "x").ok());
  const std::string over = std::string(101, '[') + std::string(101, ']');
  EXPECT_FALSE(ParseJsonLimited<ordered_json>(over, "x").ok());
  auto broken = ParseJsonLimited<ordered_json>("{\"a\": ", "the request body");
  EXPECT_EQ(broken.status().message(), "the request body is not valid JSON");
  auto value = ParseJsonLimited<ordered_json>(R"({"a": [1, {"b": 2}]})", "x");
  ASSERT_TRUE(value.ok());
  EXPECT_EQ((*value)["a"][1]["b"], 2);
}

TEST(ChatTemplateTest, PlainFormatWithoutTemplate) {
  auto chat = ChatTemplate::Create("", "<s>", "</s>");
  ASSERT_TRUE(chat.ok());
  EXPECT_TRUE((*chat)->is_plain());
  auto rendered = (*chat)->Render(
      ordered_json::parse(R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}])"), true);
  ASSERT_TRUE(rendered.ok());
  EXPECT_EQ(*rendered, "System: Be brief.\n\nUser: 你好\n\nAssistant:");
  auto bad = (*chat)->Render(ordered_json::parse(R"([{"content": "no role"}])"), true);
  EXPECT_THAT(bad.status().message(), HasSubstr("messages[0] needs a string \"role\""));
}

TEST(ChatTemplateTest, PythonSemanticsOfCommonExpressions) {
  struct Case {
    std::string source, expected;
  };
  for (const Case& c : std::vector<Case>{
           {"{{ [1, 2, 3][::-1] }}", "[3, 2, 1]"},
           {"{{ 'héllo'[1:3] }}", "él"},
           {"{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }}", "3 -4 2 3.5"},
           {"{{ none }} {{ true }} {{ 1.0 }}", "None True 1.0"},
           {"{{ 'a,b,,c'.split(',') }}", "['a', 'b', '', 'c']"},
           {"{{ '  x  '.strip() ~ '|' ~ 'xxhixx'.strip('x') }}", "x|hi"},
           {"{{ {'k': 'v'} | tojson }} {{ 'a\"b' | tojson }}", "{\"k\": \"v\"} \"a\\\"b\""},
           {"{% for i in range(3) %}{{ loop.revindex }}{% endfor %}", "321"},
           {"{% for x in [] %}a{% else %}empty{% endfor %}", "empty"},
           {"{% for x in [1,2,3,4] %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}", "12"},
           {"{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}", "1"},
           {"{{ 'yes' if 0 else 'no' }} {{ undefined_name is defined }} {{ 3 is odd }}", "no False True"},
           {"{% set a, b = [1, 2] %}{{ b }}{{ a }}", "21"},
           {"{{ [3, 1, 2] | sort | join('-') }} {{ ['a', 'b'] | first }} {{ 'abc' | reverse }}", "1-2-3 a cba"},
       }) {
    auto t = jinja::Template::Parse(c.source);
    ASSERT_TRUE(t.ok()) << c.source << ": " << t.status();
    auto rendered = (*t)->Render(ordered_json::object());
    ASSERT_TRUE(rendered.ok()) << c.source << ": " << rendered.status();
    EXPECT_EQ(*rendered, c.expected) << c.source;
  }
}

}  // namespace
}  // namespace gantry::text
