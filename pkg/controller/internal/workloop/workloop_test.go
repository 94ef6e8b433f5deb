package workloop

import (
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// drain returns the keys queued within d, in order.
func drain(q workqueue.TypedInterface[string], d time.Duration) []string {
	var out []string
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if q.Len() == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		key, _ := q.Get()
		out = append(out, key)
		q.Done(key)
	}
	return out
}

func TestDebouncerFoldsABurstIntoOneSync(t *testing.T) {
	q := workqueue.NewTyped[string]()
	defer q.ShutDown()
	d := &Debouncer{Quiet: 30 * time.Millisecond, MaxDelay: time.Second, Queue: q}
	start := time.Now()
	for range 10 {
		d.Add("ns/web")
		time.Sleep(10 * time.Millisecond)
	}
	got := drain(q, 200*time.Millisecond)
	if len(got) != 1 {
		t.Fatalf("a burst of 10 events queued %v, want the key once", got)
	}
	if elapsed := time.Since(start); elapsed < 100*time.Millisecond {
		t.Errorf("queued after %v, before the burst was over", elapsed)
	}
}

func TestDebouncerQueuesALoneChangeAfterQuiet(t *testing.T) {
	q := workqueue.NewTyped[string]()
	defer q.ShutDown()
	d := &Debouncer{Quiet: 20 * time.Millisecond, BusyQuiet: time.Second, BusyRate: 100, MaxDelay: 2 * time.Second, Queue: q}
	start := time.Now()
	d.Add("ns/web")
	for q.Len() == 0 {
		time.Sleep(time.Millisecond)
	}
	if elapsed := time.Since(start); elapsed < 20*time.Millisecond || elapsed > 200*time.Millisecond {
		t.Errorf("a lone change was queued after %v, want about the 20ms quiet period", elapsed)
	}
}

func TestDebouncerWaitsLongerWhileBusy(t *testing.T) {
	q := workqueue.NewTyped[string]()
	defer q.ShutDown()
	d := &Debouncer{Quiet: 10 * time.Millisecond, BusyQuiet: 150 * time.Millisecond, BusyRate: 50, MaxDelay: 2 * time.Second, Queue: q}
	for i := range 100 { // a storm across many keys makes the controller busy
		d.Add(string(rune('a' + i%26)))
	}
	drain(q, 300*time.Millisecond)
	start := time.Now()
	d.Add("ns/web")
	for q.Len() == 0 {
		time.Sleep(time.Millisecond)
	}
	if elapsed := time.Since(start); elapsed < 100*time.Millisecond {
		t.Errorf("queued after %v while busy, want the longer quiet period", elapsed)
	}
}

func TestDebouncerNeverWaitsPastMaxDelay(t *testing.T) {
	q := workqueue.NewTyped[string]()
	defer q.ShutDown()
	d := &Debouncer{Quiet: 50 * time.Millisecond, MaxDelay: 120 * time.Millisecond, Queue: q}
	start := time.Now()
	var firstQueued time.Duration
	for time.Since(start) < 400*time.Millisecond {
		d.Add("ns/web")
		if firstQueued == 0 && q.Len() > 0 {
			firstQueued = time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if firstQueued == 0 || firstQueued > 250*time.Millisecond {
		t.Errorf("steady events first queued the key after %v, want about MaxDelay (120ms)", firstQueued)
	}
}
