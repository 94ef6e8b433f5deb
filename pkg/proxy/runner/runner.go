// Package runner is the bounded-frequency sync runner of a proxy: Run asks for a sync, and the
// loop calls the sync function at most once per MinInterval (bursts of informer events merge
// into one sync), at least once per MaxInterval (a periodic full resync repairs anything that
// changed the kernel behind our back), and again after MinInterval when a sync fails.
package runner

import (
	"context"
	"time"
)

// Runner calls Sync from one goroutine (Loop).
type Runner struct {
	// Sync does the work; full is true for the periodic resync and after a failure.
	Sync        func(full bool) error
	MinInterval time.Duration
	MaxInterval time.Duration

	kick chan struct{}
}

// New returns a runner; call Loop in a goroutine and Run whenever something changed.
func New(sync func(full bool) error, minInterval, maxInterval time.Duration) *Runner {
	return &Runner{Sync: sync, MinInterval: minInterval, MaxInterval: maxInterval, kick: make(chan struct{}, 1)}
}

// Run requests a sync; it never blocks, and requests made before the sync starts merge.
func (r *Runner) Run() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Loop runs syncs until ctx ends.
func (r *Runner) Loop(ctx context.Context) {
	var last time.Time
	full := true
	resync := time.NewTimer(r.MaxInterval)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-resync.C:
			full = true
		}
		if wait := r.MinInterval - time.Since(last); wait > 0 && !last.IsZero() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		// Requests that arrived while we waited are part of this sync.
		select {
		case <-r.kick:
		default:
		}
		last = time.Now()
		err := r.Sync(full)
		full = err != nil
		if err != nil {
			// Retry as a full sync after MinInterval (at least a short pause, so a
			// persistently failing kernel does not spin a core).
			go func() {
				time.Sleep(max(r.MinInterval, 100*time.Millisecond))
				r.Run()
			}()
		}
		if !resync.Stop() {
			select {
			case <-resync.C:
			default:
			}
		}
		resync.Reset(r.MaxInterval)
	}
}
