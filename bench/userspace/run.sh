#!/usr/bin/env bash
# Userspace proxy benchmark: svcplane's userspace mode vs HAProxy (mode tcp, roundrobin) vs no
# proxy, same backends, same run, all inside network namespaces that bench/userspace creates
# and removes (see main.go for the topology and the figures).
#
#   sudo bench/userspace/run.sh [seconds-per-run] [rounds] [more flags of main.go, e.g. -paths userspace,haproxy]
#
# Needs root (namespaces), and iperf3, wrk and haproxy: installed here from Debian if missing.
set -euo pipefail
secs=${1:-8}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
missing=()
for tool in iperf3 wrk haproxy; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bin=$(mktemp /tmp/usbench-XXXX)
trap 'rm -f "$bin"' EXIT
(cd "$root" && go build -o "$bin" ./bench/userspace)
"$bin" -seconds "$secs" -rounds "$rounds" "${@:3}"
