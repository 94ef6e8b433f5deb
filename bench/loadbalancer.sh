#!/usr/bin/env bash
# LoadBalancer figures (issue 11; needs root): `kubectl apply` of a LoadBalancer Service → first
# answer from the sandbox's outside client (ext, which reaches the address through ARP), and the
# fail-over gap when the announcing node's agent is stopped (SIGTERM and SIGKILL in turn), in a
# two-node sandbox.
#   bench/loadbalancer.sh [services] [failover-rounds] [proxy-mode]
set -euo pipefail
services=${1:-10}
rounds=${2:-6}
mode=${3:-nftables}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
name="lbbench$$"
go build -o "$work/svcplane" ./cmd/svcplane
go build -o "$work/loadbalancer" ./bench/loadbalancer
trap '"$work/svcplane" sandbox down --name "$name" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"$work/svcplane" sandbox up --name "$name" --nodes 2 --agent --proxy-mode "$mode" >/dev/null
echo "proxy mode $mode, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$work/loadbalancer" --name "$name" --services "$services" --failovers "$rounds"
