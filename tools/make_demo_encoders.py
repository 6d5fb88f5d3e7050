#!/usr/bin/env python3
"""Writes models/demo-embed and models/demo-rerank: the demo's embedding and
rerank models, which deploy/gantry.yaml serves beside the demo chat model.
Python's standard library only, like tools/make_demo_model.py; the same
arguments give the same bytes.

- tokenizer.json: BERT's WordPiece (BertNormalizer lowercasing,
  BertPreTokenizer, "[CLS] A [SEP]" / "[CLS] A [SEP] B [SEP]" templates)
  with a vocabulary built from the license texts in /usr/share/common-licenses:
  [PAD] [UNK] [CLS] [SEP] [MASK], every character of the texts and of
  printable ASCII alone and as a "##" continuation, the most frequent words and the most frequent word endings
  as "##" pieces. Also vocab.txt and tokenizer_config.json, as transformers
  writes them.
- demo-embed: a tiny BertModel (hidden 64, 2 layers, 4 heads, intermediate
  128, 512 positions) with random float32 weights and sentence-transformers
  files: CLS pooling, then Normalize; prompts "query" and "passage" (E5's).
- demo-rerank: the same encoder as a BertForSequenceClassification with one
  label (a cross-encoder, like bge-reranker): "bert."-prefixed tensors, the
  pooler and classifier [1, 64].

Random weights: the vectors and scores mean nothing, but every part of the
service (tokenizer, batching, pooling, normalizing, ranking) runs on them.

Usage: python3 tools/make_demo_encoders.py [models_dir]   (default: the repository's models/)
"""
import collections
import json
import os
import random
import sys
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_demo_model import LICENSES, write_safetensors  # noqa: E402

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS, SUFFIXES = 700, 150
HIDDEN, LAYERS, HEADS, INTER, POSITIONS, TYPES = 64, 2, 4, 128, 512, 2


def normalize(text):
    """BertNormalizer with lowercase (accents stripped, control characters dropped)."""
    out = []
    for c in unicodedata.normalize("NFD", text.lower()):
        cat = unicodedata.category(c)
        if cat == "Mn" or (cat in ("Cc", "Cf") and c not in "\t\n\r") or c in "\0\ufffd":
            continue
        out.append(" " if c.isspace() else c)
    return "".join(out)


def is_punctuation(c):
    o = ord(c)
    return 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126 or \
        unicodedata.category(c).startswith("P")


def pre_tokenize(text):
    """BertPreTokenizer: whitespace splits, every punctuation character is a word."""
    words = []
    for chunk in text.split():
        current = ""
        for c in chunk:
            if is_punctuation(c):
                if current:
                    words.append(current)
                words.append(c)
                current = ""
            else:
                current += c
        if current:
            words.append(current)
    return words


def build_vocab(text):
    words = collections.Counter(pre_tokenize(normalize(text)))
    # Every printable ASCII character too, so that no ASCII text meets [UNK].
    ascii_chars = {c for c in map(chr, range(33, 127)) if not c.isupper()}
    chars = sorted({c for w in words for c in w} | ascii_chars)
    vocab = list(SPECIAL) + chars + ["##" + c for c in chars]
    by_count = lambda kv: (-kv[1], kv[0])  # most frequent first, ties alphabetical
    whole = [w for w, _ in sorted(words.items(), key=by_count) if len(w) > 1][:WORDS]
    vocab += whole
    endings = collections.Counter()
    for w, n in words.items():
        for length in (2, 3, 4):
            if len(w) >= length + 2:
                endings[w[-length:]] += n
    vocab += ["##" + e for e, _ in sorted(endings.items(), key=by_count)[:SUFFIXES]]
    assert len(vocab) == len(set(vocab))
    return {token: i for i, token in enumerate(vocab)}


def tokenizer_json(vocab):
    special = lambda t: {"id": t, "type_id": 0}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t in SPECIAL],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": special("[CLS]")}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": special("[SEP]")}],
            "pair": [{"SpecialToken": special("[CLS]")}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": special("[SEP]")}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {t: {"id": t, "ids": [vocab[t]], "tokens": [t]} for t in ("[CLS]", "[SEP]")},
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    }


def dump(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_tokenizer(out, vocab):
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(vocab), f, ensure_ascii=False)
    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in vocab))
    dump(os.path.join(out, "tokenizer_config.json"), {
        "clean_up_tokenization_spaces": True, "cls_token": "[CLS]", "do_lower_case": True, "mask_token": "[MASK]",
        "model_max_length": POSITIONS, "pad_token": "[PAD]", "sep_token": "[SEP]", "strip_accents": None,
        "tokenize_chinese_chars": True, "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]"})
    dump(os.path.join(out, "special_tokens_map.json"), {
        "cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]"})


