package schedule

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// Scheduler picks the backend of a new connection. Like an IPVS scheduler it may keep state
// between choices (a position in the list, a hash table) that Update recomputes when the list
// of backends changes. A Scheduler is not safe for concurrent use; Pool serialises calls.
type Scheduler interface {
	// Update gives the scheduler the current backends, in a stable order, after any were
	// added, removed or reweighted.
	Update(backends []*Backend)
	// Select returns the backend for c, or nil when none is usable.
	Select(c Conn) *Backend
}

// Options tune a scheduler the way ipvsadm's scheduler flags do.
type Options struct {
	// SourcePort makes sh hash the client's port too (IPVS's sh-port), spreading one client's
	// connections over backends.
	SourcePort bool
	// Fallback makes sh pick another backend when the hashed one is unusable (IPVS's
	// sh-fallback) instead of refusing the connection.
	Fallback bool
	// Rand is the random source of the random scheduler; nil means a fresh seeded one.
	Rand *rand.Rand
}

// DefaultName is the scheduler used when none is configured: round robin, the behaviour of
// upstream's userspace and IPVS proxy modes.
const DefaultName = "rr"

var constructors = map[string]func(Options) Scheduler{
	"rr":     func(Options) Scheduler { return &roundRobin{} },
	"wrr":    func(Options) Scheduler { return &weightedRoundRobin{} },
	"lc":     func(Options) Scheduler { return &leastConnection{} },
	"wlc":    func(Options) Scheduler { return &weightedLeastConnection{} },
	"sed":    func(Options) Scheduler { return &shortestExpectedDelay{} },
	"nq":     func(Options) Scheduler { return &neverQueue{} },
	"dh":     func(Options) Scheduler { return &destinationHashing{} },
	"sh":     func(o Options) Scheduler { return &sourceHashing{port: o.SourcePort, fallback: o.Fallback} },
	"random": newRandom,
}

