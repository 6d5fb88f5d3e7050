#!/usr/bin/env python3
"""Writes tiny random-weight Hugging Face models and transformers reference outputs.

Run where `transformers` and `torch` are installed (the GPU machine):
    python3 tools/make_test_models.py --out tests/models          # the committed fixtures
    python3 tools/make_test_models.py --llama8b /tmp/llama8b      # Llama-3-8B-shaped, not committed

Each fixture folder holds what a real model folder holds (config.json,
generation_config.json, safetensors weights) plus reference.safetensors:
  prompt_ids  int64 [P]      random prompt
  logits      f32   [P, V]   transformers float32 (eager attention, CPU) logits at every prompt position
  greedy_ids  int64 [32]     32 greedy tokens after the prompt, float32 on CPU
  logits_bf16 f32   [P, V]   transformers bfloat16 logits on CUDA (when CUDA is present)

References are computed from a fresh load of the saved folder, so they use
exactly the stored weights (a bf16-stored fixture) and float32 rotary buffers.
Random weights give flat distributions whose top two logits can differ by
less than bfloat16's rounding; the prompt is therefore the one, among
PROMPT_CANDIDATES random prompts, whose first 8 greedy steps have the widest
top-1 margin relative to the largest logit, so that a greedy comparison in
bfloat16 tests the runtime and not the coin toss of a near tie.
"""
import argparse
import inspect
import json
import os
import time

import torch
from safetensors.torch import save_file
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

PROMPT_LEN = 40  # crosses two 16-token KV blocks
GREEDY_TOKENS = 32
PROMPT_CANDIDATES = 64


def rope_kwargs(config_cls, theta, scaling=None):
    """transformers 5 takes rope_parameters; older versions rope_theta + rope_scaling."""
    if "rope_parameters" in inspect.signature(config_cls.__init__).parameters:
        params = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            params.update(scaling)
        return {"rope_parameters": params}
    kw = {"rope_theta": theta}
    if scaling:
        kw["rope_scaling"] = scaling
    return kw


def fixtures():
    common = dict(vocab_size=512, initializer_range=0.15, rms_norm_eps=1e-5,
                  bos_token_id=1, eos_token_id=2)
    return {
        # Llama 2 style: GQA (4 query heads over 2 kv heads), untied, float32.
        "llama": (LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                              tie_word_embeddings=False, **rope_kwargs(LlamaConfig, 10000.0), **common),
                  torch.float32, None),
        # Llama 3.2 style: llama3 rope scaling, tied embeddings, sharded weights.
        "llama3": (LlamaConfig(hidden_size=96, intermediate_size=256, num_hidden_layers=3,
                               num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=1024,
                               tie_word_embeddings=True,
                               **rope_kwargs(LlamaConfig, 500000.0, {
                                   "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
                               **common),
                   torch.float32, "150KB"),
        # Mistral: multi-query attention (one kv head) and a 24-token sliding window.
        "mistral": (MistralConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                  max_position_embeddings=512, sliding_window=24,
                                  tie_word_embeddings=False, **rope_kwargs(MistralConfig, 10000.0), **common),
                    torch.float32, None),
        # Qwen2: q/k/v biases.
        "qwen2": (Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                              tie_word_embeddings=False, use_sliding_window=False,
                              **rope_kwargs(Qwen2Config, 1000000.0), **common),
                  torch.float32, None),
        # Qwen3: per-head q/k RMSNorm, head_dim != hidden / heads, stored in bfloat16.
        "qwen3": (Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                              max_position_embeddings=512, tie_word_embeddings=False,
                              use_sliding_window=False, **rope_kwargs(Qwen3Config, 1000000.0), **common),
                  torch.bfloat16, None),
    }


