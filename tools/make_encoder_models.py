#!/usr/bin/env python3
"""Writes tiny random-weight embedding and rerank models and their reference outputs.

Run where torch, transformers, sentence-transformers, tokenizers and sentencepiece are installed (the GPU machine):
    python3 tools/make_encoder_models.py --out tests/models                        # the committed fixtures
    python3 tools/make_encoder_models.py --out tests/models --only qwen3_rerank    # one of them again
    python3 tools/make_encoder_models.py --bge_m3_shaped /tmp/bge_m3               # float16, not committed
    python3 tools/make_encoder_models.py --bench_st /tmp/bge_m3 --batches 1,32,256 --seq 512

Each folder under --out is a real Hugging Face model folder (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json, ...) with float32 weights, hidden 64, 2 layers, 4 heads,
intermediate 128, vocabulary under 1000, tokenizers trained here on CORPUS:
  bert_embed    BertModel, WordPiece; sentence-transformers: CLS pooling + Normalize, max_seq_length 128
  bert_rerank   BertForSequenceClassification, num_labels 1 (a cross-encoder like bge-reranker-large)
  xlmr_embed    XLMRobertaModel (pad 1, positions from 2, 66 positions), SentencePiece Unigram converted by
                transformers; sentence-transformers: MEAN pooling + Normalize, max_seq_length 64
  xlmr_rerank   XLMRobertaForSequenceClassification, num_labels 1 (like bge-reranker-v2-m3)
  qwen3_embed   Qwen3Model, byte-level BPE whose post-processor appends <|endoftext|>, left padding;
                sentence-transformers: LASTTOKEN pooling + Normalize, max_seq_length 64, Qwen3-Embedding prompts
  qwen3_rerank  Qwen3ForCausalLM (untied) scored as Qwen3-Reranker: P(yes) from the last position's [no, yes] logits

and two reference files:
  reference.json         the UTF-8 inputs ("texts", "long_text", "query", "documents", prompts, ...) and settings
  reference.safetensors  embed:  input_ids, offsets, token_type_ids (all texts concatenated, special tokens
                                 included, no padding, exactly as sentence-transformers tokenized them),
                                 embeddings [n, 64] (SentenceTransformer.encode, float32, CPU), long_input_ids,
                                 long_embedding [64]; qwen3_embed also query_input_ids, query_offsets,
                                 query_embeddings; with CUDA embeddings_bf16 (and query_embeddings_bf16)
                         rerank: input_ids, offsets, token_type_ids of the (query, document) pairs,
                                 logits [n] (raw, float32, CPU, eager), scores [n] = sigmoid(logits);
                                 with CUDA logits_bf16
                         qwen3_rerank: input_ids, offsets of the formatted prompts, yes_no_logits [n, 2]
                                 (no, yes), scores [n] = P(yes); with CUDA scores_bf16

References are computed from a fresh load of the saved folder (sentence-transformers for embeddings,
transformers for the classifiers), and each is checked against an independent computation: the
tokenizer.json alone (the tokenizers library) must give the same ids, pooling + normalize done by
hand on the transformers model must give the same embeddings, and CrossEncoder.predict must give
sigmoid(logits). Norm weights and biases are perturbed (HF initialises them to 1 and 0, which would
hide a loader that skips them). The classifiers' weights are the one, among SEED_CANDIDATES seeds,
whose documents' scores are furthest apart relative to the largest logit (and, with CUDA, keep
their order in bfloat16), so that a rerank order comparison in bfloat16 tests the runtime and not
a near tie.
"""
import argparse
import copy
import json
import math
import os
import shutil
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
import sentencepiece as spm
import tokenizers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
import transformers
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                          BertConfig, PreTrainedTokenizerFast, Qwen3Config, XLMRobertaConfig)
import sentence_transformers
from sentence_transformers import CrossEncoder, SentenceTransformer

HIDDEN = 64
LAYERS = 2
HEADS = 4
INTERMEDIATE = 128
INIT_RANGE = 0.15
SEED_CANDIDATES = 32

BERT_VOCAB = 600
XLMR_SPM_VOCAB = 800  # the SentencePiece model's size; the transformers tokenizer adds 2 (fairseq ids, <mask>)
QWEN_VOCAB = 600
BERT_MAX_LEN = 128
XLMR_MAX_LEN = 64
QWEN_EMBED_MAX_LEN = 64
QWEN_MAX_POSITIONS = 512

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QUERY_PROMPT = f"Instruct: {INSTRUCTION}\nQuery:"  # Qwen3-Embedding's "query" prompt
RERANK_PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
                 "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"

# Trains the three tokenizers (the qwen BPE also sees YES_NO and the reranker's prompt text).
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, hello again.",
    "A search engine retrieves relevant passages that answer the query.",
    "Embedding models map sentences to vectors; rerankers score query and document pairs.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "The Eiffel Tower was completed in 1889 and is 330 metres tall.",
    "Machine learning models run on GPUs with 80 GB of memory.",
    "How many people live in Tokyo? About 14 million people live there.",
    "Café, naïve, résumé, jalapeño, über, São Paulo, Ångström, façade, crème brûlée.",
    "El niño comió una manzana en la mañana. ¿Dónde está la biblioteca?",
    "Größe, Straße, Müller und Äpfel: Übung macht den Meister.",
    "Les élèves étudient à l'école près de la forêt, s'il vous plaît.",
    "Åsa och Örjan åkte till Göteborg på sommaren.",
    "机器学习是人工智能的一个分支。",
    "北京是中国的首都，上海是最大的城市。巴黎是法国的首都。",
    "我喜欢在周末读书和喝茶。",
    "東京は日本の首都です。",
    "私は毎朝コーヒーを飲みます。",
    "ひらがなとカタカナと漢字を使います。",
    "서울은 대한민국의 수도입니다.",
    "저는 매일 아침 커피를 마십니다.",
    "한국어 문장을 토큰으로 나눕니다.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "القاهرة هي عاصمة مصر، وباريس عاصمة فرنسا.",
    "Привет, как дела? Москва — столица России.",
    "Emoji: 😀 😂 👍 🎉 ❤️ 🚀 👋",
    "Family: 👨‍👩‍👧‍👦 and 👩‍💻 and 🏳️‍🌈",
    "Flags: 🇫🇷 🇩🇪 🇯🇵 🇺🇸 🇧🇷 🇰🇷",
    "Skin tones: 👋🏻 👋🏽 👋🏿",
    "Tabs\tand\ttabs, double  spaces,   triple   spaces.",
    "Line one\nline two\n\nline four after a blank line.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14159 1,000,000",
    "Punctuation!? (parentheses) [brackets] {braces} \"quotes\" 'single' -- dash... ellipsis; colon: a/b c\\d",
    "MiXeD CaSe WoRdS and ALL CAPS and lowercase words.",
    "E-mail: someone@example.com, URL: https://example.org/path?q=1&x=2",
    "C++ and Python: def f(x): return x * 2 + 1",
    "Is the document relevant? yes. Is it irrelevant? no.",
    "The answer can only be yes or no.",
    "Vector databases store embeddings for semantic search and retrieval.",
    "The reranker reorders candidate documents by relevance to the query.",
    "France is famous for wine, cheese and the city of Paris.",
]
YES_NO = ["yes", "no"] * 40 + ["yes no", "no yes", "yes\nno", "no\nyes"] * 10

