// Writes golden/truncation.json: a sample of the corpus encoded as single
// texts and as pairs with truncation to several max lengths by Hugging Face's
// Rust `tokenizers` (0.22, through its Node binding @anush008/tokenizers),
// as transformers' fast tokenizers truncate (longest_first, right, stride 0),
// with and without special tokens. The tokenizers are those of
// make_encoder_goldens.mjs, and some of its post-processor variants, since
// the budget left for the texts depends on how many tokens the
// post-processor adds. Usage: node make_truncation_goldens.mjs [out_dir]
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { Tokenizer } from "@anush008/tokenizers";
import { unique } from "./corpus.mjs";
import { applyPatch } from "./json_patch.mjs";

// Long texts, so that large max lengths truncate too, and both texts of a
// pair get cut.
const long = [
  "The quick brown fox jumps over the lazy dog. ".repeat(12),
  "机器学习是人工智能的一个分支。".repeat(8),
  "Paris is the capital of France, and its museums, cafés and bridges draw visitors all year round. ".repeat(4),
];
const texts = [...unique.filter((_, i) => i % 5 === 0), ...long];
const pairs = [];
for (let i = 0; i < texts.length; i += 2) pairs.push([i, (i * 7 + 3) % texts.length]);
for (let i = 0; i < long.length; ++i) {  // long with long, long with short
  const at = texts.length - long.length + i;
  pairs.push([at, texts.length - long.length + ((i + 1) % long.length)], [at, i], [i + 1, at]);
}

// Below the special-token count of a text (2) or a pair (3 or 4) the Rust
// library's budget underflows and its release build skips truncation; the
// C++ test checks that we refuse such lengths instead, so none is recorded.
const maxLengths = [1, 2, 3, 4, 5, 8, 16, 33, 100];

const post = {
  bertProcessing: { type: "BertProcessing", sep: ["[SEP]", 102], cls: ["[CLS]", 101] },
  robertaProcessing: { type: "RobertaProcessing", sep: ["</s>", 2], cls: ["<s>", 0], trim_offsets: true, add_prefix_space: true },
};
const families = {
  bert: {
    dir: "encoders/bert-base-uncased",
    variants: [
      { name: "uncased", patch: {} },
      { name: "bert_processing", patch: { "/post_processor": post.bertProcessing } },
      { name: "no_post_processor", patch: { "/post_processor": null } },
    ],
  },
  xlmr: {
    dir: "encoders/xlmr-unigram",
    variants: [
      { name: "template", patch: {} },
      { name: "roberta_processing", patch: { "/post_processor": post.robertaProcessing } },
    ],
  },
};

const outDir = process.argv[2] ?? "golden";
mkdirSync(outDir, { recursive: true });
const out = { texts, pairs, families: [] };
let truncated = 0, recorded = 0;
for (const [family, { dir, variants }] of Object.entries(families)) {
  const base = readFileSync(`${dir}/tokenizer.json`, "utf8");
  const entry = { family, tokenizer: dir, variants: [] };
  for (const { name, patch } of variants) {
    const tokenizer = Tokenizer.fromString(JSON.stringify(applyPatch(JSON.parse(base), patch)));
    const encode = async (a, b, addSpecialTokens) => {
      const e = await tokenizer.encode(a, b, { addSpecialTokens });
      return [e.getIds(), e.getTypeIds()];
    };
    // What the post-processor adds: the length of an encoding of empty texts.
    const added = [(await encode("", null, true))[0].length, (await encode("", "", true))[0].length];
    const full = { singles: [], pairs: [] };  // untruncated lengths, to count what truncation changed
    for (const text of texts) full.singles.push((await encode(text, null, true))[0].length);
    for (const [a, b] of pairs) full.pairs.push((await encode(texts[a], texts[b], true))[0].length);
    const variant = { name, patch, added_single: added[0], added_pair: added[1], max_lengths: [] };
    for (const maxLength of maxLengths) {
      tokenizer.setTruncation(maxLength, { strategy: "LongestFirst", direction: "right", stride: 0 });
      const at = { max_length: maxLength };
      // "plain" (no special tokens) has the whole max_length for the texts.
      if (maxLength >= added[0]) {
        at.singles = [];
        for (const [i, text] of texts.entries()) {
          const [ids, type_ids] = await encode(text, null, true);
          const [plain, plain_type_ids] = await encode(text, null, false);
          if (ids.length > maxLength || plain.length > maxLength) throw new Error(`${name}: over ${maxLength}`);
          at.singles.push({ ids, type_ids, plain, plain_type_ids });
          truncated += ids.length < full.singles[i];
          ++recorded;
        }
      }
      if (maxLength >= added[1]) {
        at.pairs = [];
        for (const [i, [a, b]] of pairs.entries()) {
          const [ids, type_ids] = await encode(texts[a], texts[b], true);
          const [plain, plain_type_ids] = await encode(texts[a], texts[b], false);
          if (ids.length > maxLength || plain.length > maxLength) throw new Error(`${name}: pair over ${maxLength}`);
          at.pairs.push({ ids, type_ids, plain, plain_type_ids });
          truncated += ids.length < full.pairs[i];
          ++recorded;
        }
      }
      variant.max_lengths.push(at);
    }
    tokenizer.disableTruncation();
    entry.variants.push(variant);
  }
  out.families.push(entry);
}
writeFileSync(`${outDir}/truncation.json`, JSON.stringify(out) + "\n");
console.log(`truncation: ${texts.length} texts, ${pairs.length} pairs, ${maxLengths.length} max lengths; ` +
            `${truncated} of ${recorded} encodings with special tokens truncated`);
