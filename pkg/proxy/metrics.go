package proxy

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the proxy's Prometheus metrics, registered on their own registry so that
// several proxies (tests, the all-in-one server) never collide. Names follow kube-proxy's so
// existing dashboards work.
type Metrics struct {
	Registry *prometheus.Registry
	// SyncDuration is how long one sync of the backend took, labelled full or partial.
	SyncDuration *prometheus.HistogramVec
	// NetworkProgrammingLatency is from an endpoint change (the EndpointSlice's
	// last-change-trigger-time, written by the endpoint controllers) to the rules that carry it
	// being in the kernel; changes without a trigger time are not observed (see Tracker).
	NetworkProgrammingLatency prometheus.Histogram
	SyncFailures              prometheus.Counter
	LastSyncTimestamp         prometheus.Gauge
}

// programmingLatencyBuckets resolve the range that matters, tens of milliseconds to a few
// seconds, finely enough to tell a p99 under 1 s from one over it, and include kube-proxy's
// bounds up to 5 s (0.25, 0.5, 1, 2, 3, 4, 5) so the two histograms compare bucket for bucket.
var programmingLatencyBuckets = []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25,
	0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.25, 1.5, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 60, 120, 300}

// NewMetrics returns the metrics of a proxy in the given mode ("nftables", "userspace").
func NewMetrics(mode string) *Metrics {
	labels := prometheus.Labels{"mode": mode}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		SyncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kubeproxy_sync_proxy_rules_duration_seconds", Help: "Duration of one sync of the proxy's rules.",
			ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"kind"}),
		NetworkProgrammingLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kubeproxy_network_programming_duration_seconds", Help: "From an endpoint change (its EndpointSlice's last-change-trigger-time) to the proxy's rules carrying it.",
			ConstLabels: labels, Buckets: programmingLatencyBuckets,
		}),
		SyncFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubeproxy_sync_proxy_rules_failures_total", Help: "Syncs that failed and forced a full resync.", ConstLabels: labels,
		}),
		LastSyncTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeproxy_sync_proxy_rules_last_timestamp_seconds", Help: "When the last successful sync finished.", ConstLabels: labels,
		}),
	}
	m.Registry.MustRegister(m.SyncDuration, m.NetworkProgrammingLatency, m.SyncFailures, m.LastSyncTimestamp)
	return m
}

// ObserveSync records a successful sync that started at start and carried the changes made
// at changeTimes.
func (m *Metrics) ObserveSync(full bool, start time.Time, changeTimes []time.Time) {
	now := time.Now()
	kind := "partial"
	if full {
		kind = "full"
	}
	m.SyncDuration.WithLabelValues(kind).Observe(now.Sub(start).Seconds())
	for _, t := range changeTimes {
		m.NetworkProgrammingLatency.Observe(now.Sub(t).Seconds())
	}
	m.LastSyncTimestamp.Set(float64(now.UnixNano()) / 1e9)
}

// Health tracks whether the sync loop keeps up: a change queued and not synced within
// Timeout (kube-proxy: twice the resync period) makes /healthz fail, so a node's proxy stuck on
// a failing kernel is visible to whoever watches it.
type Health struct {
	Timeout time.Duration

	mu         sync.Mutex
	queuedAt   time.Time // first change not yet synced; zero when none is waiting
	lastSynced time.Time
}

// Queued records that a change is waiting for a sync.
func (h *Health) Queued() {
	h.mu.Lock()
	if h.queuedAt.IsZero() {
		h.queuedAt = time.Now()
	}
	h.mu.Unlock()
}

// Synced records a successful sync that started at start: changes queued before it are in.
func (h *Health) Synced(start time.Time) {
	h.mu.Lock()
	if !h.queuedAt.IsZero() && !h.queuedAt.After(start) {
		h.queuedAt = time.Time{}
	}
	h.lastSynced = time.Now()
	h.mu.Unlock()
}

// Check returns nil while healthy.
func (h *Health) Check() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lastSynced.IsZero() && h.queuedAt.IsZero() {
		return nil // starting: nothing asked of us yet
	}
	if !h.queuedAt.IsZero() && time.Since(h.queuedAt) > h.Timeout {
		return fmt.Errorf("changes waiting %s for a sync (last successful sync %s)",
			time.Since(h.queuedAt).Round(time.Millisecond), h.lastSynced.Format(time.RFC3339))
	}
	return nil
}

// Handler serves /healthz (200 or 503 with the reason) and /metrics.
func (m *Metrics) Handler(h *Health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := h.Check(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}
