#!/usr/bin/env python3
"""Tokenize the training corpora (data/corpus/*.txt) with the shipped default tokenizer into
data/tokens/NAME.u16.xz (little-endian uint16 ids, documents separated by <|endoftext|> = 0), plus
the held-out code prompts as data/tokens/code-prompts.json, for scripts/train_gpu.py.

The tokens travel to a GPU machine that has no Rust toolchain; xz keeps them small (34 M tokens of
code are 15 MB). Needs `pip install tokenizers numpy`.
"""
import json
import lzma
import os
import sys

import numpy as np
from tokenizers import Tokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
EOT = "\n<|endoftext|>\n"


def main():
    tok = Tokenizer.from_file(os.path.join(ROOT, "models", "default-private", "tokenizer.json"))
    assert tok.get_vocab_size() <= 65536 and tok.token_to_id("<|endoftext|>") == 0
    out = os.path.join(ROOT, "data", "tokens")
    os.makedirs(out, exist_ok=True)
    names = sys.argv[1:] or ["general", "code", "code-large"]
    for name in names:
        with open(os.path.join(ROOT, "data", "corpus", f"{name}.txt"), encoding="utf-8") as f:
            docs = f.read().split(EOT)
        ids = []
        for enc in tok.encode_batch(docs, add_special_tokens=False):
            ids.extend(enc.ids)
            ids.append(0)
        array = np.asarray(ids, dtype="<u2")
        with lzma.open(os.path.join(out, f"{name}.u16.xz"), "wb", preset=6) as f:
            f.write(array.tobytes())
        print(f"{name}: {len(docs)} documents, {len(array)} tokens")
    prompts = []
    with open(os.path.join(ROOT, "datasets", "code-completion.jsonl"), encoding="utf-8") as f:
        for line in f:
            prompts.append(tok.encode(json.loads(line)["prompt"], add_special_tokens=False).ids)
    with open(os.path.join(out, "code-prompts.json"), "w") as f:
        json.dump(prompts, f)
    print(f"code prompts: {len(prompts)}, {sum(len(p) - 1 for p in prompts)} scored tokens")


if __name__ == "__main__":
    main()
