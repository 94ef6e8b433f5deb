#!/usr/bin/env bash
# Control plane of the nftables proxy side by side with upstream kube-proxy (issue 7, bar b):
# full sync of SERVICES × ENDPOINTS, the one-endpoint-change sync (median of 20), memory, and
# network-programming latency p50/p99 while the Services are created at RATE a second.
#
#   sudo KUBE_PROXY=/path/to/kube-proxy bench/proxy-controlplane/run.sh [services=10000] [endpoints=10] [rate=100]
#
# About 7 minutes at the defaults. Without KUBE_PROXY only svcplane's proxy runs. The peer is
# k8s.io/kubernetes v1.37.2's cmd/kube-proxy, built outside the repo (see docs/benchmarks.md).
# Needs root, `ip`, and `nft` and `conntrack` for kube-proxy.
#
# A `svcplane server` listens on the host's loopback. Each proxy runs in a network namespace of
# its own, created here and deleted on exit (after killing whatever still runs in it): only
# loopback and a veth link with a node address, no route anywhere, so every rule either proxy
# writes lands in its namespace. The API is relayed into each namespace's loopback by the Go
# program (main.go); nothing in the host's network is configured.
set -euo pipefail
services=${1:-10000}
endpoints=${2:-10}
rate=${3:-100}
root=$(cd "$(dirname "$0")/../.." && pwd)
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces)" >&2; exit 1; }
if [[ -n ${KUBE_PROXY:-} ]]; then
	[[ -x $KUBE_PROXY ]] || { echo "KUBE_PROXY=$KUBE_PROXY is not executable" >&2; exit 1; }
	command -v nft >/dev/null && command -v conntrack >/dev/null || { echo "kube-proxy needs nft and conntrack" >&2; exit 1; }
fi
work=$(mktemp -d /tmp/pcpbench-XXXXXX)
ours="pcp$$-svcplane"
peer="pcp$$-kubeproxy"
server=""

# The namespaces go even if the program dies: their processes first, then the namespace.
delete_netns() {
	local ns=$1 pid
	ip netns list | grep -qw "^$ns" || return 0
	for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
	ip netns delete "$ns" || echo "could not delete namespace $ns" >&2
}
cleanup() {
	if [[ -n $server ]]; then
		kill "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
	fi
	delete_netns "$ours"
	delete_netns "$peer"
	if [[ -n ${KEEP_WORK:-} ]]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# make_netns NAME ADDR: loopback, and a link carrying the node's address (NodePorts and
# kube-proxy's node IP need one). The link is one end of a veth pair whose other end stays in
# the same namespace (this kernel has no dummy links), so it reaches nothing.
make_netns() {
	ip netns add "$1"
	ip -n "$1" link set lo up
	ip -n "$1" link add eth0 type veth peer name eth0-peer
	ip -n "$1" addr add "$2/24" dev eth0
	ip -n "$1" link set eth0 up
	ip -n "$1" link set eth0-peer up
}

(cd "$root" && go build -o "$work/svcplane" ./cmd/svcplane && go build -o "$work/bench" ./bench/proxy-controlplane)
make_netns "$ours" 10.250.0.11
peer_flags=()
if [[ -n ${KUBE_PROXY:-} ]]; then
	make_netns "$peer" 10.250.0.12
	peer_flags=(-kube-proxy "$KUBE_PROXY" -peer-netns "$peer" -peer-node-ip 10.250.0.12)
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$work/svcplane" server --data-dir "$work/server" --bind-address 127.0.0.1 --secure-port "$port" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 600); do grep -q "svcplane server is serving" "$work/server.log" && break; sleep 0.1; done
grep -q "svcplane server is serving" "$work/server.log" || { tail -20 "$work/server.log"; exit 1; }
sleep 1

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r); $(date -u +%F)"
"$work/bench" -kubeconfig "$work/server/admin.kubeconfig" -svcplane "$work/svcplane" -ours-netns "$ours" \
	-services "$services" -endpoints "$endpoints" -rate "$rate" -work "$work" "${peer_flags[@]}"
