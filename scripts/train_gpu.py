#!/usr/bin/env python3
"""Train the shipped default pair on a GPU: the private model (code + general text), the public model
(general text), then the public model distilled to the private one with the total-variation loss
of `post distill --loss tv`. Writes the Hugging Face GPT-2 layout that `post` loads.

This is the fast route of `just default-pair-gpu` (issue 11): a GPU machine has PyTorch but no Rust
toolchain, so the corpora travel pre-tokenized (scripts/tokenize_corpora.py) and the model is a
plain-PyTorch GPT-2 whose parameter names, Conv1D orientation ([in, out]), tanh GeLU and tied
output embedding are those of `src/model/gpt2.rs`. The CPU route (`post train`, `post distill`)
stays the reference; both write the same files.

Each stage stops at a token budget or a wall-clock budget, whichever comes first (the step count is
fixed after timing the first steps, so the cosine schedule ends where training ends), and writes
its model as soon as it is done, so that a run cut short keeps the stages it finished.

  python3 scripts/train_gpu.py --tokens data/tokens --out models

The shipped weights: this script's defaults on one H200 (private 42 s, public 1 s, distillation 94 s;
the private model's run is bit-for-bit repeatable there, see results/train-default-pair-gpu.log).
"""
import argparse
import json
import lzma
import math
import os
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EOT = 0


# ---------------------------------------------------------------------------------------- model
def attention(q, k, v):
    if hasattr(F, "scaled_dot_product_attention"):  # PyTorch >= 2.0
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


class Block(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.c_attn = nn.Linear(d, 3 * d)
        self.attn_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = attention(q, k, v)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt2(nn.Module):
    def __init__(self, vocab, n_positions, d, n_layer, n_head):
        super().__init__()
        self.config = dict(
            vocab_size=vocab,
            n_positions=n_positions,
            n_embd=d,
            n_layer=n_layer,
            n_head=n_head,
            n_inner=None,
            layer_norm_epsilon=1e-5,
            activation_function="gelu_new",
            eos_token_id=EOT,
        )
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(n_positions, d)
        self.h = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, eps=1e-5)
        # GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer).
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln_" in name:
                nn.init.ones_(p)
            else:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # tied output embedding

    def hf_tensors(self):
        """Parameters under the Hugging Face names; nn.Linear's [out, in] becomes Conv1D's [in, out]."""
        out = {"wte.weight": self.wte.weight, "wpe.weight": self.wpe.weight}
        out["ln_f.weight"], out["ln_f.bias"] = self.ln_f.weight, self.ln_f.bias
        for i, blk in enumerate(self.h):
            for ours, theirs in [
                ("ln_1", "ln_1"),
                ("ln_2", "ln_2"),
                ("c_attn", "attn.c_attn"),
                ("attn_proj", "attn.c_proj"),
                ("c_fc", "mlp.c_fc"),
                ("mlp_proj", "mlp.c_proj"),
            ]:
                mod = getattr(blk, ours)
                w = mod.weight.T if isinstance(mod, nn.Linear) else mod.weight
                out[f"h.{i}.{theirs}.weight"], out[f"h.{i}.{theirs}.bias"] = w, mod.bias
        return out


