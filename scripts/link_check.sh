#!/usr/bin/env bash
# One short secure generation on the shipped default pair, timed three ways:
#   1. the virtual clock (in-process, simulated link),
#   2. real-time shaping (dealer, server and client as processes on 127.0.0.1, --shape),
#   3. tc netem on a veth pair between two network namespaces (root and the netem qdisc needed).
# Usage: scripts/link_check.sh [NET] [TOKENS]   (NET: lan or wan; default wan 16)
set -euo pipefail
NET=${1:-wan}
TOKENS=${2:-16}
POST=${POST:-./target/release/post}
ARGS=(--prompts datasets/code-completion.jsonl --limit 1 --max-new-tokens "$TOKENS" --method post -k 4 --json)
case "$NET" in
  lan) DELAY=0.4ms; RATE=3gbit ;;
  wan) DELAY=40ms; RATE=100mbit ;;
  *) echo "NET must be lan or wan" >&2; exit 2 ;;
esac
seconds() { python3 -c 'import json,sys; d=json.load(sys.stdin); s=d["summary"][0]; print(s["sim_seconds"], s["rounds"], s["tokens"])'; }
wait_addr() { # the first stdout line of a started process: "... listening on ADDR"
  local f=$1; for _ in $(seq 100); do [ -s "$f" ] && break; sleep 0.1; done; head -1 "$f" | awk '{print $NF}'; }

echo "1. virtual clock ($NET, in-process)"
read -r VIRT ROUNDS TOK < <("$POST" verify --pair default-aligned --net "$NET" "${ARGS[@]}" 2>/dev/null | seconds)
echo "   $VIRT s for $TOK tokens, $ROUNDS rounds"

run_processes() { # $1: command prefix for the client side, $2: for the server side, $3: server host, extra args...
  local client_ns=$1 server_ns=$2 host=$3; shift 3
  local tmp; tmp=$(mktemp -d)
  # Keys for the three processes: listening beyond loopback needs them.
  for n in dealer server client; do "$POST" keygen --out "$tmp/$n" > /dev/null; done
  local dk=(--key "$tmp/dealer.key" --trust "$tmp/client.pub" --trust-server "$tmp/server.pub")
  local sk=(--key "$tmp/server.key" --dealer-key "$tmp/dealer.pub")
  local ck=(--key "$tmp/client.key" --trust "$tmp/server.pub" --dealer-key "$tmp/dealer.pub")
  $server_ns "$POST" dealer --listen 0.0.0.0:0 --sessions 1 "${dk[@]}" > "$tmp/dealer" 2>/dev/null &
  local dealer_pid=$!
  local dealer; dealer=$host:$(wait_addr "$tmp/dealer" | awk -F: '{print $NF}')
  $server_ns "$POST" serve --model default-private --listen 0.0.0.0:0 --dealer "127.0.0.1:${dealer##*:}" --sessions 1 "${sk[@]}" "$@" > "$tmp/server" 2>/dev/null &
  local server_pid=$!
  local server; server=$host:$(wait_addr "$tmp/server" | awk -F: '{print $NF}')
  local start end
  start=$(date +%s.%N)
  $client_ns "$POST" verify --connect "$server" --dealer "$dealer" --public default-aligned-public "${ARGS[@]}" "${ck[@]}" "$@" > "$tmp/client" 2>/dev/null
  end=$(date +%s.%N)
  kill "$server_pid" "$dealer_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "$(seconds < "$tmp/client") $(python3 -c "print($end - $start)")"
  rm -rf "$tmp"
}

echo "2. real-time shaping (--shape $NET, processes on 127.0.0.1)"
read -r SHAPED _ _ WALL < <(run_processes "" "" 127.0.0.1 --shape "$NET")
echo "   generation $SHAPED s (the client's clock), whole run with set-up $WALL s"

echo "3. tc netem ($DELAY each way, $RATE, veth between namespaces)"
if ip netns add post-c 2>/dev/null && ip netns add post-s && ip link add post-vc type veth peer name post-vs \
  && ip link set post-vc netns post-c && ip link set post-vs netns post-s \
  && ip -n post-c addr add 10.77.0.1/24 dev post-vc && ip -n post-s addr add 10.77.0.2/24 dev post-vs \
  && ip -n post-c link set post-vc up && ip -n post-s link set post-vs up \
  && ip -n post-c link set lo up && ip -n post-s link set lo up \
  && ip netns exec post-c tc qdisc add dev post-vc root netem delay "$DELAY" rate "$RATE" 2>/dev/null \
  && ip netns exec post-s tc qdisc add dev post-vs root netem delay "$DELAY" rate "$RATE" 2>/dev/null; then
  read -r NETEM _ _ NWALL < <(run_processes "ip netns exec post-c" "ip netns exec post-s" 10.77.0.2)
  echo "   generation $NETEM s, whole run with set-up $NWALL s (the dealer sits beside the server, so the client's keys cross the link too)"
else
  echo "   not available here (no netns/veth or no netem qdisc in this kernel)"
fi
ip netns del post-c 2>/dev/null || true
ip netns del post-s 2>/dev/null || true