def config_json(architecture, vocab_size, extra):
    config = {
        "architectures": [architecture], "model_type": "bert", "vocab_size": vocab_size, "hidden_size": HIDDEN,
        "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "max_position_embeddings": POSITIONS, "type_vocab_size": TYPES, "layer_norm_eps": 1e-12,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02, "position_embedding_type": "absolute", "pad_token_id": 0,
        "torch_dtype": "float32",
    }
    config.update(extra)
    return config


def bert_tensors(rng, vocab_size, prefix, pooler):
    def normal(shape, std=0.08):
        n = 1
        for d in shape:
            n *= d
        return list(shape), [rng.gauss(0.0, std) for _ in range(n)]

    # Norms near, not at, 1 and 0: a loader that skipped them would show.
    def norm(name):
        tensors[name + ".weight"] = ([HIDDEN], [1.0 + rng.gauss(0.0, 0.05) for _ in range(HIDDEN)])
        tensors[name + ".bias"] = ([HIDDEN], [rng.gauss(0.0, 0.05) for _ in range(HIDDEN)])

    def linear(name, rows, cols):
        tensors[name + ".weight"] = normal((rows, cols))
        tensors[name + ".bias"] = normal((rows,), 0.02)

    p = prefix
    tensors = {p + "embeddings.word_embeddings.weight": normal((vocab_size, HIDDEN), 0.5),
               p + "embeddings.position_embeddings.weight": normal((POSITIONS, HIDDEN), 0.1),
               p + "embeddings.token_type_embeddings.weight": normal((TYPES, HIDDEN), 0.1)}
    norm(p + "embeddings.LayerNorm")
    for i in range(LAYERS):
        layer = f"{p}encoder.layer.{i}."
        for part in ("query", "key", "value"):
            linear(layer + "attention.self." + part, HIDDEN, HIDDEN)
        linear(layer + "attention.output.dense", HIDDEN, HIDDEN)
        norm(layer + "attention.output.LayerNorm")
        linear(layer + "intermediate.dense", INTER, HIDDEN)
        linear(layer + "output.dense", HIDDEN, INTER)
        norm(layer + "output.LayerNorm")
    if pooler:
        linear(p + "pooler.dense", HIDDEN, HIDDEN)
    return tensors


def write_embed(out, vocab):
    os.makedirs(os.path.join(out, "1_Pooling"), exist_ok=True)
    os.makedirs(os.path.join(out, "2_Normalize"), exist_ok=True)
    write_tokenizer(out, vocab)
    dump(os.path.join(out, "config.json"), config_json("BertModel", len(vocab), {}))
    dump(os.path.join(out, "modules.json"), [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
    dump(os.path.join(out, "1_Pooling", "config.json"), {
        "word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False, "include_prompt": True})
    # sentence-transformers writes 2_Normalize as an empty folder; a marker keeps it in git.
    open(os.path.join(out, "2_Normalize", ".gitkeep"), "w").close()
    dump(os.path.join(out, "sentence_bert_config.json"), {"max_seq_length": POSITIONS, "do_lower_case": False})
    dump(os.path.join(out, "config_sentence_transformers.json"), {
        "prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None,
        "similarity_fn_name": "cosine"})
    # The pooler is in BertModel's checkpoints, but CLS pooling never uses it.
    tensors = bert_tensors(random.Random(20261201), len(vocab), "", pooler=True)
    write_safetensors(os.path.join(out, "model.safetensors"), tensors)
    return tensors


def write_rerank(out, vocab):
    os.makedirs(out, exist_ok=True)
    write_tokenizer(out, vocab)
    dump(os.path.join(out, "config.json"), config_json(
        "BertForSequenceClassification", len(vocab), {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}))
    rng = random.Random(20261202)
    tensors = bert_tensors(rng, len(vocab), "bert.", pooler=True)
    tensors["classifier.weight"] = ([1, HIDDEN], [rng.gauss(0.0, 0.3) for _ in range(HIDDEN)])
    tensors["classifier.bias"] = ([1], [0.0])
    write_safetensors(os.path.join(out, "model.safetensors"), tensors)
    return tensors


def main():
    models = os.path.normpath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "models"))
    text = "".join(open(f"/usr/share/common-licenses/{name}", encoding="utf-8").read() for name in LICENSES)
    vocab = build_vocab(text)
    for name, write in (("demo-embed", write_embed), ("demo-rerank", write_rerank)):
        out = os.path.join(models, name)
        tensors = write(out, vocab)
        print(f"wrote {out}: {len(vocab)} tokens, {sum(len(v) for _, v in tensors.values())} parameters")


if __name__ == "__main__":
    main()
