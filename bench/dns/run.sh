#!/usr/bin/env bash
# DNS benchmark: svcplane's DNS server and CoreDNS (its kubernetes plugin pointed at our API
# server) on one fixture of 10,000 Services with 50,000 endpoints, measured with dnsperf.
#
#   bench/dns/run.sh [seconds-per-run]        COREDNS=/path/to/coredns to include CoreDNS
#
# Each DNS server is pinned to CPU 1 and dnsperf to CPU 0 (taskset), so QPS is per vCPU.
# Reported per server: max QPS and mean latency (saturating run, 100 queries outstanding),
# p99 latency at a fixed 10,000 QPS (dnsperf -v), and RSS after the runs. Also the time from an
# API change to the DNS answer (dnsbench changes). Everything listens on 127.0.0.1 only; the
# upstream is a closed loopback port, so no query leaves the machine.
# Needs: dnsperf (Debian package), curl, taskset (util-linux).
set -euo pipefail
secs=${1:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/svcp-dnsbench-XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

(cd "$root" && go build -o "$work/svcplane" ./cmd/svcplane && go build -o "$work/dnsbench" ./bench/dns/dnsbench)

port() { echo $((20000 + RANDOM % 30000)); }
api=$(port); ours=$(port); ours_health=$(port); core=$(port); core_ready=$(port); core_health=$(port); core_metrics=$(port)
closed_upstream=127.0.0.1:9

"$work/svcplane" server --data-dir "$work/data" --bind-address 127.0.0.1 --secure-port "$api" --dns=false >"$work/api.log" 2>&1 &
pids+=($!)
until curl -sk --max-time 1 "https://127.0.0.1:$api/readyz" 2>/dev/null | grep -qx ok; do sleep 0.1; done
kubeconfig=$work/data/admin.kubeconfig

echo "== fixture"
"$work/dnsbench" fixture --kubeconfig "$kubeconfig" --services 10000 --endpoints-per-service 5 --queries "$work/queries.txt"

wait_http() { until curl -s --max-time 1 "$1" >/dev/null 2>&1; do sleep 0.1; done; }

# RssAnon is the process's own memory; RssFile is mostly the pages of its executable in use
# (svcplane's binary also holds the API server and etcd, CoreDNS's all its plugins).
rss() { awk '/VmHWM|VmRSS|RssAnon|RssFile/ {printf "%s %d MiB  ", $1, $2/1024}' "/proc/$1/status"; echo; }

measure() { # name port pid
  local name=$1 p=$2 pid=$3
  taskset -c 0 dnsperf -s 127.0.0.1 -p "$p" -d "$work/queries.txt" -l 3 -c 10 -q 100 >/dev/null 2>&1 # warm-up
  local out
  out=$(taskset -c 0 dnsperf -s 127.0.0.1 -p "$p" -d "$work/queries.txt" -l "$secs" -c 20 -q 100 2>&1)
  local qps lat lost
  qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
  lat=$(awk '/Average Latency/ {print $4 * 1000}' <<<"$out")
  lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
  local p99
  # Per-query latencies go to a file first so that sorting them does not compete with the run.
  taskset -c 0 dnsperf -s 127.0.0.1 -p "$p" -d "$work/queries.txt" -l 10 -c 10 -Q 10000 -v >"$work/latencies" 2>/dev/null
  p99=$(awk '$1 == ">" {print $NF}' "$work/latencies" | sort -g | awk '{a[NR]=$1} END {printf "%.3f", a[int(NR*0.99)] * 1000}')
  printf "%-10s max QPS %9s   mean latency %7.3f ms   lost %s   p99 @10k QPS %s ms\n" "$name" "$qps" "$lat" "$lost" "$p99"
  echo -n "after load: "; rss "$pid"
}

echo "== svcplane dns"
taskset -c 1 "$work/svcplane" dns --kubeconfig "$kubeconfig" --dns-listen "127.0.0.1:$ours" \
  --health-listen "127.0.0.1:$ours_health" --upstream "$closed_upstream" >"$work/ours.log" 2>&1 &
ours_pid=$!; pids+=($ours_pid)
start=$(date +%s.%N)
until curl -sf --max-time 1 "http://127.0.0.1:$ours_health/ready" >/dev/null 2>&1; do sleep 0.05; done
echo "ready (informers synced) after $(echo "$(date +%s.%N) - $start" | bc | cut -c1-5)s"
sleep 2; echo -n "idle: "; rss "$ours_pid"
measure svcplane "$ours" "$ours_pid"

if [ -n "${COREDNS:-}" ]; then
  echo "== CoreDNS $("$COREDNS" -version | head -1)"
  cat >"$work/Corefile" <<CONF
.:$core {
    bind 127.0.0.1
    errors
    health 127.0.0.1:$core_health
    ready 127.0.0.1:$core_ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $kubeconfig svcplane
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus 127.0.0.1:$core_metrics
    forward . $closed_upstream
    cache 30
    loadbalance
}
CONF
  taskset -c 1 "$COREDNS" -conf "$work/Corefile" >"$work/coredns.log" 2>&1 &
  core_pid=$!; pids+=($core_pid)
  start=$(date +%s.%N)
  until curl -sf --max-time 1 "http://127.0.0.1:$core_ready/ready" >/dev/null 2>&1; do sleep 0.05; done
  echo "ready after $(echo "$(date +%s.%N) - $start" | bc | cut -c1-5)s"
  sleep 2; echo -n "idle: "; rss "$core_pid"
  measure coredns "$core" "$core_pid"
  echo "== both answer alike (sample)"
  for q in "svc-1.bench.svc.cluster.local A" "svc-10.bench.svc.cluster.local A" "_http._tcp.svc-10.bench.svc.cluster.local SRV" \
           "nope.bench.svc.cluster.local A" "bench.svc.cluster.local A" "dns-version.cluster.local TXT"; do
    a=$(dig @127.0.0.1 -p "$ours" $q +short | sort | tr '\n' ' '); b=$(dig @127.0.0.1 -p "$core" $q +short | sort | tr '\n' ' ')
    sa=$(dig @127.0.0.1 -p "$ours" $q | grep -o 'status: [A-Z]*'); sb=$(dig @127.0.0.1 -p "$core" $q | grep -o 'status: [A-Z]*')
    [ "$a$sa" = "$b$sb" ] && r=same || r="DIFFER: ours [$sa] $a / coredns [$sb] $b"
    echo "  $q: $r"
  done
fi

echo "== change → answer latency (svcplane dns)"
"$work/dnsbench" changes --kubeconfig "$kubeconfig" --server "127.0.0.1:$ours" --rounds 20