def write_safetensors(path, tensors, dtype):
    """The safetensors format: an 8-byte header length, a JSON header, then the raw arrays."""
    np_dtype, tag = {"f16": ("<f2", "F16"), "f32": ("<f4", "F32")}[dtype]
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name].detach().float().cpu().numpy().astype(np_dtype))
        header[name] = {"dtype": tag, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        blobs.append(arr.tobytes())
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def save(model, out, name, dtype, state, write_state=True):
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    write_safetensors(os.path.join(folder, "model.safetensors"), model.hf_tensors(), dtype)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(model.config, f, indent=2)
    if write_state:
        with open(os.path.join(folder, "trainer_state.json"), "w") as f:
            json.dump(state, f, indent=2)


# ----------------------------------------------------------------------------------------- data
def load_tokens(folder, name):
    with lzma.open(os.path.join(folder, f"{name}.u16.xz"), "rb") as f:
        return np.frombuffer(f.read(), dtype="<u2")


class Stream:
    """Random windows of seq_len + 1 tokens from the training tokens, and fixed windows over the
    validation tokens."""

    def __init__(self, train, valid, device, seq_len, seed):
        self.train = torch.from_numpy(train.astype(np.int64)).to(device)
        self.valid = torch.from_numpy(valid.astype(np.int64)).to(device)
        self.seq_len = seq_len
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def batch(self, batch_size):
        starts = torch.randint(0, len(self.train) - self.seq_len - 1, (batch_size, 1), generator=self.gen, device=self.train.device)
        idx = self.train[starts + torch.arange(self.seq_len + 1, device=self.train.device)]
        return idx[:, :-1], idx[:, 1:]

    def valid_batches(self, batch_size):
        n = (len(self.valid) - 1) // self.seq_len
        idx = self.valid[: n * self.seq_len + 1]
        x = idx[:-1].view(n, self.seq_len)
        y = idx[1:].view(n, self.seq_len)
        for i in range(0, n, batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]


# ------------------------------------------------------------------------------------- training
def tv_loss(student_logits, teacher_logits):
    """Total variation 0.5 sum |p - q| per position, averaged: `post distill --loss tv` at T = 1."""
    p = F.softmax(teacher_logits.float(), dim=-1)
    q = F.softmax(student_logits.float(), dim=-1)
    return 0.5 * (p - q).abs().sum(-1).mean()


def autocast(device):
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def fit(model, stream, args, stage, lr, token_budget, seconds, loss_fn, log):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if args.device == "cuda" else {}
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), **extra)
    tokens_per_step = args.batch_size * args.seq_len
    steps = max(1, token_budget // tokens_per_step)
    warmup = min(200, steps // 10 + 1)
    start, timed_from = time.time(), None
    step = 0
    while step < steps:
        if step == 20:
            if args.device == "cuda":
                torch.cuda.synchronize()
            timed_from = (time.time(), step)
        if step == 60 and timed_from is not None:
            if args.device == "cuda":
                torch.cuda.synchronize()
            per_step = (time.time() - timed_from[0]) / (step - timed_from[1])
            affordable = int((seconds - (time.time() - start)) / per_step) + step
            if affordable < steps:
                log(f"{stage}: {per_step * 1e3:.1f} ms/step, the time budget allows {affordable} of {steps} steps")
                steps = max(affordable, step + 1)
        progress = max(0.0, (step - warmup) / max(1, steps - warmup))
        scale = (step + 1) / warmup if step < warmup else 0.1 + 0.45 * (1 + math.cos(math.pi * progress))
        for g in opt.param_groups:
            g["lr"] = lr * scale
        x, y = stream.batch(args.batch_size)
        with autocast(args.device):
            loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 500 == 0 or step == steps:
            log(f"{stage}: step {step}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f} s)")
    return {"steps": steps, "tokens_seen": steps * tokens_per_step, "seconds": round(time.time() - start, 1), "last_loss": loss.item()}


@torch.no_grad()
def evaluate(model, stream, prompts, args, teacher=None):
    model.eval()
    total, count, tv_total, tv_count = 0.0, 0, 0.0, 0
    for x, y in stream.valid_batches(args.batch_size):
        with autocast(args.device):
            logits = model(x)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
        if teacher is not None:
            with autocast(args.device):
                t_logits = teacher(x)
            tv_total += tv_loss(logits, t_logits).item() * y.numel()
            tv_count += y.numel()
    p_total, p_count = 0.0, 0
    for ids in prompts:  # scored like `post bench --mode perplexity`: each prompt from its second token
        for i in range(0, len(ids), args.seq_len):
            chunk = ids[i : i + args.seq_len]
            if len(chunk) < 2:
                continue
            t = torch.tensor(chunk, device=args.device).unsqueeze(0)
            logits = model(t[:, :-1]).float()
            p_total += F.cross_entropy(logits[0], t[0, 1:], reduction="sum").item()
            p_count += len(chunk) - 1
    model.train()
    out = {"valid_ppl": round(math.exp(total / count), 2), "code_prompts_ppl": round(math.exp(p_total / p_count), 2)}
    if tv_count:
        out["valid_tv"] = round(tv_total / tv_count, 4)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="data/tokens")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--private-tokens", type=int, default=160_000_000)
    ap.add_argument("--public-tokens", type=int, default=8_000_000)
    ap.add_argument("--distill-tokens", type=int, default=320_000_000)
    ap.add_argument("--budget-private", type=float, default=170.0, help="seconds")
    ap.add_argument("--budget-public", type=float, default=25.0, help="seconds")
    ap.add_argument("--budget-distill", type=float, default=140.0, help="seconds")
    ap.add_argument("--holdout", type=int, default=200_000, help="validation tokens at each stream's end")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-state", action="store_true", help="write summary.json only (a device returns at most 8 files)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    os.makedirs(args.out, exist_ok=True)
    log_path = os.path.join(args.out, "train_log.txt")

    def log(msg):
        print(msg, flush=True)
        with open(log_path, "a") as f:
            f.write(msg + "\n")

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    log(f"torch {torch.__version__} on {device_name}")
    general = load_tokens(args.tokens, "general")
    code = [load_tokens(args.tokens, n) for n in ("code", "code-large")]
    with open(os.path.join(args.tokens, "code-prompts.json")) as f:
        prompts = json.load(f)
    vocab = 4096
    log(f"tokens: general {len(general)}, code {sum(len(c) for c in code)}")
    # The last `holdout` tokens of code and a quarter of that of prose are never trained on.
    code = np.concatenate(code)
    code_train, code_valid = code[: -args.holdout], code[-args.holdout :]
    cut = len(general) - args.holdout // 4
    general_train, general_valid = general[:cut], general[cut:]
    private_stream = Stream(np.concatenate([code_train, general_train]), code_valid, args.device, args.seq_len, args.seed)
    public_stream = Stream(general_train, general_valid, args.device, args.seq_len, args.seed + 1)
    summary = {"device": device_name, "torch": torch.__version__, "batch_size": args.batch_size, "seq_len": args.seq_len}

    def state(recipe, lr, run):
        """trainer_state.json: how the weights were made, and their held-out figures."""
        return {
            "recipe": recipe,
            "route": "GPU: scripts/train_gpu.py (just default-pair-gpu)",
            "device": device_name,
            "torch": torch.__version__,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "seed": args.seed,
            "optimizer": "AdamW (0.9, 0.95), weight decay 0.1 on matrices, grad clip 1.0, bf16 autocast, linear warm-up 200 steps then cosine to 0.1 lr",
            "lr": lr,
            "steps": run["steps"],
            "tokens_seen": run["tokens_seen"],
            "train_seconds": run["seconds"],
            "last_loss": round(run["last_loss"], 4),
            "held_out_code_valid_ppl": run["valid_ppl"],
            "code_completion_ppl": run["code_prompts_ppl"],
            **({"held_out_code_tv_to_private": run["valid_tv"]} if "valid_tv" in run else {}),
        }

    def next_token(model, x, y):
        return F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())

    private = Gpt2(vocab, args.seq_len, 192, 4, 4).to(args.device)
    run = fit(private, private_stream, args, "private", 2e-3, args.private_tokens, args.budget_private, next_token, log)
    run.update(evaluate(private, private_stream, prompts, args))
    log(f"private: {run}")
    summary["private"] = run
    save(private, args.out, "default-private", "f16", state("train on code.txt + code-large.txt + general.txt", 2e-3, run), not args.no_state)

    public = Gpt2(vocab, args.seq_len, 128, 2, 4).to(args.device)
    run = fit(public, public_stream, args, "public", 2e-3, args.public_tokens, args.budget_public, next_token, log)
    run.update(evaluate(public, private_stream, prompts, args, teacher=private))
    log(f"public: {run}")
    summary["public"] = run
    save(public, args.out, "default-public", "f32", state("train on general.txt", 2e-3, run), not args.no_state)

    private.eval()
    for p in private.parameters():
        p.requires_grad_(False)

    def distill(model, x, _y):
        with torch.no_grad():
            teacher = private(x)
        return tv_loss(model(x), teacher)

    run = fit(public, private_stream, args, "distill", 1e-3, args.distill_tokens, args.budget_distill, distill, log)
    run.update(evaluate(public, private_stream, prompts, args, teacher=private))
    log(f"aligned: {run}")
    summary["aligned"] = run
    recipe = "distill (loss tv, T = 1) from default-private, starting from default-public, on code.txt + code-large.txt + general.txt"
    save(public, args.out, "default-public-aligned", "f32", state(recipe, 1e-3, run), not args.no_state)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
