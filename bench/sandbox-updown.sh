#!/usr/bin/env bash
# Times `svcplane sandbox up --nodes N` (until the API answers through the forwarded port, which
# is when up returns) and `svcplane sandbox down`, RUNS times, and prints each run and the
# medians. Needs root. Usage: bench/sandbox-updown.sh [RUNS] [NODES]
set -euo pipefail
runs=${1:-7}
nodes=${2:-3}
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/svcplane
go build -o "$bin" ./cmd/svcplane
name="bench-$$"
trap '"$bin" sandbox down --name "$name" >/dev/null 2>&1 || true; rm -rf "$(dirname "$bin")"' EXIT

now() { date +%s.%N; }
ups=() downs=()
for i in $(seq "$runs"); do
	t0=$(now)
	kubeconfig=$("$bin" sandbox up --name "$name" --nodes "$nodes" | tail -n1 | sed 's/^export KUBECONFIG=//')
	t1=$(now)
	kubectl --kubeconfig "$kubeconfig" get ns default -o name >/dev/null
	t2=$(now)
	"$bin" sandbox down --name "$name" >/dev/null
	t3=$(now)
	up=$(echo "$t1 - $t0" | bc) first=$(echo "$t2 - $t1" | bc) down=$(echo "$t3 - $t2" | bc)
	printf 'run %d: up %.3fs (then first kubectl %.3fs), down %.3fs\n' "$i" "$up" "$first" "$down"
	ups+=("$up") downs+=("$down")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf 'median over %d runs, %d nodes: up %.3fs, down %.3fs (%d cores)\n' "$runs" "$nodes" "$(median "${ups[@]}")" "$(median "${downs[@]}")" "$(nproc)"