# The reference inputs: other sentences than CORPUS, 3 to ~50 tokens, short enough that no tokenizer here
# truncates them (also after Qwen3-Embedding's query prompt: at most ~40 byte-level BPE tokens).
TEXTS = [
    "Hello world",
    "What is the capital of France?",
    "机器学习是人工智能的一个分支。",
    "Café au lait, s'il vous plaît! Größe: 42 ñ Å",
    "서울은 수도입니다. 東京は日本の首都です。",
    "مرحبا بالعالم 👋🏽 🇫🇷 👨‍👩‍👧‍👦",
    "Tabs\tand  double spaces\nnew line",
    "Embedding models map sentences to vectors; rerankers score each query and document pair in 2024.",
]
LONG_TEXT = (
    "Search engines first retrieve candidate passages with an embedding model and then reorder them with a "
    "reranker. The embedding model maps the query and every document to vectors, and the nearest vectors are kept. "
    "The reranker reads the query and one document together and returns a relevance score for the pair. "
    "机器学习是人工智能的一个分支，北京是中国的首都。東京は日本の首都です。서울은 대한민국의 수도입니다. "
    "مرحبا بالعالم، كيف حالك اليوم؟ Café, naïve, résumé, jalapeño, über, Ångström. "
    "Numbers like 3.14159, 2024 and 1,000,000 appear too, with emoji 😀 👍 🇯🇵 and punctuation (!?;:). "
    "Finally, the longest inputs are truncated to the maximum sequence length of the model, so this text is cut "
    "short: the tokens past that length never reach the model, whatever they say."
)
QUERY = "What is the capital of France?"
DOCUMENTS = [  # different lengths, some sharing words with the query
    "Paris is the capital of France.",
    "Berlin.",
    "France is famous for wine and cheese; its capital is Paris.",
    "巴黎是法国的首都。",
    "A quick brown fox jumps over the lazy dogs near the river.",
    "🇫🇷 Paris: capital city of France",
]


# ---------------------------------------------------------------------------------------------- helpers

def rope_kwargs(config_cls, theta):
    """transformers 5 takes rope_parameters; older versions rope_theta."""
    import inspect
    if "rope_parameters" in inspect.signature(config_cls.__init__).parameters:
        return {"rope_parameters": {"rope_type": "default", "rope_theta": theta}}
    return {"rope_theta": theta}


def dtype_kwarg():
    """from_pretrained's dtype argument: `dtype` in transformers 5, `torch_dtype` before."""
    return "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"


def versions():
    return {"sentence_transformers": sentence_transformers.__version__, "transformers": transformers.__version__,
            "pytorch": torch.__version__, "tokenizers": tokenizers.__version__,
            "sentencepiece": getattr(spm, "__version__", "?")}


def perturb(model, seed):
    """Random norm weights and biases: HF initialises them to 1 and 0, which would hide a loader that skips them."""
    g = torch.Generator().manual_seed(seed)
    norms = biases = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            low = name.lower()
            if low.endswith("norm.weight") or low.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * 0.1)
                norms += low.endswith("norm.weight")
                biases += low.endswith("bias")
    assert norms > 0, f"perturb found no norm weights in {type(model).__name__}: parameter names changed?"
    return norms, biases


def new_model(auto_cls, config, seed):
    """A float32 model with eager attention, random weights from `seed`, norms and biases perturbed."""
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = auto_cls.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    perturb(model, seed)
    return model


def fresh_folder(out_root, name):
    folder = os.path.join(out_root, name)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    return folder


def save_hf(model, tok, folder):
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    # transformers 4 also copies the SentencePiece model; tokenizer.json holds all of it, so keep folders small.
    spm_copy = os.path.join(folder, "sentencepiece.bpe.model")
    if os.path.exists(spm_copy):
        os.remove(spm_copy)
    assert os.path.isfile(os.path.join(folder, "tokenizer.json")), f"{folder}: save_pretrained wrote no tokenizer.json"
    assert os.path.isfile(os.path.join(folder, "model.safetensors")), f"{folder}: no model.safetensors"


def folder_kib(folder):
    total = 0
    for root, _, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 1024


