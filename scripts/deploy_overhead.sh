#!/usr/bin/env bash
# The cost of encrypted, authenticated links: one secure generation on the shipped pair with the
# dealer, server and client as processes on 127.0.0.1, the party link shaped in real time
# (--shape), once over plaintext and once with keys (Noise XX), alternating RUNS times.
# A byte-counting relay sits on every link, so the bytes each link carries are measured too.
# Usage: scripts/deploy_overhead.sh [NET] [TOKENS] [RUNS]   (default wan 16 2)
set -euo pipefail
NET=${1:-wan}
TOKENS=${2:-16}
RUNS=${3:-2}
POST=${POST:-./target/release/post}
ARGS=(--prompts datasets/code-completion.jsonl --limit 1 --max-new-tokens "$TOKENS" --method post -k 4 --json)
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
for n in dealer server client; do "$POST" keygen --out "$tmp/$n" >/dev/null; done
wait_addr() { local f=$1; for _ in $(seq 200); do [ -s "$f" ] && break; sleep 0.05; done; head -1 "$f" | awk '{print $NF}'; }
# relay LISTEN_FILE TARGET COUNT_FILE: forwards one connection's bytes both ways and counts them.
relay() {
  python3 - "$@" <<'PY' &
import socket, sys, threading
out, target, counts = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = target.rsplit(":", 1)
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0)); ls.listen(8)
open(out, "w").write("relay listening on 127.0.0.1:%d\n" % ls.getsockname()[1])
total = {"up": 0, "down": 0}
def pump(a, b, key):
    try:
        while True:
            d = a.recv(1 << 16)
            if not d: break
            total[key] += len(d); b.sendall(d)
    except OSError: pass
    for s in (a, b):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
c, _ = ls.accept()
s = socket.create_connection((host, int(port)))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ts = [threading.Thread(target=pump, args=(c, s, "up")), threading.Thread(target=pump, args=(s, c, "down"))]
[t.start() for t in ts]; [t.join() for t in ts]
open(counts, "w").write("%d %d\n" % (total["up"], total["down"]))
PY
}
one() { # $1: plain|noise
  local mode=$1 d="$tmp/$1"; rm -rf "$d"; mkdir -p "$d"
  local dk=() sk=() ck=()
  if [ "$mode" = noise ]; then
    dk=(--key "$tmp/dealer.key" --trust "$tmp/client.pub" --trust-server "$tmp/server.pub")
    sk=(--key "$tmp/server.key" --dealer-key "$tmp/dealer.pub")
    ck=(--key "$tmp/client.key" --trust "$tmp/server.pub" --dealer-key "$tmp/dealer.pub")
  fi
  "$POST" dealer --listen 127.0.0.1:0 --sessions 1 "${dk[@]}" > "$d/dealer" 2>/dev/null &
  local dealer; dealer=$(wait_addr "$d/dealer")
  relay "$d/r-sd" "$dealer" "$d/n-sd"; local sd; sd=$(wait_addr "$d/r-sd")
  relay "$d/r-cd" "$dealer" "$d/n-cd"; local cd; cd=$(wait_addr "$d/r-cd")
  "$POST" serve --model default-private --listen 127.0.0.1:0 --dealer "$sd" --sessions 1 --shape "$NET" "${sk[@]}" > "$d/server" 2>/dev/null &
  local server; server=$(wait_addr "$d/server")
  relay "$d/r-cs" "$server" "$d/n-cs"; local cs; cs=$(wait_addr "$d/r-cs")
  local start end
  start=$(date +%s.%N)
  "$POST" verify --connect "$cs" --dealer "$cd" --public default-aligned-public --shape "$NET" "${ARGS[@]}" "${ck[@]}" > "$d/client" 2>"$d/client.err"
  end=$(date +%s.%N)
  for _ in $(seq 200); do [ -s "$d/n-cs" ] && [ -s "$d/n-cd" ] && [ -s "$d/n-sd" ] && break; sleep 0.05; done
  python3 - "$mode" "$d" "$start" "$end" <<'PY'
import json, sys
mode, d, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
s = json.load(open(d + "/client"))["summary"][0]
links = {k: tuple(map(int, open("%s/n-%s" % (d, k)).read().split())) for k in ("cs", "cd", "sd")}
mb = lambda k: "%.2f/%.2f" % (links[k][0] / 1e6, links[k][1] / 1e6)
print("%-6s generation %7.2f s  whole run %7.2f s  rounds %d  tokens %d  MB up/down: client-server %s, client-dealer %s, server-dealer %s"
      % (mode, s["sim_seconds"], end - start, s["rounds"], s["tokens"], mb("cs"), mb("cd"), mb("sd")))
PY
}
echo "$NET, $TOKENS tokens, POST K = 4, default pair; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for _ in $(seq "$RUNS"); do one plain; one noise; done
