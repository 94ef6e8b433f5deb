package server

import (
	"os"
	"runtime/debug"

	"k8s.io/apiserver/pkg/features"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
)

// The memory defaults of `svcplane server`. Each was measured with bench/service-creates.sh
// (10k Services + 10k EndpointSlices from 32 writers); docs/benchmarks.md has the figures.

// gcPercent is the GOGC the server runs with unless the environment sets one. Almost all of the
// live heap is long-lived (watch caches, the built-in controllers' informers, the embedded
// etcd), so Go's default of 100 lets the heap grow to twice that before a collection, and the
// process's anonymous memory follows the heap goal, live × (1 + GOGC/100). At 10k Services 50
// took the peak RSS from ~620 to ~445 MiB for about a fifth more CPU per object; 25 then took it
// from ~345 to ~295 MiB (live heap ~170 MB) for another 15–30% of CPU per object (32–37 s →
// 41–50 s for the 20k objects, figures in docs/benchmarks.md). A deliberate trade: the rate
// stays several times upstream's, at a quarter of its CPU, and memory is the tighter bar.
// GOGC=100 in the environment restores Go's default.
const gcPercent = 25

func applyMemoryDefaults() error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	// ListFromCacheSnapshot (beta, on by default since Kubernetes 1.34) makes every watch cache
	// clone its B-tree after each event and keep the clones for the event window, so that LISTs
	// at an older resourceVersion (paginated ones) are answered from memory. During a burst of
	// creates those clones held ~100 MiB at 10k Services and cost a copy on every write; without
	// them such LISTs are read from etcd, as before 1.34, with the same result.
	//
	// SizeBasedListCostEstimate (beta, on by default since 1.34) keeps the size of every stored
	// object in a map per resource, for API Priority and Fairness to weigh LISTs by size. svcplane
	// runs no priority and fairness filter, so nothing reads it: ~6 MB at 10k Services.
	return utilfeature.DefaultMutableFeatureGate.SetFromMap(map[string]bool{
		string(features.ListFromCacheSnapshot):     false,
		string(features.SizeBasedListCostEstimate): false,
	})
}