def write_st_files(folder, hidden, pooling, max_seq_length, prompts=None):
    """The sentence-transformers files as hub models (bge, Qwen3-Embedding) carry them:
    Transformer in the root, then Pooling, then Normalize."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    assert pooling in ("cls", "mean", "lasttoken"), pooling
    pooling_config = {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": pooling == "lasttoken",
        "include_prompt": True,
    }
    st_config = {
        "__version__": {k: versions()[k] for k in ("sentence_transformers", "transformers", "pytorch")},
        "model_type": "SentenceTransformer",
        "prompts": prompts or {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    write_json(os.path.join(folder, "modules.json"), modules)
    write_json(os.path.join(folder, "sentence_bert_config.json"), {"max_seq_length": max_seq_length,
                                                                    "do_lower_case": False})
    write_json(os.path.join(folder, "config_sentence_transformers.json"), st_config)
    os.makedirs(os.path.join(folder, "1_Pooling"), exist_ok=True)
    write_json(os.path.join(folder, "1_Pooling", "config.json"), pooling_config)
    os.makedirs(os.path.join(folder, "2_Normalize"), exist_ok=True)  # empty, as sentence-transformers saves it


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def pack(seqs):
    """Concatenated ids and the [n + 1] offsets of each sequence."""
    flat = [t for s in seqs for t in s]
    offsets = [0]
    for s in seqs:
        offsets.append(offsets[-1] + len(s))
    return torch.tensor(flat, dtype=torch.int64), torch.tensor(offsets, dtype=torch.int64)


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def min_gap(values):
    s = values.sort().values
    return float((s[1:] - s[:-1]).min())


def same_order(a, b):
    return a.argsort(descending=True).tolist() == b.argsort(descending=True).tolist()


def backend_json(tok):
    return json.loads(tok.backend_tokenizer.to_str())


def component_types(component):
    """The type of a tokenizer.json component, and of each member if it is a Sequence."""
    if component is None:
        return []
    t = component.get("type")
    if t == "Sequence":
        members = (component.get("normalizers") or component.get("pretokenizers") or component.get("processors")
                   or component.get("decoders") or [])
        return ["Sequence"] + [m.get("type") for m in members]
    return [t]


def check_raw_tokenizer(folder, name, inputs, expected_ids, expected_types=None, max_length=None):
    """tokenizer.json read by the tokenizers library alone (what a C++ loader implements) must give the ids that
    transformers / sentence-transformers gave; `inputs` are strings or (query, document) pairs."""
    raw = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    raw.no_padding()
    if max_length:
        raw.enable_truncation(max_length=max_length)
    else:
        raw.no_truncation()
    for i, (inp, exp) in enumerate(zip(inputs, expected_ids)):
        enc = raw.encode(*inp) if isinstance(inp, tuple) else raw.encode(inp)
        assert enc.ids == list(exp), (
            f"{name}: tokenizer.json alone encodes {inp!r} as\n  {enc.ids}\nbut transformers/sentence-transformers "
            f"gave\n  {list(exp)}\n(transformers rebuilt the tokenizer differently from what it saved)")
        if expected_types is not None:
            assert enc.type_ids == list(expected_types[i]), (
                f"{name}: tokenizer.json gives type ids {enc.type_ids} for {inp!r}, transformers {expected_types[i]}")


def unk_count(seqs, unk_id):
    return sum(s.count(unk_id) for s in seqs) if unk_id is not None else 0


# ---------------------------------------------------------------------------------------------- tokenizers

def build_bert_tokenizer():
    """WordPiece trained on CORPUS, uncased BERT pipeline, wrapped as BertTokenizerFast."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=BERT_VOCAB, special_tokens=BERT_SPECIALS, show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    ids = {t: tok.token_to_id(t) for t in BERT_SPECIALS}
    assert all(v is not None for v in ids.values()), f"bert tokenizer: special tokens missing: {ids}"
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    tok.decoder = decoders.WordPiece(prefix="##")
    cls = getattr(transformers, "BertTokenizerFast", None) or transformers.BertTokenizer  # the same class in v5
    hf = cls(
        tokenizer_object=tok, do_lower_case=True, tokenize_chinese_chars=True, strip_accents=None,
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
        model_max_length=BERT_MAX_LEN)
    assert hf.cls_token_id == ids["[CLS]"] and hf.sep_token_id == ids["[SEP]"] and hf.pad_token_id == ids["[PAD]"], \
        "bert tokenizer: the wrapper's special ids differ from the trained ones"
    j = backend_json(hf)
    assert j["normalizer"]["type"] == "BertNormalizer" and j["normalizer"]["lowercase"], j["normalizer"]
    assert j["pre_tokenizer"]["type"] == "BertPreTokenizer", j["pre_tokenizer"]
    assert j["model"]["type"] == "WordPiece", j["model"]["type"]
    assert len(hf) <= 1000, f"bert tokenizer: vocab {len(hf)} > 1000 (corpus alphabet too large?)"
    print(f"bert tokenizer: WordPiece vocab {len(hf)}, post_processor {component_types(j['post_processor'])}")
    return hf


