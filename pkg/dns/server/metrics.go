package server

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// The metrics live in component-base's legacy registry, which the API server already serves on
// /metrics; `svcplane dns` serves the same registry on its health address.
var (
	requests = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "svcplane",
		Subsystem:      "dns",
		Name:           "requests_total",
		Help:           "DNS queries answered, by query type, response code and source (cluster, forward, cache).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"type", "rcode", "source"})
	latency = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "svcplane",
		Subsystem: "dns",
		Name:      "request_duration_seconds",
		Help:      "Time from reading a query to writing its reply, by source (cluster, forward, cache).",
		// 25 µs to ~6.5 s: cluster answers take microseconds, forwarded ones milliseconds.
		Buckets:        metrics.ExponentialBuckets(0.000025, 4, 10),
		StabilityLevel: metrics.ALPHA,
	}, []string{"source"})
	cacheLookups = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "svcplane",
		Subsystem:      "dns",
		Name:           "forward_cache_lookups_total",
		Help:           "Lookups in the cache of forwarded answers, by result (hit, miss).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	cacheEntries = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace:      "svcplane",
		Subsystem:      "dns",
		Name:           "forward_cache_entries",
		Help:           "Answers held in the cache of forwarded answers.",
		StabilityLevel: metrics.ALPHA,
	})
	registerOnce sync.Once
)

func registerMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(requests, latency, cacheLookups, cacheEntries)
	})
}