// Names lists the scheduler names New accepts, sorted.
func Names() []string {
	names := make([]string, 0, len(constructors))
	for n := range constructors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New returns the scheduler called name ("" means DefaultName).
func New(name string, opts Options) (Scheduler, error) {
	if name == "" {
		name = DefaultName
	}
	ctor, ok := constructors[name]
	if !ok {
		return nil, fmt.Errorf("unknown scheduler %q: use one of %s", name, strings.Join(Names(), ", "))
	}
	return ctor(opts), nil
}

// roundRobin is ip_vs_rr: the next usable backend after the one chosen last.
type roundRobin struct {
	backends []*Backend
	last     *Backend
}

func (s *roundRobin) Update(backends []*Backend) {
	s.backends = backends
	// IPVS keeps its place when other destinations come and go; when the last one chosen
	// goes, it steps back to its predecessor. Our list is rebuilt, so keep the place only if
	// the backend survived and otherwise start over from the head.
	if s.last != nil && !slices.Contains(backends, s.last) {
		s.last = nil
	}
}

func (s *roundRobin) Select(c Conn) *Backend {
	n := len(s.backends)
	start := 0
	if s.last != nil {
		start = slices.Index(s.backends, s.last) + 1
	}
	for i := range n {
		b := s.backends[(start+i)%n]
		if c.usable(b) {
			s.last = b
			return b
		}
	}
	return nil
}

// weightedRoundRobin is ip_vs_wrr: passes over the list with a falling weight threshold cw,
// starting at the largest weight and stepping down by the weights' gcd, so a backend of
// weight w is chosen w/gcd times per cycle and heavier ones come first.
type weightedRoundRobin struct {
	backends []*Backend
	position int // index of the backend chosen last; -1 is the list head
	cw       int // current weight threshold
	mw       int // threshold a cycle starts with
	di       int // step: gcd of the positive weights
}

func (s *weightedRoundRobin) Update(backends []*Backend) {
	s.backends = backends
	s.position = -1
	s.di = 0
	maxWeight := 0
	for _, b := range backends {
		if b.weight > 0 {
			s.di = gcd(s.di, b.weight)
		}
		maxWeight = max(maxWeight, b.weight)
	}
	if s.di == 0 {
		s.di = 1
	}
	// IPVS lowers the start by di-1 so that cw stays a multiple of di plus one and a pass
	// at cw <= di tests every backend against weight >= 1.
	s.mw = maxWeight - (s.di - 1)
	// A running cycle continues at the nearest equivalent threshold, as in
	// ip_vs_wrr_dest_changed.
	if s.cw > s.mw || s.cw == 0 {
		s.cw = s.mw
	} else if s.di > 1 {
		s.cw = s.cw/s.di*s.di + 1
	}
}

func (s *weightedRoundRobin) Select(c Conn) *Backend {
	if s.mw <= 0 {
		return nil
	}
	n := len(s.backends)
	// The kernel stops after one full pass at the lowest threshold; with every backend
	// skipped that bounds the loop at one cycle of thresholds plus one pass.
	startedAtHead := s.position == -1
	lastPass, restarted := false, false
	stop := -2
	pos := s.position
	for {
		for pos+1 < n {
			pos++
			b := s.backends[pos]
			if !c.skips(b) && b.weight >= s.cw {
				s.position = pos
				return b
			}
			if pos == stop {
				return nil
			}
		}
		pos = -1
		s.cw -= s.di
		if s.cw <= 0 {
			s.cw = s.mw
			if lastPass || startedAtHead {
				return nil
			}
			restarted = true
		}
		lastPass = s.cw <= s.di
		if lastPass && restarted && !startedAtHead {
			stop = s.position
		}
	}
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// list is the state of the schedulers that look at every backend anew for each choice.
type list struct{ backends []*Backend }

func (l *list) Update(backends []*Backend) { l.backends = backends }

// leastConnection is ip_vs_lc: the lowest connection overhead, the first such in list order
// on a tie; weights only matter in that 0 excludes.
type leastConnection struct{ list }

func (s *leastConnection) Select(c Conn) *Backend {
	var least *Backend
	var leastOverhead int64
	for _, b := range s.backends {
		if !c.usable(b) {
			continue
		}
		if o := b.connOverhead(); least == nil || o < leastOverhead {
			least, leastOverhead = b, o
		}
	}
	return least
}

// weightedLeastConnection is ip_vs_wlc: the lowest overhead per unit of weight, compared by
// cross-multiplication so no division rounds.
type weightedLeastConnection struct{ list }

func (s *weightedLeastConnection) Select(c Conn) *Backend {
	return leastRatio(c, s.backends, (*Backend).connOverhead, false)
}

// shortestExpectedDelay is ip_vs_sed: the lowest (active+1)/weight, the delay a new
// connection would expect if each backend served its active connections in turn.
type shortestExpectedDelay struct{ list }

func (s *shortestExpectedDelay) Select(c Conn) *Backend {
	return leastRatio(c, s.backends, (*Backend).queueOverhead, false)
}

// neverQueue is ip_vs_nq: an idle backend (no active connections) at once, else as sed.
type neverQueue struct{ list }

func (s *neverQueue) Select(c Conn) *Backend {
	return leastRatio(c, s.backends, (*Backend).queueOverhead, true)
}

// leastRatio returns the usable backend with the lowest overhead/weight, the first in list
// order on a tie. With idleFirst, the first usable backend without active connections wins.
func leastRatio(c Conn, backends []*Backend, overhead func(*Backend) int64, idleFirst bool) *Backend {
	var least *Backend
	var leastOverhead int64
	for _, b := range backends {
		if !c.usable(b) {
			continue
		}
		o := overhead(b)
		if idleFirst && b.Active() == 0 {
			return b
		}
		// o/w < lo/lw  ⇔  lo*w > o*lw for positive weights.
		if least == nil || leastOverhead*int64(b.weight) > o*int64(least.weight) {
			least, leastOverhead = b, o
		}
	}
	return least
}

// hashTableSize is the bucket count of IPVS's dh and sh tables (CONFIG_IP_VS_{DH,SH}_TAB_BITS
// defaults to 8).
const (
	hashTableBits = 8
	hashTableSize = 1 << hashTableBits
)

// foldAddr reduces an address to the 32 bits IPVS hashes: IPv4 as is, IPv6 as the XOR of its
// four words.
func foldAddr(a netip.Addr) uint32 {
	if a.Is4() || a.Is4In6() {
		v := a.Unmap().As4()
		return uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
	}
	v := a.As16()
	var fold uint32
	for i := 0; i < 16; i += 4 {
		fold ^= uint32(v[i])<<24 | uint32(v[i+1])<<16 | uint32(v[i+2])<<8 | uint32(v[i+3])
	}
	return fold
}

// destinationHashing is ip_vs_dh: a static 256-bucket table filled with the backends in turn
// (weights ignored), indexed by a multiplicative hash of the destination IP. An unusable
// bucket means no backend: dh exists to pin a destination to one server (cache clusters).
type destinationHashing struct {
	buckets [hashTableSize]*Backend
}

func (s *destinationHashing) Update(backends []*Backend) {
	for i := range s.buckets {
		s.buckets[i] = nil
		if len(backends) > 0 {
			s.buckets[i] = backends[i%len(backends)]
		}
	}
}

func (s *destinationHashing) Select(c Conn) *Backend {
	// Knuth's multiplicative constant 2654435761; IPVS keeps the low byte of the product.
	b := s.buckets[(foldAddr(c.Dest.Addr())*2654435761)&(hashTableSize-1)]
	if b == nil || !c.usable(b) {
		return nil
	}
	return b
}

// sourceHashing is ip_vs_sh: a 256-bucket table in which each backend fills as many
// consecutive buckets as its weight (at least one), indexed by the kernel's hash_32 of the
// client IP (plus the client port with sh-port).
type sourceHashing struct {
	port, fallback bool
	buckets        [hashTableSize]*Backend
}

func (s *sourceHashing) Update(backends []*Backend) {
	next, filled := 0, 0
	for i := range s.buckets {
		s.buckets[i] = nil
		if len(backends) == 0 {
			continue
		}
		b := backends[next]
		s.buckets[i] = b
		// A weight of 0 still takes one bucket, as in ip_vs_sh_reassign; Select then
		// finds it unusable.
		if filled++; filled >= b.weight {
			next, filled = (next+1)%len(backends), 0
		}
	}
}

// hash32 is the kernel's hash_32: multiply by the 32-bit golden ratio and keep the top bits.
func hash32(v uint32) uint32 { return v * 0x61C88647 >> (32 - hashTableBits) }

func (s *sourceHashing) Select(c Conn) *Backend {
	key := foldAddr(c.Client.Addr())
	if s.port {
		key += uint32(c.Client.Port())
	}
	first := hash32(key) & (hashTableSize - 1)
	b := s.buckets[first]
	if b == nil {
		return nil
	}
	if c.usable(b) {
		return b
	}
	if !s.fallback {
		return nil
	}
	// ip_vs_sh_get_fallback walks the table from the original bucket; its offset is added
	// to the hash again, so the walk starts 2*first (mod 256) — kept for identical choices.
	for offset := range uint32(hashTableSize) {
		b := s.buckets[(first+(offset+first)%hashTableSize)&(hashTableSize-1)]
		if b != nil && c.usable(b) {
			return b
		}
	}
	return nil
}

// random picks a usable backend with probability proportional to its weight; with equal
// weights it is the uniform choice of the nftables proxy mode. It has no IPVS counterpart.
type random struct {
	backends []*Backend
	rng      *rand.Rand
}

func newRandom(o Options) Scheduler {
	rng := o.Rand
	if rng == nil {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &random{rng: rng}
}

func (s *random) Update(backends []*Backend) { s.backends = backends }

func (s *random) Select(c Conn) *Backend {
	total := 0
	for _, b := range s.backends {
		if c.usable(b) {
			total += b.weight
		}
	}
	if total == 0 {
		return nil
	}
	n := s.rng.IntN(total)
	for _, b := range s.backends {
		if !c.usable(b) {
			continue
		}
		if n -= b.weight; n < 0 {
			return b
		}
	}
	return nil
}