def build_xlmr_tokenizer(work, model_max_length):
    """SentencePiece Unigram trained on CORPUS, converted to a fast tokenizer as transformers converts XLM-R's
    sentencepiece.bpe.model (from_pretrained on a folder holding only that file)."""
    corpus_path = os.path.join(work, "spm_corpus.txt")
    with open(corpus_path, "w", encoding="utf-8") as f:
        for sentence in CORPUS:
            for line in sentence.split("\n"):
                if line.strip():
                    f.write(line + "\n")
    prefix = os.path.join(work, "spm")
    spm.SentencePieceTrainer.train(
        input=corpus_path, model_prefix=prefix, vocab_size=XLMR_SPM_VOCAB, model_type="unigram",
        normalization_rule_name="nmt_nfkc", character_coverage=1.0, byte_fallback=False, hard_vocab_limit=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    pieces = [sp.id_to_piece(i) for i in range(3)]
    assert pieces == ["<unk>", "<s>", "</s>"], f"sentencepiece: unexpected first pieces {pieces}"
    spm_dir = os.path.join(work, "xlmr_spm")
    os.makedirs(spm_dir, exist_ok=True)
    shutil.copy(prefix + ".model", os.path.join(spm_dir, "sentencepiece.bpe.model"))

    # transformers 5: XLMRobertaTokenizer (= ...Fast) builds the Unigram, Precompiled normalizer and
    # Metaspace from the .model; transformers 4: XLMRobertaTokenizerFast converts the slow tokenizer.
    cls = getattr(transformers, "XLMRobertaTokenizerFast", None) or transformers.XLMRobertaTokenizer
    tok = cls.from_pretrained(spm_dir)
    tok.model_max_length = model_max_length
    tok.init_kwargs["model_max_length"] = model_max_length
    j = backend_json(tok)
    norm = component_types(j.get("normalizer"))
    how = f"{cls.__name__}.from_pretrained(sentencepiece.bpe.model)"
    if "Precompiled" not in norm:
        print(f"WARNING: {how} gave normalizer {norm} without Precompiled; using transformers' XLMRobertaConverter "
              "and a plain PreTrainedTokenizerFast wrapper instead")
        tok = xlmr_classic_converter(spm_dir, model_max_length)
        j = backend_json(tok)
        norm = component_types(j.get("normalizer"))
        how = "convert_slow_tokenizer.XLMRobertaConverter"
    post = component_types(j.get("post_processor"))
    assert "Precompiled" in norm, f"xlmr tokenizer: normalizer {norm} has no Precompiled"
    assert "Metaspace" in component_types(j.get("pre_tokenizer")), f"xlmr tokenizer: {j.get('pre_tokenizer')}"
    assert j["model"]["type"] == "Unigram", j["model"]["type"]
    assert post and post[0] in ("RobertaProcessing", "TemplateProcessing"), f"xlmr tokenizer: post_processor {post}"
    # XLM-R's layout: fairseq's <s> <pad> </s> <unk> first, <mask> last.
    got = [tok.convert_ids_to_tokens(i) for i in range(4)]
    assert got == ["<s>", "<pad>", "</s>", "<unk>"], f"xlmr tokenizer: first ids are {got}"
    assert tok.convert_tokens_to_ids("<mask>") == len(tok) - 1, "xlmr tokenizer: <mask> is not the last id"
    assert len(tok) == sp.get_piece_size() + 2, f"xlmr tokenizer: {len(tok)} ids for {sp.get_piece_size()} pieces"
    single = tok("a b")["input_ids"]
    pair = tok("a", "b")["input_ids"]
    assert single[0] == 0 and single[-1] == 2, f"xlmr tokenizer: single template gives {single}"
    assert pair[0] == 0 and pair[-1] == 2 and pair.count(2) >= 2, f"xlmr tokenizer: pair template gives {pair}"
    if pair.count(2) != 3:
        print(f"WARNING: xlmr tokenizer: pair template gives {pair}, not XLM-R's <s> A </s> </s> B </s>")
    # How far the converted tokenizer is from sentencepiece itself (informational).
    mismatches = 0
    for text in TEXTS + [LONG_TEXT]:
        want = [3 if i == 0 else i + 1 for i in sp.encode(text)]
        mismatches += tok(text, add_special_tokens=False)["input_ids"] != want
    print(f"xlmr tokenizer: {how}: Unigram vocab {len(tok)} ({sp.get_piece_size()} pieces), normalizer {norm}, "
          f"pre_tokenizer {component_types(j.get('pre_tokenizer'))}, post_processor {post}; "
          f"differs from sentencepiece on {mismatches} of {len(TEXTS) + 1} texts")
    return tok


class _SlowXlmrShim:
    """What XLMRobertaConverter reads of a slow XLMRobertaTokenizer (transformers 5 has none)."""

    def __init__(self, vocab_file):
        self.vocab_file = vocab_file
        self.add_prefix_space = True

    def convert_tokens_to_ids(self, token):
        return {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}[token]


def xlmr_classic_converter(spm_dir, model_max_length):
    from transformers.convert_slow_tokenizer import XLMRobertaConverter
    backend = XLMRobertaConverter(_SlowXlmrShim(os.path.join(spm_dir, "sentencepiece.bpe.model"))).converted()
    if backend.token_to_id("<mask>") is None:  # transformers 5's converter may leave <mask> to the tokenizer class
        backend.add_special_tokens(["<mask>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"])


def build_qwen_backend():
    """Byte-level BPE trained on CORPUS, YES_NO and the reranker's prompt text; no post-processor yet."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=QWEN_VOCAB, special_tokens=QWEN_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS + YES_NO + [RERANK_PREFIX, RERANK_SUFFIX, INSTRUCTION, QUERY_PROMPT],
                            trainer=trainer)
    for t in QWEN_SPECIALS:
        assert tok.token_to_id(t) is not None, f"qwen tokenizer: {t} missing"
    return tok


def wrap_qwen(backend, append_eos):
    tok = copy.deepcopy(backend)
    eos_id = tok.token_to_id("<|endoftext|>")
    if append_eos:  # Qwen3-Embedding's tokenizer appends <|endoftext|>
        tok.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>", pair="$A <|endoftext|> $B:1 <|endoftext|>:1",
            special_tokens=[("<|endoftext|>", eos_id)])
    else:  # Qwen's own: appends nothing
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                 padding_side="left", model_max_length=QWEN_MAX_POSITIONS,
                                 model_input_names=["input_ids", "attention_mask"])  # as Qwen2Tokenizer: no type ids
    ids = hf("yes no")["input_ids"]
    if append_eos:
        assert ids[-1] == eos_id and ids.count(eos_id) == 1, f"qwen3_embed tokenizer does not append EOS: {ids}"
    else:
        assert eos_id not in ids, f"qwen3_rerank tokenizer appends special tokens: {ids}"
    return hf


# ---------------------------------------------------------------------------------------------- embeddings

def load_st(folder, device, dtype):
    kwargs = {dtype_kwarg(): dtype}
    if device == "cpu":
        kwargs["attn_implementation"] = "eager"
    st = SentenceTransformer(folder, device=device, local_files_only=True, model_kwargs=kwargs)
    got = next(st.parameters()).dtype
    if got != dtype:
        print(f"WARNING: SentenceTransformer(model_kwargs={{'{dtype_kwarg()}': {dtype}}}) loaded {got}; casting")
        st.to(dtype)
    return st.eval()


def st_features(st, texts, prompt=None):
    """The features sentence-transformers feeds the model (preprocess in v5.4+, tokenize before)."""
    if hasattr(st, "preprocess"):
        return st.preprocess(list(texts), prompt=prompt) if prompt else st.preprocess(list(texts))
    return st.tokenize([prompt + t for t in texts] if prompt else list(texts))


def unpad(features):
    """Per-sequence ids and token type ids without padding (either side)."""
    assert "attention_mask" in features, f"sentence-transformers gave no attention_mask: {list(features)}"
    ids, mask = features["input_ids"].cpu(), features["attention_mask"].cpu().bool()
    types = features.get("token_type_ids")
    seqs, tts = [], []
    for i in range(ids.shape[0]):
        seqs.append(ids[i][mask[i]].tolist())
        tts.append(types[i].cpu()[mask[i]].tolist() if types is not None else [0] * int(mask[i].sum()))
    return seqs, tts


def manual_embedding(hf_model, ids, types, pooling):
    """Pooling + L2 normalize by hand on the transformers model, one unpadded sequence."""
    kwargs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.int64)}
    if hf_model.config.model_type == "bert":
        kwargs["token_type_ids"] = torch.tensor([types])
    h = hf_model(**kwargs).last_hidden_state[0].float()
    v = {"cls": lambda: h[0], "mean": lambda: h.mean(0), "lasttoken": lambda: h[-1]}[pooling]()
    return F.normalize(v, dim=0)


def embed_references(folder, name, pooling, max_len, query_prompt=None):
    """References of an embedding folder; returns (tensors, json fields, summary)."""
    st = load_st(folder, "cpu", torch.float32)
    assert st.max_seq_length == max_len, f"{name}: sentence-transformers max_seq_length {st.max_seq_length}"
    modalities = getattr(st, "modalities", ["text"])
    assert "message" not in modalities, f"{name}: sentence-transformers treats the model as chat ({modalities})"
    hf = AutoModel.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    tensors, fields = {}, {}
    with torch.no_grad():
        seqs, types = unpad(st_features(st, TEXTS))
        assert all(len(s) < max_len for s in seqs), f"{name}: a reference text reaches max_seq_length; shorten TEXTS"
        check_raw_tokenizer(folder, name, TEXTS, seqs, types)
        emb = st.encode(TEXTS, convert_to_tensor=True, show_progress_bar=False).float().cpu().contiguous()
        assert emb.shape == (len(TEXTS), HIDDEN), f"{name}: embeddings shape {tuple(emb.shape)}"
        manual = torch.stack([manual_embedding(hf, s, t, pooling) for s, t in zip(seqs, types)])
        err = float((emb - manual).abs().max())
        assert err < 1e-4, f"{name}: encode() differs from {pooling} pooling + normalize by hand by {err}"
        assert torch.allclose(emb.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-4), f"{name}: not normalized"

        long_full = len(Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).encode(LONG_TEXT).ids)
        long_seqs, long_types = unpad(st_features(st, [LONG_TEXT]))
        assert long_full > max_len, f"{name}: LONG_TEXT is only {long_full} tokens, not over {max_len}"
        assert len(long_seqs[0]) == max_len, f"{name}: LONG_TEXT cut to {len(long_seqs[0])}, not {max_len}"
        check_raw_tokenizer(folder, name, [LONG_TEXT], long_seqs, long_types, max_length=max_len)
        long_emb = st.encode([LONG_TEXT], convert_to_tensor=True, show_progress_bar=False)[0].float().cpu()
        err = float((long_emb - manual_embedding(hf, long_seqs[0], long_types[0], pooling)).abs().max())
        assert err < 1e-4, f"{name}: long text embedding differs from the hand-pooled one by {err}"

        ids, offsets = pack(seqs)
        tensors.update(input_ids=ids, offsets=offsets, token_type_ids=pack(types)[0], embeddings=emb,
                       long_input_ids=torch.tensor(long_seqs[0], dtype=torch.int64),
                       long_embedding=long_emb.contiguous())

        if query_prompt is not None:
            qseqs, _ = unpad(st_features(st, TEXTS, prompt=query_prompt))
            # sentence-transformers prepends the prompt to the text as a string, then tokenizes (and truncates)
            check_raw_tokenizer(folder, name, [query_prompt + t for t in TEXTS], qseqs, max_length=max_len)
            fields["query_truncated"] = sum(len(s) == max_len for s in qseqs)
            qemb = st.encode(TEXTS, prompt_name="query", convert_to_tensor=True,
                             show_progress_bar=False).float().cpu().contiguous()
            manual = torch.stack([manual_embedding(hf, s, [0] * len(s), pooling) for s in qseqs])
            err = float((qemb - manual).abs().max())
            assert err < 1e-4, f"{name}: encode(prompt_name='query') differs from the hand-pooled one by {err}"
            qids, qoffsets = pack(qseqs)
            tensors.update(query_input_ids=qids, query_offsets=qoffsets, query_embeddings=qemb)

    cos = emb @ emb.T
    off = cos[~torch.eye(len(TEXTS), dtype=torch.bool)]
    unknown = unk_count(seqs, AutoTokenizer.from_pretrained(folder).unk_token_id)
    summary = (f"{len(TEXTS)} texts of {min(map(len, seqs))}..{max(map(len, seqs))} tokens ({unknown} unknown), "
               f"long text {long_full} -> {max_len}, {pooling} pooling, "
               f"cosines {float(off.min()):.3f}..{float(off.max()):.3f}")
    if float(off.max()) > 0.999:
        print(f"WARNING: {name}: two texts have (nearly) the same embedding: near-constant outputs")
    del st, hf

    if torch.cuda.is_available():
        gpu = load_st(folder, "cuda", torch.bfloat16)
        with torch.no_grad():
            bf16 = gpu.encode(TEXTS, convert_to_tensor=True, show_progress_bar=False).float().cpu().contiguous()
            tensors["embeddings_bf16"] = bf16
            summary += f", bf16 rel err {rel_err(bf16, emb):.4f}"
            if query_prompt is not None:
                qbf16 = gpu.encode(TEXTS, prompt_name="query", convert_to_tensor=True,
                                   show_progress_bar=False).float().cpu().contiguous()
                tensors["query_embeddings_bf16"] = qbf16
                summary += f" (query {rel_err(qbf16, tensors['query_embeddings']):.4f})"
        del gpu
        torch.cuda.empty_cache()

    fields.update(texts=TEXTS, long_text=LONG_TEXT, max_seq_length=max_len, pooling=pooling, normalize=True)
    return tensors, fields, summary


def finish(folder, name, tensors, fields, summary):
    fields["generated_with"] = versions()
    write_json(os.path.join(folder, "reference.json"), fields)
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, os.path.join(folder, "reference.safetensors"))
    print(f"{name}: {summary}; {folder_kib(folder):.0f} KiB")


def make_bert_embed(out, tok, seed):
    name = "bert_embed"
    folder = fresh_folder(out, name)
    config = BertConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
                        max_position_embeddings=BERT_MAX_LEN, type_vocab_size=2, initializer_range=INIT_RANGE,
                        pad_token_id=tok.pad_token_id)
    save_hf(new_model(AutoModel, config, seed), tok, folder)
    write_st_files(folder, HIDDEN, "cls", BERT_MAX_LEN)
    tensors, fields, summary = embed_references(folder, name, "cls", BERT_MAX_LEN)
    finish(folder, name, tensors, fields, summary)


def make_xlmr_embed(out, tok, seed):
    name = "xlmr_embed"
    folder = fresh_folder(out, name)
    save_hf(new_model(AutoModel, xlmr_config(tok), seed), tok, folder)
    write_st_files(folder, HIDDEN, "mean", XLMR_MAX_LEN)
    tensors, fields, summary = embed_references(folder, name, "mean", XLMR_MAX_LEN)
    finish(folder, name, tensors, fields, summary)


def xlmr_config(tok, **extra):
    assert tok.pad_token_id == 1, f"xlmr tokenizer: pad id {tok.pad_token_id}, XLM-R needs 1"
    return XLMRobertaConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
                            max_position_embeddings=XLMR_MAX_LEN + 2,  # positions start at pad + 1 = 2
                            type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                            layer_norm_eps=1e-5, initializer_range=INIT_RANGE, **extra)


def qwen3_config(tok, **extra):
    eos = tok.eos_token_id
    return Qwen3Config(vocab_size=64 * math.ceil(len(tok) / 64), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                       num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=2, head_dim=32,
                       max_position_embeddings=QWEN_MAX_POSITIONS, initializer_range=INIT_RANGE, rms_norm_eps=1e-6,
                       tie_word_embeddings=False, use_sliding_window=False, bos_token_id=eos, eos_token_id=eos,
                       pad_token_id=eos, **rope_kwargs(Qwen3Config, 1000000.0), **extra)


def make_qwen3_embed(out, tok, seed):
    name = "qwen3_embed"
    folder = fresh_folder(out, name)
    save_hf(new_model(AutoModel, qwen3_config(tok), seed), tok, folder)
    write_st_files(folder, HIDDEN, "lasttoken", QWEN_EMBED_MAX_LEN,
                   prompts={"query": QUERY_PROMPT, "document": ""})
    tensors, fields, summary = embed_references(folder, name, "lasttoken", QWEN_EMBED_MAX_LEN,
                                                query_prompt=QUERY_PROMPT)
    tensors["token_type_ids"] = torch.zeros_like(tensors["input_ids"])
    fields.update(instruction=INSTRUCTION, query_prompt=QUERY_PROMPT, padding_side="left")
    finish(folder, name, tensors, fields, summary)


# ---------------------------------------------------------------------------------------------- rerankers

def pick_seed(name, seed, build, score, margin):
    """The seed, among SEED_CANDIDATES, whose documents' scores have the widest margin (and, with CUDA, the same
    order in bfloat16). `score(model)` gives the values whose order is the rerank order."""
    best = None
    for k in range(SEED_CANDIDATES):
        model = build(seed + k)
        with torch.no_grad():
            values = score(model)
            m = margin(values)
            ok = True
            if torch.cuda.is_available():
                ok = same_order(score(copy.deepcopy(model).to(device="cuda", dtype=torch.bfloat16)).float().cpu(),
                                values)
        if ok and (best is None or m > best[1]):
            best = (seed + k, m)
    assert best is not None, f"{name}: no seed among {SEED_CANDIDATES} keeps the rerank order in bfloat16"
    return best


def classifier_logits(model, ids, types):
    dev = next(model.parameters()).device
    out = []
    for s, t in zip(ids, types):
        kwargs = {"input_ids": torch.tensor([s], device=dev), "attention_mask": torch.ones(1, len(s), dtype=torch.int64,
                                                                                            device=dev)}
        if model.config.type_vocab_size > 1:
            kwargs["token_type_ids"] = torch.tensor([t], device=dev)
        out.append(model(**kwargs).logits[0, 0].float())
    return torch.stack(out).cpu()


def make_cross_encoder(out, name, tok, config, seed):
    folder = fresh_folder(out, name)
    pairs = [(QUERY, d) for d in DOCUMENTS]
    enc = [tok(QUERY, d, return_token_type_ids=True) for d in DOCUMENTS]
    ids = [e["input_ids"] for e in enc]
    types = [e["token_type_ids"] for e in enc]
    assert all(len(s) <= tok.model_max_length for s in ids), f"{name}: a pair is longer than {tok.model_max_length}"

    def build(s):
        return new_model(AutoModelForSequenceClassification, config, s)

    def margin(logits):
        return min_gap(logits) / float(logits.abs().max())

    chosen, m = pick_seed(name, seed, build, lambda model: classifier_logits(model, ids, types), margin)
    model = build(chosen)
    with torch.no_grad():
        before = classifier_logits(model, ids, types)
    save_hf(model, tok, folder)
    del model

    reloaded = AutoTokenizer.from_pretrained(folder)
    for i, d in enumerate(DOCUMENTS):
        e = reloaded(QUERY, d, return_token_type_ids=True)
        assert e["input_ids"] == ids[i] and e["token_type_ids"] == types[i], \
            f"{name}: the saved tokenizer encodes pair {i} differently: {e['input_ids']} vs {ids[i]}"
    check_raw_tokenizer(folder, name, pairs, ids, types)
    ref = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32,
                                                             attn_implementation="eager").eval()
    assert ref.config.num_labels == 1, f"{name}: num_labels {ref.config.num_labels}"
    with torch.no_grad():
        logits = classifier_logits(ref, ids, types).contiguous()
    err = float((logits - before).abs().max())
    assert err < 1e-5, f"{name}: logits after save and reload differ by {err}"
    scores = torch.sigmoid(logits)

    ce = CrossEncoder(folder, device="cpu", local_files_only=True, activation_fn=torch.nn.Sigmoid(),
                      model_kwargs={dtype_kwarg(): torch.float32, "attn_implementation": "eager"})
    ce_scores = torch.as_tensor(np.asarray(ce.predict(pairs, show_progress_bar=False)), dtype=torch.float32).reshape(-1)
    err = float((ce_scores - scores).abs().max())
    assert err < 1e-5, f"{name}: CrossEncoder.predict {ce_scores.tolist()} != sigmoid(logits) {scores.tolist()}"
    del ce

    tensors = {"input_ids": pack(ids)[0], "offsets": pack(ids)[1], "token_type_ids": pack(types)[0],
               "logits": logits, "scores": scores.contiguous()}
    summary = (f"seed {chosen}, {len(DOCUMENTS)} pairs of {min(map(len, ids))}..{max(map(len, ids))} tokens, "
               f"logits {[round(x, 3) for x in logits.tolist()]}, min gap {min_gap(logits):.3f} "
               f"({m:.3f} of max |logit|), CrossEncoder matches to {err:.1e}")
    if torch.cuda.is_available():
        gpu = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.bfloat16,
                                                                 attn_implementation="sdpa").cuda().eval()
        with torch.no_grad():
            bf16 = classifier_logits(gpu, ids, types).contiguous()
        del gpu
        torch.cuda.empty_cache()
        tensors["logits_bf16"] = bf16
        assert same_order(bf16, logits), (f"{name}: bfloat16 reorders the documents ({bf16.tolist()} vs "
                                          f"{logits.tolist()}); try another --seed")
        summary += f", bf16 max err {float((bf16 - logits).abs().max()):.4f}, same order"
    fields = {"query": QUERY, "documents": DOCUMENTS, "texts": TEXTS, "long_text": LONG_TEXT,
              "max_seq_length": tok.model_max_length, "pooling": None, "normalize": False, "activation": "sigmoid",
              "num_labels": 1}
    finish(folder, name, tensors, fields, summary)


def make_bert_rerank(out, tok, seed):
    config = BertConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
                        max_position_embeddings=BERT_MAX_LEN, type_vocab_size=2, initializer_range=INIT_RANGE,
                        pad_token_id=tok.pad_token_id, num_labels=1)
    make_cross_encoder(out, "bert_rerank", tok, config, seed)


def make_xlmr_rerank(out, tok, seed):
    make_cross_encoder(out, "xlmr_rerank", tok, xlmr_config(tok, num_labels=1), seed)


def qwen_rerank_prompts(tok):
    """Qwen3-Reranker's model card: prefix + '<Instruct>: ...\\n<Query>: ...\\n<Document>: ...' + suffix, each part
    tokenized without special tokens."""
    prefix = tok(RERANK_PREFIX, add_special_tokens=False)["input_ids"]
    suffix = tok(RERANK_SUFFIX, add_special_tokens=False)["input_ids"]
    bodies = [f"<Instruct>: {INSTRUCTION}\n<Query>: {QUERY}\n<Document>: {d}" for d in DOCUMENTS]
    return [prefix + tok(b, add_special_tokens=False)["input_ids"] + suffix for b in bodies], bodies


def yes_no_logits(model, prompts, yes, no):
    dev = next(model.parameters()).device
    out = []
    for s in prompts:
        last = model(input_ids=torch.tensor([s], device=dev),
                     attention_mask=torch.ones(1, len(s), dtype=torch.int64, device=dev)).logits[0, -1].float()
        out.append(torch.stack([last[no], last[yes]]))
    return torch.stack(out).cpu()


def make_qwen3_rerank(out, tok, seed):
    name = "qwen3_rerank"
    folder = fresh_folder(out, name)
    yes_ids = tok.encode("yes", add_special_tokens=False)
    no_ids = tok.encode("no", add_special_tokens=False)
    assert len(yes_ids) == 1 and len(no_ids) == 1, f"{name}: 'yes' -> {yes_ids}, 'no' -> {no_ids}: not single tokens"
    yes, no = yes_ids[0], no_ids[0]
    assert tok.convert_tokens_to_ids("yes") == yes and tok.convert_tokens_to_ids("no") == no, \
        f"{name}: convert_tokens_to_ids('yes'/'no') differ from the encoded ids"
    prompts, bodies = qwen_rerank_prompts(tok)
    assert max(map(len, prompts)) <= QWEN_MAX_POSITIONS, f"{name}: a prompt is over {QWEN_MAX_POSITIONS} tokens"
    config = qwen3_config(tok)

    def build(s):
        return new_model(AutoModelForCausalLM, config, s)

    def margin(diff):  # diff = logit(yes) - logit(no), whose order is P(yes)'s
        return min_gap(diff)

    def score(model):
        yn = yes_no_logits(model, prompts, yes, no)
        return yn[:, 1] - yn[:, 0]

    chosen, _ = pick_seed(name, seed, build, score, margin)
    model = build(chosen)
    with torch.no_grad():
        before = yes_no_logits(model, prompts, yes, no)
    save_hf(model, tok, folder)
    del model

    reloaded = AutoTokenizer.from_pretrained(folder)
    again, _ = qwen_rerank_prompts(reloaded)
    assert again == prompts, f"{name}: the saved tokenizer encodes the prompts differently"
    raw = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    for s, b in zip(prompts, bodies):
        parts = [raw.encode(x, add_special_tokens=False).ids for x in (RERANK_PREFIX, b, RERANK_SUFFIX)]
        assert parts[0] + parts[1] + parts[2] == s, f"{name}: tokenizer.json alone encodes a prompt differently"
    whole = [reloaded(RERANK_PREFIX + b + RERANK_SUFFIX, add_special_tokens=False)["input_ids"] for b in bodies]
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        yn = yes_no_logits(ref, prompts, yes, no).contiguous()
    err = float((yn - before).abs().max())
    assert err < 1e-5, f"{name}: logits after save and reload differ by {err}"
    scores = torch.log_softmax(yn, dim=1)[:, 1].exp().contiguous()  # as the model card computes it
    tensors = {"input_ids": pack(prompts)[0], "offsets": pack(prompts)[1], "yes_no_logits": yn, "scores": scores}
    diff = yn[:, 1] - yn[:, 0]
    summary = (f"seed {chosen}, yes {yes} no {no}, prompts of {min(map(len, prompts))}..{max(map(len, prompts))} "
               f"tokens (one-string tokenization {'matches' if whole == prompts else 'DIFFERS'}), "
               f"P(yes) {[round(x, 4) for x in scores.tolist()]}, min gap {min_gap(scores):.4f} "
               f"(logit diff gap {min_gap(diff):.3f})")
    if torch.cuda.is_available():
        gpu = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16,
                                                   attn_implementation="sdpa").cuda().eval()
        with torch.no_grad():
            yn16 = yes_no_logits(gpu, prompts, yes, no)
        del gpu
        torch.cuda.empty_cache()
        s16 = torch.log_softmax(yn16, dim=1)[:, 1].exp().contiguous()
        tensors["scores_bf16"] = s16
        assert same_order(s16, scores), (f"{name}: bfloat16 reorders the documents ({s16.tolist()} vs "
                                         f"{scores.tolist()}); try another --seed")
        summary += f", bf16 max err {float((s16 - scores).abs().max()):.4f}, same order"
    fields = {"query": QUERY, "documents": DOCUMENTS, "instruction": INSTRUCTION, "prefix": RERANK_PREFIX,
              "suffix": RERANK_SUFFIX, "prompts": [RERANK_PREFIX + b + RERANK_SUFFIX for b in bodies],
              "yes_token_id": yes, "no_token_id": no, "texts": TEXTS, "long_text": LONG_TEXT,
              "max_seq_length": QWEN_MAX_POSITIONS, "pooling": "lasttoken", "normalize": False,
              "score": "softmax([logit(no), logit(yes)]) at the last position, probability of yes",
              "padding_side": "left"}
    finish(folder, name, tensors, fields, summary)


# ---------------------------------------------------------------------------------------------- bge-m3 shaped

def make_bge_m3_shaped(folder, seed):
    """A random XLMRobertaModel shaped like BAAI/bge-m3, float16, with sentence-transformers CLS + Normalize files
    and the small xlmr tokenizer (a benchmark feeds token ids)."""
    config = XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                              intermediate_size=4096, max_position_embeddings=8194, type_vocab_size=1,
                              pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
    os.makedirs(folder, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    t = time.time()
    with torch.device(device):
        model = AutoModel.from_config(config, dtype=torch.float16).eval()
    print(f"bge_m3_shaped: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters initialised on "
          f"{device} in {time.time() - t:.1f}s")
    t = time.time()
    model.save_pretrained(folder, safe_serialization=True)
    del model
    with tempfile.TemporaryDirectory() as work:
        tok = build_xlmr_tokenizer(work, 8192)
        tok.save_pretrained(folder)
    spm_copy = os.path.join(folder, "sentencepiece.bpe.model")
    if os.path.exists(spm_copy):
        os.remove(spm_copy)
    write_st_files(folder, 1024, "cls", 8192)
    print(f"bge_m3_shaped: saved to {folder} in {time.time() - t:.1f}s, {folder_kib(folder) / 1024:.0f} MiB")


def bench_st(folder, batches, seq, seed):
    """sentence-transformers on CUDA in float16: sequences/s for random `seq`-token inputs, fed as token ids
    through the model's modules (Transformer, Pooling, Normalize) since encode() takes text."""
    assert torch.cuda.is_available(), "--bench_st needs CUDA"
    st = load_st(folder, "cuda", torch.float16)
    hf = getattr(st[0], "model", None)
    if hf is None:
        hf = st[0].auto_model  # sentence-transformers before v5.4
    vocab = hf.config.vocab_size
    attn = getattr(hf.config, "_attn_implementation", "?")
    print(f"bench_st: {folder} on {torch.cuda.get_device_name()}, sentence-transformers "
          f"{sentence_transformers.__version__}, float16, attention {attn}, {seq} tokens a sequence")
    g = torch.Generator(device="cuda").manual_seed(seed)
    for b in batches:
        ids = torch.randint(3, vocab, (b, seq), generator=g, device="cuda", dtype=torch.int64)
        ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
        mask = torch.ones_like(ids)

        def run():
            with torch.inference_mode():
                return st({"input_ids": ids, "attention_mask": mask})["sentence_embedding"]

        for _ in range(3):
            out = run()
        assert out.shape == (b, hf.config.hidden_size), f"bench_st: output shape {tuple(out.shape)}"
        torch.cuda.synchronize()
        t = time.perf_counter()
        run()
        torch.cuda.synchronize()
        once = time.perf_counter() - t
        iters = max(3, min(100, int(2.0 / max(once, 1e-4))))
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(iters):
            run()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t) / iters
        print(f"bench_st: batch {b:4d}: {b / dt:9.1f} sequences/s, {b * seq / dt:11.0f} tokens/s, "
              f"{dt * 1000:8.2f} ms a batch ({iters} timed)")
        del ids, mask, out
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- main

