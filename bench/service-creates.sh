#!/usr/bin/env bash
# Service (+ one EndpointSlice each) creates per second through the API with concurrent client-go
# writers (bench/servicecreates), against a fresh `svcplane server` on loopback, and its memory.
#   bench/service-creates.sh [services] [writers]
#
# Side by side with upstream: set KUBE_APISERVER to a kube-apiserver binary and ETCD to an etcd
# binary (or anything taking etcd's --data-dir/--listen-*/--advertise-*/--initial-* flags and
# serving /health), and the same load then runs, right after svcplane's, against that
# kube-apiserver on a fresh etcd of its own:
#   KUBE_APISERVER=/path/kube-apiserver ETCD=/path/etcd bench/service-creates.sh 10000 32
# CLIENT_FLAGS passes flags to the writers, e.g. CLIENT_FLAGS=--protobuf.
# SVCPLANE=FILE measures that svcplane binary instead of one built from this tree (to compare a
# change with a binary built before it).
# HEAP_PROFILE=FILE saves svcplane's heap profile (after a GC) once the writers are done:
#   go tool pprof -sample_index=inuse_space -top FILE
# SVCPLANE_FLAGS adds flags to `svcplane server`, e.g. SVCPLANE_FLAGS=--dns=false to leave out the
# DNS server.
# kube-apiserver runs as a bare control plane would: AlwaysAllow, a token file, a service-account
# key, its default admission plugins, no controllers. Nothing listens beyond 127.0.0.1.
#
# Per process: VmHWM (peak RSS), RSS at the end split into anonymous memory (Go heap, stacks) and
# file pages (mostly the binary's own text mapped from the page cache, and etcd's mmapped db), and
# CPU seconds used since start (start-up included); then the peak of the processes' summed RSS,
# sampled every 0.2 s. svcplane is one
# process that includes its etcd and built-in controllers; upstream is kube-apiserver plus its
# etcd (its controllers would run in kube-controller-manager, which is not started).
set -euo pipefail
cd "$(dirname "$0")/.."
services=${1:-10000}
writers=${2:-32}
work=$(mktemp -d /tmp/svcp-bench-XXXXXX)
pids=()
# stop PID: SIGTERM, then SIGKILL after 10 s (kube-apiserver's graceful shutdown hangs on an
# etcd that is already gone).
stop() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local i
  for (( i = ${#pids[@]} - 1; i >= 0; i-- )); do stop "${pids[i]}"; done
  rm -rf "$work"
}
trap cleanup EXIT

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$2/status"; }
# cpu PID: user+system CPU seconds the process has used; on a shared machine this is steadier
# than the rate, which falls with the load other work puts on the cores.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat"; }
mib() { echo $(( ($1 + 512) / 1024 )); }

# sample_rss OUT PID...: until killed, keeps in OUT the highest sum of the processes' VmRSS (kB).
sample_rss() {
  local out=$1 peak=0 sum p
  shift
  while :; do
    sum=0
    for p in "$@"; do sum=$(( sum + $(kb VmRSS "$p" 2>/dev/null || echo 0) )); done
    if (( sum > peak )); then peak=$sum; echo "$peak" >"$out"; fi
    sleep 0.2
  done
}

# load NAME KUBECONFIG PID...: runs the writers and prints one result line for NAME.
load() {
  local name=$1 kubeconfig=$2 sampler result p line
  shift 2
  sync
  sample_rss "$work/$name.peak" "$@" &
  sampler=$!
  # shellcheck disable=SC2086 # CLIENT_FLAGS (e.g. --protobuf) is a list of flags
  result=$("$work/servicecreates" --kubeconfig "$kubeconfig" --services "$services" --writers "$writers" ${CLIENT_FLAGS:-})
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  line="$name: $result"
  for p in "$@"; do
    line+=" | $(cat "/proc/$p/comm") peak $(mib "$(kb VmHWM "$p")") MiB end $(mib "$(kb VmRSS "$p")") MiB (anon $(mib "$(kb RssAnon "$p")"), file $(mib "$(kb RssFile "$p")")) cpu $(cpu "$p") s"
  done
  echo "$line | summed peak $(mib "$(cat "$work/$name.peak")") MiB"
}

wait_for() { # wait_for WHAT COMMAND...: up to 60 s
  local what=$1
  shift
  for _ in $(seq 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$what did not come up" >&2
  return 1
}

if [[ -n ${SVCPLANE:-} ]]; then cp "$SVCPLANE" "$work/svcplane"; else go build -o "$work/svcplane" ./cmd/svcplane; fi
go build -o "$work/servicecreates" ./bench/servicecreates
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# svcplane: one process, its etcd embedded.
port=$(freeport)
# Its DNS server on a loopback port: the default :53 would listen on every address (or, without
# root, not run at all and leave its memory out of the figure).
# shellcheck disable=SC2086 # SVCPLANE_FLAGS is a list of flags
"$work/svcplane" server --data-dir "$work/svcplane-data" --bind-address 127.0.0.1 --secure-port "$port" \
  --dns-listen "127.0.0.1:$(freeport)" ${SVCPLANE_FLAGS:-} >"$work/svcplane.log" 2>&1 &
svcplane=$!
pids+=("$svcplane")
wait_for "svcplane server" grep -q "svcplane server is serving" "$work/svcplane.log" || { tail -20 "$work/svcplane.log"; exit 1; }
sleep 1 # let the post-start hooks (allocator sync, kubernetes Service) finish
load svcplane "$work/svcplane-data/admin.kubeconfig" "$svcplane"
if [[ -n ${HEAP_PROFILE:-} ]]; then
  token=$(awk '$1 == "token:" {print $2}' "$work/svcplane-data/admin.kubeconfig")
  curl -sfk -H "Authorization: Bearer $token" -o "$HEAP_PROFILE" "https://127.0.0.1:$port/debug/pprof/heap?gc=1" ||
    echo "saving the heap profile failed" >&2
fi
stop "$svcplane"

[[ -n ${KUBE_APISERVER:-} ]] || exit 0
[[ -x ${ETCD:-} ]] || { echo "KUBE_APISERVER is set: ETCD must name an etcd binary for it" >&2; exit 1; }
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
peer=$work/peer
mkdir -p "$peer"
etcd_port=$(freeport) etcd_peer_port=$(freeport) port=$(freeport)
"$ETCD" --data-dir "$peer/etcd" --name default --log-level error \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "default=http://127.0.0.1:$etcd_peer_port" >"$peer/etcd.log" 2>&1 &
etcd=$!
pids+=("$etcd")
wait_for etcd curl -sf "http://127.0.0.1:$etcd_port/health" || { tail -20 "$peer/etcd.log"; exit 1; }

openssl genrsa -out "$peer/sa.key" 2048 2>/dev/null
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
echo "$token,admin,admin,system:masters" >"$peer/tokens.csv"
# --endpoint-reconciler-type=none: a loopback advertise address may not be published in the
# kubernetes Service's Endpoints (svcplane skips it for the same reason).
"$KUBE_APISERVER" --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" --cert-dir "$peer/certs" \
  --token-auth-file "$peer/tokens.csv" --authorization-mode AlwaysAllow \
  --service-account-key-file "$peer/sa.key" --service-account-signing-key-file "$peer/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range 10.96.0.0/12 --endpoint-reconciler-type none >"$peer/apiserver.log" 2>&1 &
apiserver=$!
pids+=("$apiserver")
wait_for kube-apiserver curl -sfk -H "Authorization: Bearer $token" "https://127.0.0.1:$port/readyz" || { tail -20 "$peer/apiserver.log"; exit 1; }
cat >"$peer/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: peer, cluster: {server: "https://127.0.0.1:$port", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: "$token"}}]
contexts: [{name: peer, context: {cluster: peer, user: admin}}]
current-context: peer
EOF
sleep 1
load kube-apiserver "$peer/kubeconfig" "$apiserver" "$etcd"
stop "$apiserver"
stop "$etcd"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
