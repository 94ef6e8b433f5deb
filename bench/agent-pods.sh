#!/usr/bin/env bash
# Node agent figures (needs root): Pod start latency (create → Ready, one at a time) and the
# memory of N test-server Pods on one node, in a one-node sandbox.
#   bench/agent-pods.sh [sequential] [bulk]
# Memory is the PSS (proportional set size: shared binary pages split among the processes that
# map them) of the agent and every process it started.
set -euo pipefail
sequential=${1:-20}
bulk=${2:-100}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
name="agentbench$$"
go build -o "$work/svcplane" ./cmd/svcplane
go build -o "$work/agentpods" ./bench/agentpods
trap '"$work/svcplane" sandbox down --name "$name" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
kubeconfig=$("$work/svcplane" sandbox up --name "$name" --nodes 1 --agent | tail -n1 | sed 's/^export KUBECONFIG=//')
"$work/agentpods" --kubeconfig "$kubeconfig" --sequential "$sequential" --bulk "$bulk"
# The agent and everything it started (pause holders, pod-init shims, containers): the
# descendants of the process in the node namespace.
agent=$(ip netns pids "svp-$name-node1" | head -n1)
tree=$(ps -e -o pid=,ppid= | awk -v root="$agent" '
  { parent[$1] = $2 }
  END { for (p in parent) { q = p; while (q != "" && q != 0) { if (q == root) { print p; break } q = parent[q] } } }')
pss=0 rss=0 n=0
for pid in $tree; do
  p=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
  r=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  pss=$((pss + ${p:-0})) rss=$((rss + ${r:-0})) n=$((n + 1))
done
echo "node1 with $bulk pods: the agent and $((n - 1)) processes under it, PSS $((pss / 1024)) MiB in total (sum of RSS $((rss / 1024)) MiB)"
