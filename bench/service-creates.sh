#!/usr/bin/env bash
# Service (+ one EndpointSlice each) creates per second through the API with 32 concurrent
# client-go writers, against a fresh `svcplane server` on loopback, and the server's memory.
#   bench/service-creates.sh [services] [writers]
# The upstream kube-apiserver side of the comparison is not scripted yet.
set -euo pipefail
cd "$(dirname "$0")/.."
services=${1:-10000}
writers=${2:-32}
work=$(mktemp -d /tmp/svcp-bench-XXXXXX)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT

go build -o "$work/svcplane" ./cmd/svcplane
go build -o "$work/servicecreates" ./bench/servicecreates
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$work/svcplane" server --data-dir "$work/data" --bind-address 127.0.0.1 --secure-port "$port" >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 200); do
  grep -q "svcplane server is serving" "$work/server.log" && break
  sleep 0.1
done
grep -q "svcplane server is serving" "$work/server.log" || { tail -20 "$work/server.log"; exit 1; }
sleep 1 # let the post-start hooks (allocator sync, kubernetes Service) finish

"$work/servicecreates" --kubeconfig "$work/data/admin.kubeconfig" --services "$services" --writers "$writers"
grep -E '^(VmHWM|VmRSS)' "/proc/$pid/status" | tr -s ' \t' ' ' | paste -sd ' '
