"""Reference side of bench/tokenizer_bench.cc: Hugging Face's Rust `tokenizers`
on the same documents, one core. Prints "encode_mbps decode_mbps tokens".
Usage: python3 tokenizer_reference.py CORPUS.json TOKENIZER_DIR ROUNDS"""
import json
import os
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
from tokenizers import Tokenizer  # noqa: E402

corpus_path, folder, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 3
documents = json.load(open(corpus_path, encoding="utf-8"))
size = sum(len(d.encode("utf-8")) for d in documents)
best = [0.0, 0.0, 0]
for _ in range(rounds):
    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))  # cold cache, untimed
    start = time.perf_counter()
    ids = [tokenizer.encode(d, add_special_tokens=False).ids for d in documents]
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = sum(len(tokenizer.decode(x, skip_special_tokens=False).encode("utf-8")) for x in ids)
    decode_s = time.perf_counter() - start
    best = [max(best[0], size / 1e6 / encode_s), max(best[1], decoded / 1e6 / decode_s), sum(len(x) for x in ids)]
print(f"{best[0]} {best[1]} {best[2]}")
