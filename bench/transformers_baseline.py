#!/usr/bin/env python3
"""The baseline for bench/serving_bench: the same prompts through Hugging Face
transformers generate(), one request at a time, greedy, in bfloat16 on the
GPU -- the way most teams serve a model for Dify today.

    python3 bench/transformers_baseline.py --model DIR [--requests 8]
        [--prompt_tokens 128] [--max_tokens 128]

Prints tokens/s over all requests (generated tokens / total time, prefill
included), which is also the aggregate rate at any number of concurrent
clients: one request at a time does not batch.
"""
import argparse
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM


def bench_prompt(index, length, vocab):
    """serving_bench.cc's BenchPrompt: the middle three quarters of the vocabulary."""
    low, span = vocab // 8, vocab * 3 // 4
    return [low + (12345 + index * 7919 + j * 104729) % span for j in range(length)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--prompt_tokens", type=int, default=128)
    parser.add_argument("--max_tokens", type=int, default=128)
    args = parser.parse_args()
    with open(os.path.join(args.model, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    t = time.time()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device_map="cuda").eval()
    print(f"transformers: loaded in {time.time() - t:.2f} s")

    def generate(index):
        ids = torch.tensor([bench_prompt(index, args.prompt_tokens, vocab)], device="cuda")
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_tokens,
                             min_new_tokens=args.max_tokens, do_sample=False, pad_token_id=0)
        return out.shape[1] - ids.shape[1]

    generate(100000)  # warm-up, as serving_bench does
    torch.cuda.synchronize()
    generated = 0
    t = time.time()
    for i in range(args.requests):
        generated += generate(i)
    torch.cuda.synchronize()
    wall = time.time() - t
    print(f"transformers generate() one request at a time: {args.requests} requests, "
          f"{generated / wall:.1f} tokens/s aggregate, {wall / args.requests:.2f} s per request")


if __name__ == "__main__":
    main()
