#!/usr/bin/env python3
"""Writes models/demo: Gantry's built-in demo model, which the README's first
command serves. Python's standard library only, so it runs anywhere.

- tokenizer.json: byte-level BPE (GPT-2 style) with 256 byte tokens, 253
  merges learned from the license texts in /usr/share/common-licenses, and 3
  ChatML special tokens: 512 tokens in all.
- tokenizer_config.json: ChatML chat template, eos <|im_end|>.
- A tiny LlamaForCausalLM (2 layers, hidden 96, GQA 6/2 heads) with random
  weights: it speaks gibberish, but every part of the service runs on it.

Usage: python3 tools/make_demo_model.py [out_dir]
"""
import collections
import json
import os
import random
import re
import struct
import sys

LICENSES = ["GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-2.1", "Artistic", "BSD"]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB = 512
HIDDEN, LAYERS, HEADS, KV_HEADS, INTER = 96, 2, 6, 2, 256
# ChatML with tools in Hermes style (as Qwen2.5 writes them): the tools go
# into the system turn, an assistant's calls into <tool_call> blocks, tool
# results into <tool_response> blocks of a user turn; content may be null.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- (messages[0]['content'] or '') + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions. Their signatures, within <tools></tools>:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each call, return a JSON object within <tool_call></tool_call>:\\n"
    "<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if tools and loop.first and message['role'] == 'system' %}"
    "{%- elif message['role'] == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + (message['content'] or '') + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') }}"
    "{%- for call in message['tool_calls'] or [] %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + call['function']['name'] + '\", \"arguments\": ' "
    "+ (call['function']['arguments'] | tojson) + '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def bytes_to_unicode():
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def train_merges(text, count):
    byte_char = bytes_to_unicode()
    # An ASCII stand-in for GPT-2's pre-tokenizer: only the merges' training
    # words need it; encoding uses the real pattern.
    pattern = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+")
    words = collections.Counter(pattern.findall(text))
    splits = {w: [byte_char[b] for b in w.encode("utf-8")] for w in words}
    merges = []
    for _ in range(count):
        pairs = collections.Counter()
        for w, n in words.items():
            s = splits[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        for w in words:
            s, out, i = splits[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            splits[w] = out
    return merges


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        shape, values = tensors[name]
        data = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "models", "demo")
    os.makedirs(out, exist_ok=True)
    text = "".join(open(f"/usr/share/common-licenses/{name}", encoding="utf-8").read() for name in LICENSES)
    byte_char = bytes_to_unicode()
    merges = train_merges(text, VOCAB - 256 - len(SPECIAL))
    vocab = {byte_char[b]: b for b in range(256)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    added = []
    for token in SPECIAL:
        added.append({"id": len(vocab), "content": token, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True})
        vocab[token] = len(vocab)
    assert len(vocab) == VOCAB, len(vocab)
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }
    eos = vocab["<|im_end|>"]
    json.dump(tokenizer, open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False)
    json.dump({"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "add_bos_token": False,
               "chat_template": CHAT_TEMPLATE, "model_max_length": 2048, "tokenizer_class": "PreTrainedTokenizerFast"},
              open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float32",
        "eos_token_id": eos, "bos_token_id": None,
    }
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump({"eos_token_id": eos}, open(os.path.join(out, "generation_config.json"), "w"), indent=2)

    rng = random.Random(20261125)
    head_dim = HIDDEN // HEADS

    def normal(rows, cols, std=0.08):
        return [rows, cols], [rng.gauss(0.0, std) for _ in range(rows * cols)]

    tensors = {"model.embed_tokens.weight": normal(VOCAB, HIDDEN, 0.5), "lm_head.weight": normal(VOCAB, HIDDEN),
               "model.norm.weight": ([HIDDEN], [1.0] * HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = ([HIDDEN], [1.0] * HIDDEN)
        tensors[p + "post_attention_layernorm.weight"] = ([HIDDEN], [1.0] * HIDDEN)
        tensors[p + "self_attn.q_proj.weight"] = normal(HEADS * head_dim, HIDDEN)
        tensors[p + "self_attn.k_proj.weight"] = normal(KV_HEADS * head_dim, HIDDEN)
        tensors[p + "self_attn.v_proj.weight"] = normal(KV_HEADS * head_dim, HIDDEN)
        tensors[p + "self_attn.o_proj.weight"] = normal(HIDDEN, HEADS * head_dim)
        tensors[p + "mlp.gate_proj.weight"] = normal(INTER, HIDDEN)
        tensors[p + "mlp.up_proj.weight"] = normal(INTER, HIDDEN)
        tensors[p + "mlp.down_proj.weight"] = normal(HIDDEN, INTER)
    write_safetensors(os.path.join(out, "model.safetensors"), tensors)
    print(f"wrote {out}: {len(merges)} merges, {sum(len(v) for _, v in tensors.values())} parameters")


if __name__ == "__main__":
    main()