def perturb(model, seed):
    """Random norm weights and biases: HF initialises them to 1 and 0, which
    would hide a loader that skips them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * 0.1)


def greedy(model, prompt, steps):
    """Greedy tokens and each step's top-1 margin relative to the largest |logit|."""
    ids = prompt.clone()
    out, margins = [], []
    for _ in range(steps):
        last = model(ids.unsqueeze(0).to(model.device)).logits[0, -1].float()
        top2 = last.topk(2).values
        margins.append(float((top2[0] - top2[1]) / last.abs().max()))
        nxt = int(last.argmax())
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([nxt], device=ids.device)])
    return torch.tensor(out, dtype=torch.int64), margins


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def make_fixture(name, config, save_dtype, shard, out_root, seed):
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    perturb(model, seed)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.bos_token_id = config.bos_token_id
    folder = os.path.join(out_root, name)
    os.makedirs(folder, exist_ok=True)
    model.to(save_dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(folder, safe_serialization=True, **kwargs)
    del model
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        best = None
        for _ in range(PROMPT_CANDIDATES):
            candidate = torch.randint(3, config.vocab_size, (PROMPT_LEN,), generator=g, dtype=torch.int64)
            _, margins = greedy(ref, candidate, 8)
            if best is None or min(margins) > best[1]:
                best = (candidate, min(margins))
        prompt = best[0]
        logits = ref(prompt.unsqueeze(0)).logits[0].float().contiguous()
        greedy_ids, margins = greedy(ref, prompt, GREEDY_TOKENS)
        tensors = {"prompt_ids": prompt, "logits": logits, "greedy_ids": greedy_ids}
        if torch.cuda.is_available():
            gpu = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16,
                                                       attn_implementation="sdpa").cuda().eval()
            bf16 = gpu(prompt.unsqueeze(0).cuda()).logits[0].float().cpu().contiguous()
            bf16_greedy, _ = greedy(gpu, prompt.cuda(), 8)
            tensors["logits_bf16"] = bf16
            print(f"{name}: transformers bf16 vs f32 relative error {rel_err(bf16, logits):.4f}, "
                  f"bf16 greedy matches f32 for 8: {bf16_greedy.tolist() == greedy_ids[:8].tolist()}")
    print(f"{name}: min relative top-1 margin over 8 greedy steps {min(margins[:8]):.4f}, "
          f"greedy {greedy_ids.tolist()[:8]}...")
    save_file(tensors, os.path.join(folder, "reference.safetensors"))


def make_llama8b(folder, seed):
    """A Llama-3.1-8B-shaped model with random weights, bf16, sharded, plus a
    transformers reference for one prompt (computed on the GPU)."""
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    config = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                         rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=128000,
                         eos_token_id=128001, **rope_kwargs(LlamaConfig, 500000.0, scaling))
    torch.manual_seed(seed)
    t = time.time()
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    print(f"llama8b: initialised in {time.time() - t:.1f}s")
    g = torch.Generator().manual_seed(seed + 1)
    prompt = torch.randint(0, config.vocab_size, (32,), generator=g, dtype=torch.int64)
    with torch.no_grad():
        logits = model(prompt.unsqueeze(0).cuda()).logits[0].float().cpu().contiguous()
    t = time.time()
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="5GB")
    print(f"llama8b: saved in {time.time() - t:.1f}s")
    # The same (bf16-valued) weights in float32: the exact reference, and the
    # yardstick for how far any bfloat16 implementation strays from it.
    model.float()
    with torch.no_grad():
        logits_f32 = model(prompt.unsqueeze(0).cuda()).logits[0].float().cpu().contiguous()
    print(f"llama8b: transformers bf16 vs f32 relative error at the last position "
          f"{rel_err(logits[-1], logits_f32[-1]):.4f}")
    save_file({"prompt_ids": prompt, "logits_bf16": logits, "logits_f32": logits_f32},
              os.path.join(folder, "reference.safetensors"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for the tiny fixtures")
    parser.add_argument("--llama8b", help="folder for the Llama-3-8B-shaped model")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    torch.backends.cuda.matmul.allow_tf32 = False
    if args.out:
        for i, (name, (config, dtype, shard)) in enumerate(fixtures().items()):
            make_fixture(name, config, dtype, shard, args.out, args.seed + 100 * i)
    if args.llama8b:
        make_llama8b(args.llama8b, args.seed)


if __name__ == "__main__":
    main()
