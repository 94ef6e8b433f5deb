#!/usr/bin/env bash
# nftables proxy data-plane benchmark (issue 7, bar a): iperf3 throughput and connect() latency
# from a client Pod to a backend Pod through its ClusterIP vs to the Pod's address, at 10 Services
# and at SERVICES Services, in a sandbox this script brings up and always takes down (see
# main.go for what is measured and how).
#
#   sudo bench/proxy-dataplane/run.sh [services=30000] [rounds=7] [seconds=4] [connects=10000]
#
# Needs root (namespaces), nft, nsenter and iperf3 (installed from Debian if missing).
# Takes about 5 minutes on a quiet 2-core machine, most of it creating the Services.
set -euo pipefail
services=${1:-30000}
rounds=${2:-7}
seconds=${3:-4}
connects=${4:-10000}
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v iperf3 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
work=$(mktemp -d /tmp/pdpbench-XXXX)
name="pdp$$"
cleanup() {
	"$work/svcplane" sandbox down --name "$name" >/dev/null || echo "sandbox down --name $name failed" >&2
	rm -rf "$work"
}
(cd "$root" && go build -o "$work/svcplane" ./cmd/svcplane && go build -o "$work/bench" ./bench/proxy-dataplane)
trap cleanup EXIT
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
kubeconfig=$("$work/svcplane" sandbox up --name "$name" --nodes 2 --agent --proxy-mode nftables | tail -n1)
kubeconfig=${kubeconfig#export KUBECONFIG=}
"$work/bench" -kubeconfig "$kubeconfig" -sandbox "$name" -svcplane "$work/svcplane" \
	-services "$services" -rounds "$rounds" -seconds "$seconds" -connects "$connects"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
