// Writes golden/bert.json and golden/xlmr.json: the corpus (corpus.mjs plus
// the encoder cases below) encoded as single texts and as pairs by Hugging
// Face's Rust `tokenizers` (0.22, through its Node binding
// @anush008/tokenizers), with the WordPiece and Unigram tokenizers in
// encoders/ (make_encoder_fixtures.mjs) and variants of them: each variant is
// a set of JSON-pointer replacements the C++ test applies to the same
// tokenizer.json. Rust is the reference because transformers.js (@lenml/
// tokenizers) approximates the Precompiled normalizer with NFKC; how often it
// agrees is printed, not stored. Usage: node make_encoder_goldens.mjs [out_dir]
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { Tokenizer } from "@anush008/tokenizers";
import { TokenizerLoader } from "@lenml/tokenizers";
import { unique } from "./corpus.mjs";
import { applyPatch } from "./json_patch.mjs";

// Cases for encoder tokenizers: BERT's and SentencePiece's normalization
// corners, special tokens of these vocabularies, over-long words.
const extra = [
  "[CLS] hi [SEP]", "[MASK]", "Paris is the [MASK] of France.", "Paris is the <mask> of France.", "<mask>", "hello<mask>",
  "[UNK] unknown", "unaffable ##ing", "ｶﾞｷﾞ halfwidth", "Ａ\u0301 fullwidth + acute", "①②③ ⑴ ㍻ ㎏ ™", "… ‥ 〜 ～",
  "ǅemal ǈ", "İstanbul ΣΑΣ ς", "soft\u00adhyphen", "x\u0085y", "a\u0007b\u001fc", "\ue000 private use", "𠀀𪜀𫝀 CJK ext",
  "丽 CJK compatibility 豈", "a".repeat(101), "b".repeat(100), "日本語".repeat(40), "naïve café résumé Ångström",
  "Crème brûlée für Größe", "ﬁnancial ﬂow", "\u00a0\u2009\u200a\u3000 spaces", "tab\there", "مرحبا٬ بالعالم؟", "ｈｅｌｌｏ　ｗｏｒｌｄ",
];
const texts = [...new Set([...unique, ...extra])];
const pairs = [];
for (let i = 0; i < texts.length; i += 3) pairs.push([i, (i * 13 + 7) % texts.length]);

const post = {
  bertProcessing: { type: "BertProcessing", sep: ["[SEP]", 102], cls: ["[CLS]", 101] },
  robertaProcessing: { type: "RobertaProcessing", sep: ["</s>", 2], cls: ["<s>", 0], trim_offsets: true, add_prefix_space: true },
};
const bertNormalizer = (options) => ({ type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true, ...options });

// what: "full" (singles with and without specials, decoding, pairs),
// "singles" (ids), "pairs" (pairs with and without specials).
const families = {
  bert: {
    dir: "encoders/bert-base-uncased",
    variants: [
      { name: "uncased", what: "full", patch: {} },
      { name: "cased", what: "singles", patch: { "/normalizer": bertNormalizer({ lowercase: false }) } },
      { name: "strip_accents_only", what: "singles", patch: { "/normalizer": bertNormalizer({ lowercase: false, strip_accents: true }) } },
      { name: "raw", what: "singles", patch: { "/normalizer": bertNormalizer({ clean_text: false, handle_chinese_chars: false, strip_accents: false }) } },
      { name: "bert_processing", what: "pairs", patch: { "/post_processor": post.bertProcessing } },
      { name: "no_post_processor", what: "pairs", patch: { "/post_processor": null } },
    ],
  },
  xlmr: {
    dir: "encoders/xlmr-unigram",
    variants: [
      { name: "template", what: "full", patch: {} },
      { name: "byte_fallback", what: "singles", patch: { "/model/byte_fallback": true } },
      { name: "nfkc", what: "singles", patch: { "/normalizer/normalizers/0": { type: "NFKC" } } },
      { name: "roberta_processing", what: "pairs", patch: { "/post_processor": post.robertaProcessing } },
    ],
  },
};

const outDir = process.argv[2] ?? "golden";
mkdirSync(outDir, { recursive: true });
for (const [family, { dir, variants }] of Object.entries(families)) {
  const base = readFileSync(`${dir}/tokenizer.json`, "utf8");
  const out = { tokenizer: dir, texts, pairs, variants: [] };
  for (const { name, what, patch } of variants) {
    const json = applyPatch(JSON.parse(base), patch);
    const tokenizer = Tokenizer.fromString(JSON.stringify(json));
    const encode = async (a, b, addSpecialTokens) => {
      const e = await tokenizer.encode(a, b ?? null, { addSpecialTokens });
      return [e.getIds(), e.getTypeIds()];
    };
    const variant = { name, patch };
    if (what !== "pairs") {
      variant.singles = [];
      for (const text of texts) {
        const [ids, types] = await encode(text, null, true);
        if (types.some((t) => t !== 0)) throw new Error(`${name}: single text with a non-zero type id`);
        const single = { ids };
        if (what === "full") {
          single.plain = (await encode(text, null, false))[0];
          single.decoded = await tokenizer.decode(ids, false);
          single.skipped = await tokenizer.decode(ids, true);
        }
        variant.singles.push(single);
      }
    }
    if (what !== "singles") {
      variant.pairs = [];
      for (const [a, b] of pairs) {
        const [ids, type_ids] = await encode(texts[a], texts[b], true);
        const [plain, plain_type_ids] = await encode(texts[a], texts[b], false);
        variant.pairs.push({ ids, type_ids, plain, plain_type_ids });
      }
    }
    if (what === "full") {  // transformers.js, for the record
      const js = TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: {} });
      let same = 0;
      texts.forEach((text, i) => { same += JSON.stringify(Array.from(js.encode(text))) === JSON.stringify(variant.singles[i].ids); });
      console.error(`${family}/${name}: transformers.js agrees on ${same}/${texts.length} texts`);
    }
    out.variants.push(variant);
  }
  writeFileSync(`${outDir}/${family}.json`, JSON.stringify(out) + "\n");
  console.log(`${family}: ${texts.length} texts, ${pairs.length} pairs, ${variants.length} variants`);
}
