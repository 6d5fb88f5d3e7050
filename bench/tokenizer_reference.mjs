// Reference side of bench/tokenizer_bench.cc: @lenml/tokenizers (a
// transformers.js fork) on the same documents. Prints "encode_mbps decode_mbps tokens".
// Usage: node tokenizer_reference.mjs CORPUS.json TOKENIZER_DIR ROUNDS
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(join(dirname(fileURLToPath(import.meta.url)), "../tests/text/package.json"));
const { TokenizerLoader } = require("@lenml/tokenizers");
const [corpusPath, dir, roundsText] = process.argv.slice(2);
const documents = JSON.parse(readFileSync(corpusPath, "utf8"));
const load = () =>
  TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")),
    tokenizerConfig: JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")),
  });
const bytes = documents.reduce((n, d) => n + Buffer.byteLength(d, "utf8"), 0);
let best = [0, 0, 0];
for (let round = 0; round < Number(roundsText ?? 3); ++round) {
  const tokenizer = load();  // a cold cache each round, untimed
  let start = performance.now();
  const ids = documents.map((d) => tokenizer.encode(d, { add_special_tokens: false }));
  const encodeS = (performance.now() - start) / 1e3;
  start = performance.now();
  let decoded = 0;
  for (const x of ids) decoded += Buffer.byteLength(tokenizer.decode(x, { clean_up_tokenization_spaces: false }), "utf8");
  const decodeS = (performance.now() - start) / 1e3;
  const tokens = ids.reduce((n, x) => n + x.length, 0);
  best = [Math.max(best[0], bytes / 1e6 / encodeS), Math.max(best[1], decoded / 1e6 / decodeS), tokens];
}
console.log(`${best[0]} ${best[1]} ${best[2]}`);
