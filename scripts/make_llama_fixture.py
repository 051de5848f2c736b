#!/usr/bin/env python3
"""Make the tiny random LLaMA-style Hugging Face reference fixtures (run once, not in CI).

    python3 -m venv venv && venv/bin/pip install torch transformers safetensors
    venv/bin/python scripts/make_llama_fixture.py

Writes
  models/tiny-llama-ref/   a random LlamaForCausalLM (2 layers, d=32, 4 query heads sharing 2
                           key-value heads, SiLU MLP of 64, untied head, rope_theta 10000, 64
                           positions) saved with `save_pretrained` (float32 safetensors), with a
                           sentencepiece-style BPE of 400 tokens with byte fallback (LLaMA's scheme:
                           `▁` for spaces, <0xNN> byte tokens, BOS <s> added as tokenizer_config.json
                           says), and fixture.json: Hugging Face logits for every position of a few
                           token sequences, their greedy continuations, and the tokenizer's ids of
                           a few texts (BOS included).
  models/tiny-llama-qwen2-ref/  the same shape as a Qwen2ForCausalLM (q/k/v biases, tied head), with the
                           same tokenizer and its own fixture.json: the biases and the tied head.
"""
import json
import os

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, trainers
from transformers import (LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForCausalLM)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models")
SEQUENCES = [[5], [1, 17, 3, 250, 64], [1, 42, 399, 0, 120, 77, 77, 3, 260, 8, 300, 31]]
GREEDY_NEW = 10
TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  two leading spaces, tabs\tand\nnewlines",
    "naïve café, 東京 and an emoji 🦙",
    "def f(x):\n    return x * 2",
]
VOCAB = 400


def corpus():
    """English prose and code from Python's own sources: enough for a few hundred merges."""
    import this  # noqa: F401  (prints the Zen of Python once)
    import codecs
    import json as json_module

    zen = codecs.decode(this.s, "rot13")
    code = open(json_module.__file__.replace("__init__.py", "decoder.py")).read()
    return [zen, code]


def make_tokenizer(folder):
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=specials + byte_tokens, min_frequency=2, show_progress=False
    )
    tok.train_from_iterator(corpus(), trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", add_bos_token=True,
        add_eos_token=False,
    )
    hf.save_pretrained(folder)
    # LLaMA's own checkpoints say `add_bos_token` here (transformers 5 leaves it to tokenizer.json's
    # post-processor, which adds the same BOS): the loader follows this flag when it is there.
    path = os.path.join(folder, "tokenizer_config.json")
    with open(path) as f:
        config = json.load(f)
    config["add_bos_token"] = True
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    return hf


def randomise(model, std, seed):
    """Every weight random (RMSNorm gains around 1), so the loader cannot pass by luck."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * std
            p.copy_(1.0 + noise if name.endswith("norm.weight") else noise)


def write_fixture(model, hf_tok, folder, source):
    cases = []
    with torch.no_grad():
        for seq in SEQUENCES:
            ids = torch.tensor([seq])
            logits = model(ids).logits[0]
            mask = torch.ones_like(ids)
            greedy = model.generate(
                ids, attention_mask=mask, max_new_tokens=GREEDY_NEW, do_sample=False, pad_token_id=0,
                eos_token_id=None,
            )[0, len(seq):]
            cases.append({
                "input_ids": seq,
                "logits": [[float(f"{v:.7g}") for v in row] for row in logits.tolist()],
                "greedy_ids": greedy.tolist(),
            })
    texts = [{"text": t, "ids": hf_tok(t)["input_ids"]} for t in TEXTS]
    assert all(t["ids"][0] == hf_tok.bos_token_id for t in texts), "BOS must start every text"
    with open(os.path.join(folder, "fixture.json"), "w") as f:
        json.dump({"source": source, "cases": cases, "texts": texts}, f)


def main():
    torch.manual_seed(0)
    shape = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6,
        rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
    )

    llama_dir = os.path.join(ROOT, "tiny-llama-ref")
    os.makedirs(llama_dir, exist_ok=True)
    hf_tok = make_tokenizer(llama_dir)
    llama = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=False, **shape)).eval()
    randomise(llama, std=0.3, seed=1)
    llama.save_pretrained(llama_dir, safe_serialization=True)
    write_fixture(llama, hf_tok, llama_dir, "transformers LlamaForCausalLM, torch float32, CPU")

    qwen_dir = os.path.join(ROOT, "tiny-llama-qwen2-ref")
    os.makedirs(qwen_dir, exist_ok=True)
    make_tokenizer(qwen_dir)
    qwen = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=True, use_sliding_window=False, **shape)).eval()
    randomise(qwen, std=0.3, seed=2)
    qwen.save_pretrained(qwen_dir, safe_serialization=True)
    write_fixture(qwen, hf_tok, qwen_dir, "transformers Qwen2ForCausalLM, torch float32, CPU")


if __name__ == "__main__":
    main()
