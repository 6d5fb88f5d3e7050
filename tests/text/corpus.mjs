// The multilingual corpus every tokenizer golden encodes (Chinese, Japanese,
// Korean, Arabic, emoji, accents, whitespace, code, special-token text),
// built here, deterministically, so it is reviewable in one place.
const base = [
  // English and punctuation
  "Hello world", "Hello, world!", "The quick brown fox jumps over the lazy dog.", "I'm sure you'll see they've gone.",
  "IT'S ALL CAPS, ISN'T IT?", "don't won't can't shouldn't", "e-mail: someone@example.com", "https://example.com/a?b=c&d=e#f",
  "(parentheses) [brackets] {braces} <angles>", "a.b.c...d!!!e???", "\"quoted\" and 'single'", "50% off — only $9.99!",
  // Chinese, Japanese, Korean, Arabic, others
  "你好，世界", "机器学习是人工智能的一个分支。", "请用中文回答：什么是大语言模型？", "数据不能离开大楼：金融、医疗、政府。",
  "今天天气很好，我们去公园散步吧！", "中文English混合mixed文本", "こんにちは世界", "東京は日本の首都です。", "カタカナとひらがなと漢字",
  "안녕하세요 세계", "한국어 문장도 잘 처리해야 합니다.", "مرحبا بالعالم", "اللغة العربية تكتب من اليمين إلى اليسار",
  "Привет, мир!", "Γειά σου Κόσμε", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Tiếng Việt có dấu", "שלום עולם",
  "Ünïcödé àccénts çà et là", "ß ẞ ﬁ ﬂ Å Å é é", "e\u0301 vs \u00e9 (combining)", "\u1100\u1161\u11a8 jamo",
  // Code
  "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}", "const x = () => { return 42; };",
  "SELECT * FROM users WHERE id = 1;", "<div class=\"a\">text</div>", "#include <vector>\nint main() { return 0; }",
  "if err != nil {\n\treturn err\n}", "x = [1, 2, 3]\nprint(sum(x))", "fn main() { println!(\"hi\"); }", "$ ls -la | grep foo > out.txt",
  "{\"key\": \"value\", \"list\": [1, 2, {\"n\": null}]}", "// comment\n/* block */", "a==b && c!=d || !e",
  // Emoji and ZWJ
  "🤗", "😀😃😄😁", "👍🏽 thumbs", "👨‍👩‍👧‍👦 family", "🏳️‍🌈 flag", "🧑🏿‍💻 coder", "❤️‍🔥", "🇨🇳🇺🇸🇯🇵", "emoji 🎉 in text 🎈 ok",
  "1️⃣2️⃣3️⃣", "\u200d\u200d", "a\u200bb\u200cc", "\ufeffBOM start",
  // Whitespace
  " ", "  ", "   leading", "trailing   ", "\t", "\t\ttabs\t\t", "\n", "\n\n\n", "line1\nline2\r\nline3\rline4",
  "a  b   c    d", " \t \n mixed \n\t ", "\u00a0nbsp\u00a0", "\u3000ideographic\u3000space", "end with newline\n",
  "    indented code", "\n\n    \n", "word\n\n\n\nword",
  // Digits
  "0", "12", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000", "2026-11-25", "v1.2.3", "0x1F", "1e10",
  "٣٤٥ arabic digits", "１２３ fullwidth", "phone: +1 (555) 123-4567",
  // Special tokens written in the text
  "<s>", "</s>", "<s>Hello</s>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
  "<|im_start|>system\nYou are helpful.<|im_end|>", "<|im_end|>", "<|endoftext|>", "text<|im_end|>text", "<think>\nhmm\n</think>",
  "<|im_start|><|im_end|>", "< s >", "<|eot_id", "<|im_start", "<unk>",
  // Invalid-looking input
  "\ufffd", "\ufffd\ufffd replacement", "<0x41>", "<0xFF><0x00>", "\\x00\\xff", "\\u0000", "%00%ff", "&lt;&gt;&amp;",
  "\u0301 lone combining", "\u202eRTL override", "\ud83d\ude00 surrogate pair", "\u0000nul", "\u007fdel", "\u001b[31mred\u001b[0m",
  "ĠĊ byte chars", "▁metaspace▁", "Ġ", "ĉ", "Ã©", "ï»¿",
];

// Pairs and whitespace variants bring the corpus past 300 strings while
// exercising boundaries between scripts, digits, emoji and special tokens.
const corpus = [...base];
for (let i = 0; i < base.length; i += 3) corpus.push(base[i] + " " + base[(i * 7 + 5) % base.length]);
for (let i = 1; i < base.length; i += 4) corpus.push(base[i] + base[(i * 11 + 3) % base.length]);
for (let i = 2; i < base.length; i += 5) corpus.push(" " + base[i], base[i] + "\n");
for (let i = 0; i < base.length; i += 2) corpus.push(base[i] + "\n\n" + base[(i * 5 + 1) % base.length]);
corpus.push("长".repeat(200), "ab".repeat(300), "1".repeat(50), " ".repeat(40) + "x", "🤗".repeat(20));
export const baseCorpus = base;
export const unique = [...new Set(corpus)];
