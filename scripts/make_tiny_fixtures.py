#!/usr/bin/env python3
"""Make the tiny random GPT-2 models and the Hugging Face reference fixture (run once, not in CI).

    python3 -m pip install torch transformers safetensors
    python3 scripts/make_tiny_fixtures.py

Writes
  models/tiny-gpt2-ref/     a random GPT-2 (2 layers, d=32, 4 heads, vocab 1000, ctx 64) saved with
                            `save_pretrained` (safetensors, `transformer.`-prefixed keys), plus
                            fixture.json: Hugging Face logits for every position of a few fixed token
                            sequences and their greedy continuations. The Rust test loads both.
  models/tiny-gpt2-noisy/   the same model with Gaussian noise on every weight: a stand-in public model
                            that agrees with tiny-gpt2-ref often but not always (placeholder pair until
                            the trained default pair ships).
Both folders also get the same tokenizer.json: a 1000-token byte-level BPE trained on the source of
Python's `json` package (so text prompts work with the tiny pair; the weights are random all the same).
"""
import glob
import json
import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models")
SEQUENCES = [[7], [1, 2, 3, 4], [42, 999, 0, 512, 77, 77, 3, 250, 8, 600, 31, 5]]
GREEDY_NEW = 10


def randomise(model, std, seed):
    """Every weight random (LayerNorm gains around 1), so the loader cannot pass by luck."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * std
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + noise)
            else:
                p.copy_(noise * (3.0 if "wte" in name else 1.0))


def main():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=1000, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    model = GPT2LMHeadModel(config).eval()
    randomise(model, std=0.2, seed=1)

    ref_dir = os.path.join(ROOT, "tiny-gpt2-ref")
    model.save_pretrained(ref_dir, safe_serialization=True)
    cases = []
    with torch.no_grad():
        for seq in SEQUENCES:
            ids = torch.tensor([seq])
            logits = model(ids).logits[0]
            # An explicit all-ones mask: otherwise generate() treats token 0 (the pad id) in the input as padding.
            mask = torch.ones_like(ids)
            greedy = model.generate(ids, attention_mask=mask, max_new_tokens=GREEDY_NEW, do_sample=False, pad_token_id=0)[0, len(seq):]
            cases.append({
                "input_ids": seq,
                "logits": [[float(f"{v:.7g}") for v in row] for row in logits.tolist()],
                "greedy_ids": greedy.tolist(),
            })
    with open(os.path.join(ref_dir, "fixture.json"), "w") as f:
        json.dump({"source": "transformers GPT2LMHeadModel, torch float32, CPU", "cases": cases}, f)

    noisy = GPT2LMHeadModel(config).eval()
    noisy.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _, p in noisy.named_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    noisy.save_pretrained(os.path.join(ROOT, "tiny-gpt2-noisy"), safe_serialization=True)

    from tokenizers import ByteLevelBPETokenizer

    corpus = sorted(glob.glob(os.path.join(os.path.dirname(json.__file__), "*.py")))
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train(files=corpus, vocab_size=config.vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"])
    for folder in ("tiny-gpt2-ref", "tiny-gpt2-noisy"):
        tokenizer.save(os.path.join(ROOT, folder, "tokenizer.json"))


if __name__ == "__main__":
    main()
