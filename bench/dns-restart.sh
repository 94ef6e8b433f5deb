#!/usr/bin/env bash
# The embedded DNS server's start-up on a populated cluster: `svcplane server` restarted on a data
# dir holding N Services + N EndpointSlices (written once by bench/servicecreates with the DNS
# server off), its DNS server on a loopback port. Per start: the time from "serving" to "DNS index
# synced" as the server logs it, and, SETTLE seconds later, the process's CPU seconds since start,
# peak and current RSS, and live heap (after a GC, from /debug/pprof/heap).
#   bench/dns-restart.sh [services] [rounds]
# SVCPLANE=FILE measures that binary instead of one built from this tree; BASELINE=FILE also
# starts that binary on the same data dir, alternating with it each round (to compare a change
# with a binary built before it). Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
services=${1:-10000}
rounds=${2:-2}
settle=${SETTLE:-20}
work=$(mktemp -d /tmp/svcp-bench-XXXXXX)
pid=
cleanup() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$2/status"; }
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat"; }
mib() { echo $(( ($1 + 512) / 1024 )); }
wait_log() { # wait_log PATTERN: up to 120 s
  for _ in $(seq 1200); do grep -qs "$1" "$work/server.log" && return 0; kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  echo "no \"$1\" in the server log" >&2; tail -20 "$work/server.log" >&2; return 1
}
start() { # start BINARY FLAGS...
  local bin=$1
  shift
  port=$(freeport)
  "$bin" server --data-dir "$work/data" --bind-address 127.0.0.1 --secure-port "$port" "$@" >"$work/server.log" 2>&1 &
  pid=$!
  wait_log "svcplane server is serving"
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

if [[ -n ${SVCPLANE:-} ]]; then cp "$SVCPLANE" "$work/svcplane"; else go build -o "$work/svcplane" ./cmd/svcplane; fi
go build -o "$work/servicecreates" ./bench/servicecreates
binaries=("$work/svcplane")
if [[ -n ${BASELINE:-} ]]; then cp "$BASELINE" "$work/baseline"; binaries=("$work/baseline" "$work/svcplane"); fi

start "$work/svcplane" --dns=false
"$work/servicecreates" --kubeconfig "$work/data/admin.kubeconfig" --services "$services" --writers 32 >/dev/null
stop
# The first start after the writes pays once (several times the CPU of a later one); let it
# finish its work and leave it out of the figures.
start "$work/svcplane" --dns=false
sleep "$settle"
stop

for round in $(seq "$rounds"); do
  for bin in "${binaries[@]}"; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    start "$bin" --dns-listen "127.0.0.1:$(freeport)"
    wait_log "DNS index synced"
    synced=$(grep -o 'DNS index synced.*' "$work/server.log" | grep -o 'after="[^"]*"')
    sleep "$settle"
    token=$(awk '$1 == "token:" {print $2}' "$work/data/admin.kubeconfig")
    curl -sfk -H "Authorization: Bearer $token" -o "$work/heap.pb.gz" "https://127.0.0.1:$port/debug/pprof/heap?gc=1"
    heap=$(go tool pprof -sample_index=inuse_space -top "$work/heap.pb.gz" 2>/dev/null | grep -o '[0-9.]*MB total' || echo "?")
    echo "round $round $(basename "$bin"): load $load | DNS synced $synced | cpu $(cpu "$pid") s | peak $(mib "$(kb VmHWM "$pid")") MiB, RSS $(mib "$(kb VmRSS "$pid")") MiB (anon $(mib "$(kb RssAnon "$pid")")) | live heap $heap"
    stop
  done
done
