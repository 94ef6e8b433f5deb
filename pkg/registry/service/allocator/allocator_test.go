package allocator

// Ranges used here: 10.0.0.0/24, /26, /29 and 10.96.0.0/12 (IPv4), fd00:10::/108 (IPv6), node
// ports 30000-32767 and 30000-30009. Every test runs against a real embedded etcd.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcplane/svcplane/pkg/etcd"
)

// startEtcd runs an embedded etcd for one test and returns a client of it.
func startEtcd(t testing.TB) *clientv3.Client {
	t.Helper()
	// Not t.TempDir: the unix socket path must stay short.
	dir, err := os.MkdirTemp("", "alloc-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	server, err := etcd.Start(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{server.Endpoint}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		cancel()
		server.Close()
		os.RemoveAll(dir)
	})
	return client
}

func newSet(t testing.TB, client *clientv3.Client, cidrs ...string) *Set {
	t.Helper()
	var prefixes []netip.Prefix
	for _, c := range cidrs {
		prefixes = append(prefixes, netip.MustParsePrefix(c))
	}
	s, err := NewSet(client, "/registry", prefixes, PortRangeSpec{Base: 30000, Size: 2768})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func owner(i int) Owner {
	return Owner{Namespace: "default", Name: fmt.Sprintf("svc-%d", i), UID: types.UID(fmt.Sprintf("uid-%d", i))}
}

func TestBitmapMatchesModel(t *testing.T) {
	for _, size := range []int{1, 63, 64, 65, 4095, 4096, 4097, 300000} {
		b := newBitmap(size)
		model := make([]bool, size)
		r := rand.New(rand.NewPCG(1, uint64(size)))
		for step := 0; step < 20000; step++ {
			i := r.IntN(size)
			if r.IntN(3) == 0 {
				if got := b.clear(i); got != model[i] {
					t.Fatalf("size %d: clear(%d) = %v, model says taken=%v", size, i, got, model[i])
				}
				model[i] = false
			} else {
				if got := b.set(i); got == model[i] {
					t.Fatalf("size %d: set(%d) = %v, model says taken=%v", size, i, got, model[i])
				}
				model[i] = true
			}
			lo, hi := r.IntN(size), r.IntN(size+1)
			if lo > hi {
				lo, hi = hi, lo
			}
			start := lo + r.IntN(max(1, hi-lo))
			got := b.freeIn(lo, hi, start)
			want := -1
			for k := 0; k < hi-lo && want < 0; k++ {
				j := start + k
				if j >= hi {
					j = lo + (j - hi)
				}
				if !model[j] {
					want = j
				}
			}
			if got != want {
				t.Fatalf("size %d: freeIn(%d, %d, %d) = %d, want %d", size, lo, hi, start, got, want)
			}
		}
	}
}

func TestBitmapFull(t *testing.T) {
	b := newBitmap(1000)
	for i := 0; i < 1000; i++ {
		b.set(i)
	}
	if got := b.freeIn(0, 1000, 500); got != -1 || b.used != 1000 {
		t.Fatalf("full bitmap: freeIn = %d, used = %d", got, b.used)
	}
	b.clear(999)
	if got := b.freeIn(0, 1000, 0); got != 999 {
		t.Fatalf("after clearing 999: freeIn = %d", got)
	}
}

func TestRequestedIP(t *testing.T) {
	ctx := context.Background()
	s := newSet(t, startEtcd(t), "10.0.0.0/24")
	r := s.IPs["IPv4"]
	cases := []struct {
		ip   string
		want string
	}{
		{"10.0.0.10", ""},
		{"10.0.0.10", "provided IP is already allocated"},
		{"10.0.0.1", ""},
		{"10.0.0.254", ""},
		// The network and broadcast addresses are never handed out, as upstream.
		{"10.0.0.0", "the provided IP (10.0.0.0) is not in the valid range. The range of valid IPs is 10.0.0.0/24"},
		{"10.0.0.255", "the provided IP (10.0.0.255) is not in the valid range. The range of valid IPs is 10.0.0.0/24"},
		{"10.0.1.1", "the provided IP (10.0.1.1) is not in the valid range. The range of valid IPs is 10.0.0.0/24"},
	}
	for i, c := range cases {
		err := r.Allocate(ctx, netip.MustParseAddr(c.ip), owner(i), false)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("Allocate(%s) = %q, want %q", c.ip, got, c.want)
		}
	}
	if r.Used() != 3 {
		t.Errorf("Used = %d, want 3", r.Used())
	}
}

