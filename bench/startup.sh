#!/usr/bin/env bash
# Start-up time (process start → /readyz answering "ok") on a fresh data dir, and idle RSS after
# the server has settled. Usage: bench/startup.sh [runs] [idle-seconds]
# Prints one line per run and the median; the server binds 127.0.0.1 only.
set -euo pipefail
runs=${1:-5}
idle=${2:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(mktemp -d)/svcplane
(cd "$root" && go build -o "$bin" ./cmd/svcplane)

port=$((20000 + RANDOM % 20000))
times=()
for i in $(seq "$runs"); do
  dir=$(mktemp -d /tmp/svcp-bench-XXXX)
  start=$(date +%s.%N)
  "$bin" server --data-dir "$dir" --bind-address 127.0.0.1 --secure-port "$port" >"$dir/log" 2>&1 &
  pid=$!
  until curl -sk --max-time 1 "https://127.0.0.1:$port/readyz" 2>/dev/null | grep -qx ok; do sleep 0.01; done
  end=$(date +%s.%N)
  t=$(echo "$end - $start" | bc)
  times+=("$t")
  echo "run $i: ready in ${t}s"
  if [ "$i" = "$runs" ]; then
    sleep "$idle"
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    echo "idle RSS after ${idle}s: $((rss / 1024)) MiB"
  fi
  kill "$pid"; wait "$pid" || true
  rm -rf "$dir"
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print "median start-up: " a[int((NR+1)/2)] "s"}'
