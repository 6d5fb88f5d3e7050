"""Cross-checks the goldens (made with @lenml/tokenizers, a transformers.js
fork) against Hugging Face's Rust `tokenizers`, where Python has it (the GPU
machine). Usage: python3 check_goldens_hf.py GOLDEN_DIR NAME=TOKENIZER_DIR...
Prints per tokenizer how many strings encode and decode identically; exits 1
on any difference."""
import json
import os
import sys

from tokenizers import Tokenizer

golden_dir, pairs = sys.argv[1], sys.argv[2:]
failed = False
for pair in pairs:
    name, folder = pair.split("=", 1)
    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    cases = json.load(open(os.path.join(golden_dir, f"{name}.json"), encoding="utf-8"))
    encode_same = decode_same = 0
    for case in cases:
        ids = tokenizer.encode(case["text"]).ids
        encode_same += ids == case["ids"]
        decode_same += tokenizer.decode(case["ids"], skip_special_tokens=False) == case["decoded"]
        if ids != case["ids"] and not failed:
            print(f"  first difference ({name}): {case['text']!r}\n    hf     {ids}\n    golden {case['ids']}")
            failed = True
    print(f"{name}: {encode_same}/{len(cases)} encode identical, {decode_same}/{len(cases)} decode identical "
          f"with Hugging Face tokenizers")
sys.exit(1 if failed else 0)