func TestDynamicIPsPreferTheUpperBand(t *testing.T) {
	ctx := context.Background()
	s := newSet(t, startEtcd(t), "10.0.0.0/24")
	r := s.IPs["IPv4"]
	// A /24 reserves its first 16 usable addresses for static requests (upstream's
	// min(max(16, 256/16), 256)); dynamic allocation uses them only when the rest is gone.
	holders := map[netip.Addr]Owner{}
	for i := 0; i < 254; i++ {
		a, err := r.AllocateNext(ctx, owner(i), false)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if _, dup := holders[a]; dup {
			t.Fatalf("allocation %d: %s handed out twice", i, a)
		}
		holders[a] = owner(i)
		lowBand := a.As4()[3] <= 16
		if i < 254-16 && lowBand {
			t.Fatalf("allocation %d took %s from the static band while the upper band had room", i, a)
		}
		if i >= 254-16 && !lowBand {
			t.Fatalf("allocation %d took %s, want the static band", i, a)
		}
	}
	if _, err := r.AllocateNext(ctx, owner(999), false); !errors.Is(err, ErrFull) {
		t.Fatalf("AllocateNext on a full range = %v, want %v", err, ErrFull)
	}
	// A released address is handed out again.
	released := netip.MustParseAddr("10.0.0.100")
	if err := r.Release(ctx, released, holders[released]); err != nil {
		t.Fatal(err)
	}
	a, err := r.AllocateNext(ctx, owner(1000), false)
	if err != nil || a != released {
		t.Fatalf("after release: AllocateNext = %s, %v; want %s", a, err, released)
	}
}