FIXTURES = ["bert_embed", "bert_rerank", "xlmr_embed", "xlmr_rerank", "qwen3_embed", "qwen3_rerank"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for the tiny fixtures")
    parser.add_argument("--only", help="comma-separated subset of: " + ",".join(FIXTURES))
    parser.add_argument("--bge_m3_shaped", help="folder for the bge-m3-shaped float16 model")
    parser.add_argument("--bench_st", help="folder of a sentence-transformers model to time on CUDA in float16")
    parser.add_argument("--batches", default="1,32,256", help="batch sizes for --bench_st")
    parser.add_argument("--seq", type=int, default=512, help="tokens a sequence for --bench_st")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    if not (args.out or args.bge_m3_shaped or args.bench_st):
        parser.error("nothing to do: give --out, --bge_m3_shaped or --bench_st")
    print(", ".join(f"{k} {v}" for k, v in versions().items()) +
          (f", CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    if args.out:
        only = args.only.split(",") if args.only else FIXTURES
        unknown = set(only) - set(FIXTURES)
        assert not unknown, f"--only: unknown fixtures {sorted(unknown)}"
        os.makedirs(args.out, exist_ok=True)
        seeds = {name: args.seed + 100 * i for i, name in enumerate(FIXTURES)}
        with tempfile.TemporaryDirectory() as work:
            if {"bert_embed", "bert_rerank"} & set(only):
                bert_tok = build_bert_tokenizer()
                if "bert_embed" in only:
                    make_bert_embed(args.out, bert_tok, seeds["bert_embed"])
                if "bert_rerank" in only:
                    make_bert_rerank(args.out, bert_tok, seeds["bert_rerank"])
            if {"xlmr_embed", "xlmr_rerank"} & set(only):
                xlmr_tok = build_xlmr_tokenizer(work, XLMR_MAX_LEN)
                if "xlmr_embed" in only:
                    make_xlmr_embed(args.out, xlmr_tok, seeds["xlmr_embed"])
                if "xlmr_rerank" in only:
                    make_xlmr_rerank(args.out, xlmr_tok, seeds["xlmr_rerank"])
            if {"qwen3_embed", "qwen3_rerank"} & set(only):
                backend = build_qwen_backend()
                if "qwen3_embed" in only:
                    make_qwen3_embed(args.out, wrap_qwen(backend, append_eos=True), seeds["qwen3_embed"])
                if "qwen3_rerank" in only:
                    make_qwen3_rerank(args.out, wrap_qwen(backend, append_eos=False), seeds["qwen3_rerank"])
        print("wrote " + ", ".join(os.path.join(args.out, n) for n in only))
    if args.bge_m3_shaped:
        make_bge_m3_shaped(args.bge_m3_shaped, args.seed)
    if args.bench_st:
        bench_st(args.bench_st, [int(b) for b in args.batches.split(",") if b], args.seq, args.seed)


if __name__ == "__main__":
    main()
