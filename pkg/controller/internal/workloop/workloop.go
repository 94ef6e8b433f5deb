// Package workloop is the plumbing the endpoint controllers share: a keyed, rate-limited work
// queue drained by a few workers, a debouncer that folds a burst of events for one key into one
// sync, and the sync-duration metric every such controller reports on the server's /metrics.
package workloop

import (
	"context"
	"math"
	"sync"
	"time"

	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

var (
	syncDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace:      "svcplane",
		Subsystem:      "controller",
		Name:           "sync_duration_seconds",
		Help:           "Time one sync of one key took, by controller and result (success or error).",
		Buckets:        metrics.ExponentialBuckets(0.0005, 2, 16),
		StabilityLevel: metrics.ALPHA,
	}, []string{"controller", "result"})
	registerOnce sync.Once
)

// RegisterMetrics registers the shared metrics with the legacy registry the API server serves.
func RegisterMetrics() {
	registerOnce.Do(func() { legacyregistry.MustRegister(syncDuration) })
}

// Loop drains a queue of keys with a sync function.
type Loop struct {
	// Name labels the queue's and the sync's metrics and the log lines.
	Name string
	// Workers is how many keys are synced at once; one key is never synced twice at once.
	Workers int
	Queue   workqueue.TypedRateLimitingInterface[string]
	// Sync brings one key to its desired state; an error retries the key with back-off.
	Sync func(ctx context.Context, key string) error
	// MaxRetries drops a key after this many failures in a row (it comes back on the next
	// event or resync); 0 retries forever.
	MaxRetries int
}

// NewQueue returns the queue a Loop drains: per-key exponential back-off from 5 ms to 100 s,
// no overall rate limit (the API server's own fairness protects it; a global bucket would only
// delay unrelated Services behind one failing one).
func NewQueue(name string) workqueue.TypedRateLimitingInterface[string] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Millisecond, 100*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: name})
}

// Run runs the workers until ctx ends, then shuts the queue down.
func (l *Loop) Run(ctx context.Context) {
	defer utilruntime.HandleCrash()
	defer l.Queue.ShutDown()
	for range max(l.Workers, 1) {
		go wait.UntilWithContext(ctx, l.work, time.Second)
	}
	<-ctx.Done()
}

func (l *Loop) work(ctx context.Context) {
	for l.next(ctx) {
	}
}

func (l *Loop) next(ctx context.Context) bool {
	key, quit := l.Queue.Get()
	if quit {
		return false
	}
	defer l.Queue.Done(key)
	start := time.Now()
	err := l.Sync(ctx, key)
	result := "success"
	if err != nil {
		result = "error"
	}
	syncDuration.WithLabelValues(l.Name, result).Observe(time.Since(start).Seconds())
	switch {
	case err == nil:
		l.Queue.Forget(key)
	case l.MaxRetries > 0 && l.Queue.NumRequeues(key) >= l.MaxRetries:
		klog.ErrorS(err, "Sync failed too often; dropping the key until it changes again", "controller", l.Name, "key", key)
		l.Queue.Forget(key)
	default:
		klog.V(2).InfoS("Sync failed; retrying with back-off", "controller", l.Name, "key", key, "err", err)
		l.Queue.AddRateLimited(key)
	}
	return true
}

// Debouncer hands a key to the queue once its events have paused, or at the latest MaxDelay
// after the first of them. The pause it waits for depends on how busy the controller is: Quiet
// while events trickle in, BusyQuiet once more than BusyRate events a second arrive. A lone change
// (one Pod's readiness flip) then reaches the queue after only Quiet, while a Service whose Pods
// are created and become ready in a storm of API calls is written once with the final state
// instead of once per Pod. That trade is upstream's --endpoint-updates-batch-period, applied only
// when there is something to batch.
type Debouncer struct {
	Quiet     time.Duration
	BusyQuiet time.Duration
	BusyRate  float64
	MaxDelay  time.Duration
	Queue     workqueue.TypedInterface[string]
	// Clock is the real clock when nil; tests give a fake one to step.
	Clock clock.WithDelayedExecution

	mu        sync.Mutex
	pending   map[string]*burst
	recent    float64 // events in about the last second, decaying
	lastEvent time.Time
}

type burst struct {
	first, quietAt time.Time
}

// rateWindow is the time constant of the event-rate estimate.
const rateWindow = time.Second

// Add records an event for key.
func (d *Debouncer) Add(key string) {
	if d.Quiet <= 0 && d.BusyQuiet <= 0 {
		d.Queue.Add(key)
		return
	}
	now := d.clock().Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.recent = d.recent*math.Exp(-now.Sub(d.lastEvent).Seconds()/rateWindow.Seconds()) + 1
	d.lastEvent = now
	quiet := d.Quiet
	if d.BusyQuiet > quiet && d.recent > d.BusyRate {
		quiet = d.BusyQuiet
	}
	if d.pending == nil {
		d.pending = map[string]*burst{}
	}
	if b := d.pending[key]; b != nil {
		if q := now.Add(quiet); q.After(b.quietAt) {
			b.quietAt = q
		}
		return
	}
	d.pending[key] = &burst{first: now, quietAt: now.Add(quiet)}
	d.clock().AfterFunc(quiet, func() { d.fire(key) })
}

func (d *Debouncer) clock() clock.WithDelayedExecution {
	if d.Clock == nil {
		return clock.RealClock{}
	}
	return d.Clock
}

func (d *Debouncer) fire(key string) {
	d.mu.Lock()
	b := d.pending[key]
	if b == nil {
		d.mu.Unlock()
		return
	}
	now := d.clock().Now()
	wake := b.quietAt
	if deadline := b.first.Add(d.MaxDelay); deadline.Before(wake) {
		wake = deadline
	}
	if now.Before(wake) {
		d.mu.Unlock()
		d.clock().AfterFunc(wake.Sub(now), func() { d.fire(key) })
		return
	}
	delete(d.pending, key)
	d.mu.Unlock()
	d.Queue.Add(key)
}