func TestReleaseOnlyFreesTheOwnersIP(t *testing.T) {
	ctx := context.Background()
	s := newSet(t, startEtcd(t), "10.0.0.0/29")
	r := s.IPs["IPv4"]
	a := netip.MustParseAddr("10.0.0.3")
	if err := r.Allocate(ctx, a, owner(1), false); err != nil {
		t.Fatal(err)
	}
	if err := r.Release(ctx, a, owner(2)); err != nil {
		t.Fatal(err)
	}
	if err := r.Allocate(ctx, a, owner(3), false); !errors.Is(err, ErrIPAllocated) {
		t.Fatalf("after a release by a non-owner, Allocate = %v, want %v", err, ErrIPAllocated)
	}
	if err := r.Release(ctx, a, owner(1)); err != nil {
		t.Fatal(err)
	}
	if err := r.Allocate(ctx, a, owner(3), false); err != nil {
		t.Fatalf("after the owner's release, Allocate = %v", err)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	ctx := context.Background()
	client := startEtcd(t)
	s := newSet(t, client, "10.0.0.0/29")
	r := s.IPs["IPv4"]
	if err := r.Allocate(ctx, netip.MustParseAddr("10.0.0.2"), owner(1), true); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AllocateNext(ctx, owner(2), true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ports.AllocateNext(ctx, owner(2), true); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(ctx, "/registry/svcplane/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("dry runs wrote %d keys (%v)", resp.Count, err)
	}
	if err := r.Allocate(ctx, netip.MustParseAddr("10.0.0.2"), owner(1), false); err != nil {
		t.Fatal(err)
	}
	if err := r.Allocate(ctx, netip.MustParseAddr("10.0.0.2"), owner(3), true); !errors.Is(err, ErrIPAllocated) {
		t.Fatalf("dry run of a taken IP = %v, want %v", err, ErrIPAllocated)
	}
}

func TestTwoServersNeverShareAnIP(t *testing.T) {
	ctx := context.Background()
	client := startEtcd(t)
	// Two Sets on one etcd are two API servers; each has its own index and its own watch.
	servers := []*Set{newSet(t, client, "10.0.0.0/26"), newSet(t, client, "10.0.0.0/26")}
	var mu sync.Mutex
	got := map[netip.Addr]int{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := servers[w%2].IPs["IPv4"]
			for i := 0; ; i++ {
				a, err := r.AllocateNext(ctx, owner(w*1000+i), false)
				if errors.Is(err, ErrFull) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got[a]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(got) != 62 {
		t.Errorf("handed out %d distinct IPs, want all 62 of the /26", len(got))
	}
	for a, n := range got {
		if n != 1 {
			t.Errorf("%s handed out %d times", a, n)
		}
	}
}

func TestAllocationsSurviveARestart(t *testing.T) {
	ctx := context.Background()
	client := startEtcd(t)
	first := newSet(t, client, "10.96.0.0/12", "fd00:10::/108")
	a, err := first.IPs["IPv4"].AllocateNext(ctx, owner(1), false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := first.IPs["IPv6"].AllocateNext(ctx, owner(1), false)
	if err != nil {
		t.Fatal(err)
	}
	port, err := first.Ports.AllocateNext(ctx, owner(1), false)
	if err != nil {
		t.Fatal(err)
	}
	second := newSet(t, client, "10.96.0.0/12", "fd00:10::/108")
	if n := second.IPs["IPv4"].Used() + second.IPs["IPv6"].Used() + second.Ports.Used(); n != 3 {
		t.Errorf("a new server sees %d allocations, want 3", n)
	}
	if err := second.IPs["IPv4"].Allocate(ctx, a, owner(2), false); !errors.Is(err, ErrIPAllocated) {
		t.Errorf("Allocate(%s) after restart = %v, want %v", a, err, ErrIPAllocated)
	}
	if err := second.IPs["IPv6"].Allocate(ctx, b, owner(2), false); !errors.Is(err, ErrIPAllocated) {
		t.Errorf("Allocate(%s) after restart = %v, want %v", b, err, ErrIPAllocated)
	}
	if err := second.Ports.Allocate(ctx, port, owner(2), false); !errors.Is(err, ErrPortAllocated) {
		t.Errorf("Allocate(%d) after restart = %v, want %v", port, err, ErrPortAllocated)
	}
}

func TestWatchKeepsAnotherServersIndexCurrent(t *testing.T) {
	ctx := context.Background()
	client := startEtcd(t)
	one, two := newSet(t, client, "10.0.0.0/29"), newSet(t, client, "10.0.0.0/29")
	a := netip.MustParseAddr("10.0.0.5")
	if err := one.IPs["IPv4"].Allocate(ctx, a, owner(1), false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return two.IPs["IPv4"].Used() == 1 })
	if err := one.IPs["IPv4"].Release(ctx, a, owner(1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return two.IPs["IPv4"].Used() == 0 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNodePorts(t *testing.T) {
	ctx := context.Background()
	s := newSet(t, startEtcd(t), "10.0.0.0/24")
	p := s.Ports
	if err := p.Allocate(ctx, 30080, owner(1), false); err != nil {
		t.Fatal(err)
	}
	if err := p.Allocate(ctx, 30080, owner(2), false); err == nil || err.Error() != "provided port is already allocated" {
		t.Errorf("second Allocate(30080) = %v", err)
	}
	want := "provided port is not in the valid range. The range of valid ports is 30000-32767"
	for _, port := range []int{29999, 32768, 80} {
		if err := p.Allocate(ctx, port, owner(3), false); err == nil || err.Error() != want {
			t.Errorf("Allocate(%d) = %v, want %q", port, err, want)
		}
	}
	// Dynamic ports avoid upstream's static band: min(max(16, 2768/32), 128) = 86 ports.
	for i := 0; i < 200; i++ {
		port, err := p.AllocateNext(ctx, owner(10+i), false)
		if err != nil {
			t.Fatal(err)
		}
		if port < 30086 || port > 32767 {
			t.Fatalf("AllocateNext = %d, outside the dynamic band 30086-32767", port)
		}
	}
}

func TestSmallPortRangeFillsCompletely(t *testing.T) {
	ctx := context.Background()
	s := newSet(t, startEtcd(t), "10.0.0.0/24")
	p := NewPortRange(s.client, "/registry/small-ports/", PortRangeSpec{Base: 30000, Size: 10})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go p.Run(runCtx)
	seen := map[int]bool{}
	for i := 0; i < 10; i++ {
		port, err := p.AllocateNext(ctx, owner(i), false)
		if err != nil || seen[port] {
			t.Fatalf("allocation %d: %d, %v", i, port, err)
		}
		seen[port] = true
	}
	if _, err := p.AllocateNext(ctx, owner(11), false); !errors.Is(err, ErrFull) {
		t.Fatalf("11th port of 10: %v", err)
	}
}

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string]string{"30000-32767": "30000-32767", "30000+10": "30000-30009", "8080": "8080-8080"} {
		r, err := ParsePortRange(in)
		if err != nil || r.String() != want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %s", in, r, err, want)
		}
	}
	for _, in := range []string{"", "a-b", "0-10", "100-50", "30000-70000"} {
		if _, err := ParsePortRange(in); err == nil {
			t.Errorf("ParsePortRange(%q) accepted", in)
		}
	}
}

func TestIPRangeBounds(t *testing.T) {
	for _, c := range []struct {
		cidr        string
		first, last string
		band        int
	}{
		{"10.96.0.0/12", "10.96.0.1", "10.111.255.254", 256},
		{"10.0.0.0/28", "10.0.0.1", "10.0.0.14", 0},
		{"10.0.0.0/27", "10.0.0.1", "10.0.0.30", 16},
		{"fd00:10::/108", "fd00:10::1", "fd00:10::f:ffff", 256},
		{"fd00::/64", "fd00::1", "fd00::ffff:ffff:ffff:ffff", 256},
	} {
		r, err := NewIPRange(nil, "/x/", netip.MustParsePrefix(c.cidr))
		if err != nil {
			t.Fatal(err)
		}
		if r.first.String() != c.first || r.last.String() != c.last || r.pool.staticBand != c.band {
			t.Errorf("%s: first %s last %s band %d; want %s %s %d", c.cidr, r.first, r.last, r.pool.staticBand, c.first, c.last, c.band)
		}
	}
	if _, err := NewIPRange(nil, "/x/", netip.MustParsePrefix("fd00::/48")); err == nil {
		t.Error("an IPv6 range shorter than /64 was accepted")
	}
}
