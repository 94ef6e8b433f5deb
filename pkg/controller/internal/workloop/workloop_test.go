package workloop

import (
	"slices"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

// The debouncer's timers run on a fake clock that the tests step, so what is queued depends
// only on the events' spacing, never on how busy the machine is. A timer's callback still runs
// in its own goroutine, so a key that is due is awaited (queued) in real time.

// fakeClock runs AfterFunc callbacks in their own goroutine, as time.AfterFunc does; the fake
// clock calls them inside Step with its lock held, where the debouncer's use of the clock
// would deadlock.
type fakeClock struct{ *clocktesting.FakeClock }

func (c fakeClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	return c.FakeClock.AfterFunc(d, func() { go f() })
}

// newDebouncer fills in d's clock and queue.
func newDebouncer(d *Debouncer) (*Debouncer, *clocktesting.FakeClock, workqueue.TypedInterface[string]) {
	c := clocktesting.NewFakeClock(time.Unix(1000, 0))
	q := workqueue.NewTyped[string]()
	d.Clock, d.Queue = fakeClock{c}, q
	return d, c, q
}

// queued returns what the queue holds now, without waiting.
func queued(q workqueue.TypedInterface[string]) []string {
	var out []string
	for q.Len() > 0 {
		key, _ := q.Get()
		out = append(out, key)
		q.Done(key)
	}
	return out
}

// awaitQueued waits until key is queued and returns everything queued with it.
func awaitQueued(t *testing.T, q workqueue.TypedInterface[string], key string) []string {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if got = append(got, queued(q)...); slices.Contains(got, key) {
			return got
		}
	}
	t.Fatalf("%s never queued (queued: %v)", key, got)
	return nil
}

// settle lets timer callbacks that a step started run to their end: each one either queues
// its key or sets a new timer, so the clock has a waiter again.
func settle(c *clocktesting.FakeClock) {
	for deadline := time.Now().Add(time.Second); !c.HasWaiters() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

func TestDebouncerFoldsABurstIntoOneSync(t *testing.T) {
	d, c, q := newDebouncer(&Debouncer{Quiet: 30 * time.Millisecond, MaxDelay: time.Second})
	defer q.ShutDown()
	for range 10 {
		d.Add("ns/web")
		c.Step(10 * time.Millisecond)
	}
	settle(c)
	if got := queued(q); len(got) != 0 {
		t.Fatalf("queued %v 10ms after the last event of a burst, want nothing before 30ms of quiet", got)
	}
	c.Step(20 * time.Millisecond)
	got := awaitQueued(t, q, "ns/web")
	c.Step(time.Second)
	time.Sleep(20 * time.Millisecond)
	if got = append(got, queued(q)...); len(got) != 1 {
		t.Errorf("a burst of 10 events queued %v, want the key once", got)
	}
}

func TestDebouncerQueuesALoneChangeAfterQuiet(t *testing.T) {
	d, c, q := newDebouncer(&Debouncer{Quiet: 20 * time.Millisecond, BusyQuiet: time.Second, BusyRate: 100, MaxDelay: 2 * time.Second})
	defer q.ShutDown()
	d.Add("ns/web")
	c.Step(19 * time.Millisecond)
	if got := queued(q); len(got) != 0 {
		t.Fatalf("queued %v after 19ms, want the 20ms quiet period first", got)
	}
	c.Step(time.Millisecond)
	awaitQueued(t, q, "ns/web")
}

func TestDebouncerWaitsLongerWhileBusy(t *testing.T) {
	d, c, q := newDebouncer(&Debouncer{Quiet: 10 * time.Millisecond, BusyQuiet: 150 * time.Millisecond, BusyRate: 50, MaxDelay: 2 * time.Second})
	defer q.ShutDown()
	for i := range 100 { // a storm across many keys makes the controller busy
		d.Add(string(rune('a' + i%26)))
	}
	d.Add("ns/web")
	c.Step(149 * time.Millisecond)
	settle(c)
	if got := queued(q); slices.Contains(got, "ns/web") {
		t.Fatalf("queued ns/web after 149ms while busy, want the 150ms quiet period")
	}
	c.Step(time.Millisecond)
	awaitQueued(t, q, "ns/web")
}

func TestDebouncerNeverWaitsPastMaxDelay(t *testing.T) {
	d, c, q := newDebouncer(&Debouncer{Quiet: 50 * time.Millisecond, MaxDelay: 120 * time.Millisecond})
	defer q.ShutDown()
	// An event every 10ms never leaves 50ms of quiet; MaxDelay after the first one, the key
	// goes anyway.
	for range 11 {
		d.Add("ns/web")
		c.Step(10 * time.Millisecond)
		settle(c)
		if got := queued(q); len(got) != 0 {
			t.Fatalf("queued %v before MaxDelay (120ms)", got)
		}
	}
	d.Add("ns/web")
	c.Step(10 * time.Millisecond)
	awaitQueued(t, q, "ns/web")
}
