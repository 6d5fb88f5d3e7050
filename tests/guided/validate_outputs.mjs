// Validates the guided decoder's random-walk outputs (written by
// guided_tests into the build folder): JSON Schema outputs with ajv (draft
// 2020-12, ajv-formats), any-JSON outputs as top-level objects, regex outputs
// as whole matches of JavaScript RegExp (u flag), choice outputs as members of
// their list. Every JSON output must also use only the allowed whitespace: one
// optional space after ':' or ',' outside strings.
// Usage: node validate_outputs.mjs BUILD_DIR
import fs from "node:fs";
import path from "node:path";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const dir = process.argv[2];
const lines = (file) => {
  const p = path.join(dir, file);
  if (!fs.existsSync(p)) throw new Error(`${p} is missing: run guided_tests and guided_model_tests first`);
  return fs.readFileSync(p, "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
};

function whitespaceError(text) {
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (/\s/.test(c) && !(c === " " && (text[i - 1] === ":" || text[i - 1] === ","))) {
      return `whitespace ${JSON.stringify(c)} at ${i}`;
    }
  }
  return null;
}

const failures = [];
let checked = 0;
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);

// Random walks (guided_tests) and the demo model's outputs (guided_model_tests).
const both = (file) => [...lines(file), ...lines(`demo_${file}`)];
for (const { schema, output } of both("schema_outputs.jsonl")) {
  checked++;
  let value;
  try {
    value = JSON.parse(output);
  } catch (e) {
    failures.push(`not JSON: ${output}\n  schema ${JSON.stringify(schema)}`);
    continue;
  }
  const ws = whitespaceError(output);
  if (ws) failures.push(`${ws}: ${output}`);
  const validate = ajv.compile(schema);
  if (!validate(value)) {
    failures.push(`invalid: ${output}\n  schema ${JSON.stringify(schema)}\n  ${ajv.errorsText(validate.errors)}`);
  }
}
for (const { output } of lines("any_json_outputs.jsonl")) {
  checked++;
  try {
    const v = JSON.parse(output);
    if (v === null || typeof v !== "object" || Array.isArray(v)) failures.push(`not an object: ${output}`);
    const ws = whitespaceError(output);
    if (ws) failures.push(`${ws}: ${output}`);
  } catch (e) {
    failures.push(`not JSON: ${output}`);
  }
}
for (const { regex, output } of both("regex_outputs.jsonl")) {
  checked++;
  if (!new RegExp(`^(?:${regex})$`, "u").test(output)) failures.push(`/${regex}/ does not match ${JSON.stringify(output)}`);
}
for (const { choices, output } of both("choice_outputs.jsonl")) {
  checked++;
  if (!choices.includes(output)) failures.push(`${JSON.stringify(output)} is not one of ${JSON.stringify(choices)}`);
}

if (failures.length > 0) {
  console.error(failures.slice(0, 20).join("\n"));
  console.error(`${failures.length} of ${checked} outputs failed validation`);
  process.exit(1);
}
console.log(`${checked} outputs valid`);
