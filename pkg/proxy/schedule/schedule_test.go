package schedule

// Addresses used here: backends 10.244.0.1-4:80 (A, B, C, D), clients in 10.244.1.0/24 and
// 10.244.2.0/24, Service IPs in 10.96.0.0/12. Expected choices are worked out by hand from
// the IPVS definitions named on each test.

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var names = []string{"A", "B", "C", "D"}

// backends returns A, B, C, ... with the given weights.
func backends(weights ...int) []*Backend {
	var bs []*Backend
	for i, w := range weights {
		bs = append(bs, NewBackend(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, 0, byte(i + 1)}), 80), w))
	}
	return bs
}

func nameOf(b *Backend) string {
	if b == nil {
		return "-"
	}
	return names[b.Addr.Addr().As4()[3]-1]
}

func newScheduler(t *testing.T, name string, opts Options, bs []*Backend) Scheduler {
	t.Helper()
	s, err := New(name, opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Update(bs)
	return s
}

// sequence makes n choices; with hold, each chosen backend gains an active connection that
// stays open, which is how the connection-counting schedulers see a burst of connections.
func sequence(s Scheduler, c Conn, n int, hold bool) string {
	var got []string
	for range n {
		b := s.Select(c)
		if hold && b != nil {
			b.AddActive(1)
		}
		got = append(got, nameOf(b))
	}
	return strings.Join(got, " ")
}

func skip(bs ...*Backend) func(*Backend) bool {
	return func(b *Backend) bool {
		for _, s := range bs {
			if s == b {
				return true
			}
		}
		return false
	}
}

func conn(client string) Conn {
	return Conn{Client: netip.MustParseAddrPort(client), Dest: netip.MustParseAddrPort("10.96.0.1:80")}
}

func TestRoundRobinTakesTheNextUsableBackendAfterTheLastChosen(t *testing.T) {
	bs := backends(1, 0, 3, 1) // B is quiesced; weights otherwise do not matter to rr
	s := newScheduler(t, "rr", Options{}, bs)
	if got, want := sequence(s, Conn{}, 6, false), "A C D A C D"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if got, want := sequence(s, Conn{Skip: skip(bs[2])}, 3, false), "A D A"; got != want {
		t.Errorf("skipping C: got %s, want %s", got, want)
	}
	// Removing a backend other than the last chosen keeps the place in the list.
	s.Update([]*Backend{bs[0], bs[1], bs[3]})
	if got, want := sequence(s, Conn{}, 3, false), "D A D"; got != want {
		t.Errorf("after removing C: got %s, want %s", got, want)
	}
	if got := s.Select(Conn{Skip: skip(bs[0], bs[3])}); got != nil {
		t.Errorf("all skipped: got %s, want none", nameOf(got))
	}
}

func TestWeightedRoundRobinStepsTheThresholdDownByTheGCD(t *testing.T) {
	cases := []struct {
		weights []int
		want    string
	}{
		// cw runs 4,3,2,1: A alone at 4, then A B at 3, A B C at 2 and 1.
		{[]int{4, 3, 2}, "A A B A B C A B C A A B"},
		// gcd 2: mw = 4-(2-1) = 3, cw runs 3,1: A, then A B.
		{[]int{4, 2}, "A A B A A B"},
		// Equal weights are plain round robin.
		{[]int{1, 1, 1}, "A B C A B C"},
		// Weight 0 never passes a threshold.
		{[]int{2, 0, 1}, "A A C A A C"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.weights), func(t *testing.T) {
			s := newScheduler(t, "wrr", Options{}, backends(tc.weights...))
			if got := sequence(s, Conn{}, len(strings.Fields(tc.want)), false); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestWeightedRoundRobinGivesUpAfterOneFullPass(t *testing.T) {
	bs := backends(3, 1)
	s := newScheduler(t, "wrr", Options{}, bs)
	s.Select(Conn{}) // A at cw 3
	if got := s.Select(Conn{Skip: skip(bs...)}); got != nil {
		t.Fatalf("every backend skipped: got %s, want none", nameOf(got))
	}
	if got := s.Select(Conn{Skip: skip(bs[0])}); nameOf(got) != "B" {
		t.Errorf("A skipped: got %s, want B", nameOf(got))
	}
	if got := newScheduler(t, "wrr", Options{}, backends(0, 0)).Select(Conn{}); got != nil {
		t.Errorf("all weights 0: got %s, want none", nameOf(got))
	}
}

func TestLeastConnectionWeighsActiveConnections256TimesInactive(t *testing.T) {
	bs := backends(1, 1, 1, 0)
	s := newScheduler(t, "lc", Options{}, bs)
	// Ties go to the first in list order; each choice stays open.
	if got, want := sequence(s, Conn{}, 5, true), "A B C A B"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	// Overheads now A 512, B 512, C 256: C; then 255 inactive on C still beat one active.
	if got := nameOf(s.Select(Conn{})); got != "C" {
		t.Errorf("got %s, want C", got)
	}
	bs[2].AddInactive(255) // C: 256+255 = 511 < 512
	if got := nameOf(s.Select(Conn{})); got != "C" {
		t.Errorf("C at 511: got %s, want C", got)
	}
	bs[2].AddInactive(1) // C: 512, a tie with A: A is first
	if got := nameOf(s.Select(Conn{})); got != "A" {
		t.Errorf("tie at 512: got %s, want A", got)
	}
	// Weights other than 0 do not matter: D (weight 0, no connections) is never chosen.
	if got := nameOf(s.Select(Conn{Skip: skip(bs[0], bs[1], bs[2])})); got != "-" {
		t.Errorf("only D left: got %s, want none", got)
	}
}

func TestWeightedLeastConnectionDividesOverheadByWeight(t *testing.T) {
	// A weight 1, B weight 2: B takes two connections for every one of A.
	s := newScheduler(t, "wlc", Options{}, backends(1, 2))
	if got, want := sequence(s, Conn{}, 6, true), "A B B A B B"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestShortestExpectedDelayCountsTheNewConnection(t *testing.T) {
	// (active+1)/weight: A 1/1 vs B 1/2 → B; 1/1 vs 2/2 → A (tie goes first); 2/1 vs 2/2 → B;
	// 2/1 vs 3/2 → B; 2/1 vs 4/2 → A.
	s := newScheduler(t, "sed", Options{}, backends(1, 2))
	if got, want := sequence(s, Conn{}, 5, true), "B A B B A"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestNeverQueueSendsToAnIdleBackendFirst(t *testing.T) {
	// Idle backends first in list order (A, then B), then as sed.
	s := newScheduler(t, "nq", Options{}, backends(1, 2))
	if got, want := sequence(s, Conn{}, 5, true), "A B B B A"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	// An idle backend wins even against a far better ratio.
	bs := backends(100, 1)
	bs[0].AddActive(1)
	if got := nameOf(newScheduler(t, "nq", Options{}, bs).Select(Conn{})); got != "B" {
		t.Errorf("got %s, want the idle B", got)
	}
}

func TestDestinationHashingPinsAServiceIPToOneBackend(t *testing.T) {
	bs := backends(1, 5, 1) // weights are ignored by dh
	s := newScheduler(t, "dh", Options{}, bs)
	// Bucket = low byte of ip*2654435761; bucket i holds backend i mod 3.
	for _, tc := range []struct{ dest, want string }{
		{"10.96.0.1:80", "A"}, // bucket 177
		{"10.96.0.2:80", "C"}, // bucket 98
		{"10.96.0.3:53", "B"}, // bucket 19
	} {
		c := Conn{Client: netip.MustParseAddrPort("10.244.1.5:40000"), Dest: netip.MustParseAddrPort(tc.dest)}
		if got := sequence(s, c, 3, false); got != strings.Repeat(tc.want+" ", 3)[:5] {
			t.Errorf("%s: got %s, want %s each time", tc.dest, got, tc.want)
		}
	}
	c := Conn{Dest: netip.MustParseAddrPort("10.96.0.1:80"), Skip: skip(bs[0])}
	if got := s.Select(c); got != nil {
		t.Errorf("hashed backend skipped: got %s, want none", nameOf(got))
	}
}

func TestSourceHashing(t *testing.T) {
	// Bucket = top byte of (ip [+ port]) * 0x61C88647 (the kernel's hash_32).
	t.Run("equal weights", func(t *testing.T) {
		s := newScheduler(t, "sh", Options{}, backends(1, 1, 1))
		for client, want := range map[string]string{
			"10.244.1.5:1000": "B", // bucket 115
			"10.244.1.6:1000": "C", // bucket 212
			"10.244.2.7:1000": "A", // bucket 255
		} {
			if got := sequence(s, conn(client), 2, false); got != want+" "+want {
				t.Errorf("%s: got %s, want %s twice", client, got, want)
			}
		}
	})
	t.Run("weights fill consecutive buckets", func(t *testing.T) {
		// Weights 2,1 fill buckets A A B A A B ...
		s := newScheduler(t, "sh", Options{}, backends(2, 1))
		if got := nameOf(s.Select(conn("10.244.1.5:1"))); got != "A" { // bucket 115 = 3*38+1
			t.Errorf("got %s, want A", got)
		}
		if got := nameOf(s.Select(conn("10.244.1.6:1"))); got != "B" { // bucket 212 = 3*70+2
			t.Errorf("got %s, want B", got)
		}
	})
	t.Run("sh-port", func(t *testing.T) {
		s := newScheduler(t, "sh", Options{SourcePort: true}, backends(1, 1, 1))
		if got := nameOf(s.Select(conn("10.244.1.6:1000"))); got != "A" { // bucket 204
			t.Errorf("got %s, want A", got)
		}
	})
	t.Run("sh-fallback", func(t *testing.T) {
		bs := backends(1, 1, 1)
		c := conn("10.244.1.6:1000") // bucket 212: C
		c.Skip = skip(bs[2])
		if got := newScheduler(t, "sh", Options{}, bs).Select(c); got != nil {
			t.Errorf("without fallback: got %s, want none", nameOf(got))
		}
		// The walk starts at (212+212) mod 256 = 168: A.
		if got := nameOf(newScheduler(t, "sh", Options{Fallback: true}, bs).Select(c)); got != "A" {
			t.Errorf("with fallback: got %s, want A", got)
		}
	})
}

func TestRandomIsProportionalToWeight(t *testing.T) {
	bs := backends(1, 3, 0)
	s := newScheduler(t, "random", Options{Rand: rand.New(rand.NewPCG(1, 2))}, bs)
	counts := map[string]int{}
	for range 4000 {
		counts[nameOf(s.Select(Conn{}))]++
	}
	if counts["C"] != 0 || counts["A"] < 850 || counts["A"] > 1150 || counts["B"] < 2850 {
		t.Errorf("got %v, want about A 1000, B 3000, C 0", counts)
	}
	if got := s.Select(Conn{Skip: skip(bs[0], bs[1])}); got != nil {
		t.Errorf("all usable skipped: got %s", nameOf(got))
	}
}

func TestEverySchedulerHandlesAnEmptyPool(t *testing.T) {
	for _, name := range Names() {
		s := newScheduler(t, name, Options{}, nil)
		if got := s.Select(conn("10.244.1.5:1")); got != nil {
			t.Errorf("%s: got %s from no backends", name, nameOf(got))
		}
	}
	if _, err := New("maglev", Options{}); err == nil || !strings.Contains(err.Error(), "rr, sed, sh, wlc, wrr") {
		t.Errorf("unknown name: got %v, want an error listing the names", err)
	}
}

func TestPoolAffinityOverridesTheSchedulerUntilTheTimeout(t *testing.T) {
	s, _ := New("rr", Options{})
	p := NewPool(s, 10*time.Second)
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	p.Update([]Target{{Addr: backends(1)[0].Addr, Weight: 1}, {Addr: backends(1, 1)[1].Addr, Weight: 1}})
	pick := func(client string) string { return nameOf(p.Select(conn(client))) }

	if got := pick("10.244.1.5:1"); got != "A" {
		t.Fatalf("first client: got %s, want A", got)
	}
	if got := pick("10.244.1.6:1"); got != "B" {
		t.Fatalf("second client: got %s, want B", got)
	}
	// The same client IP on any port sticks, and each connection restarts its timeout.
	for range 3 {
		now = now.Add(9 * time.Second)
		if got := pick("10.244.1.5:2"); got != "A" {
			t.Fatalf("sticky client: got %s, want A", got)
		}
	}
	// A skipped sticky backend is replaced, and the client sticks to the replacement.
	c := conn("10.244.1.5:3")
	c.Skip = func(b *Backend) bool { return nameOf(b) == "A" }
	if got := nameOf(p.Select(c)); got != "B" {
		t.Fatalf("sticky backend skipped: got %s, want B", got)
	}
	if got := pick("10.244.1.5:4"); got != "B" {
		t.Fatalf("after failover: got %s, want B", got)
	}
	// After the timeout the scheduler decides again (rr's next after B is A).
	now = now.Add(10 * time.Second)
	if got := pick("10.244.1.5:5"); got != "A" {
		t.Errorf("after timeout: got %s, want A", got)
	}
}

func TestPoolUpdateKeepsCountsAndReportsRemovedBackends(t *testing.T) {
	s, _ := New("lc", Options{})
	p := NewPool(s, time.Minute)
	a, b := netip.MustParseAddrPort("10.244.0.1:80"), netip.MustParseAddrPort("10.244.0.2:80")
	p.Update([]Target{{a, 1}, {b, 1}})
	first := p.Select(conn("10.244.1.5:1"))
	first.AddActive(1)
	removed := p.Update([]Target{{a, 1}, {b, 2}, {netip.MustParseAddrPort("10.244.0.3:80"), 1}})
	if len(removed) != 0 || p.Backends()[0] != first || first.Active() != 1 || p.Backends()[1].Weight() != 2 {
		t.Fatalf("update lost state: removed %v, backends %v", removed, p.Backends())
	}
	removed = p.Update([]Target{{b, 1}})
	if len(removed) != 2 {
		t.Fatalf("removed %d backends, want 2", len(removed))
	}
	for _, r := range removed {
		if !r.Removed() {
			t.Errorf("removed backend %s does not say so", r.Addr)
		}
	}
	// The sticky entry pointed at a removed backend, so the client is scheduled afresh.
	if got := p.Select(conn("10.244.1.5:2")); got == nil || got.Addr != b || got.Removed() {
		t.Errorf("got %v, want %s", got, b)
	}
	// An address that comes back is a new backend, not the removed one revived.
	p.Update([]Target{{a, 1}, {b, 1}})
	if back := p.Backends()[0]; back == first || back.Removed() {
		t.Errorf("returning address %s reuses the removed backend", a)
	}
}
