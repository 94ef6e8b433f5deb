// Package schedule chooses the backend of a new connection the way the Linux IPVS schedulers
// do, for the userspace proxy. The proxy hands a Pool the endpoints of one Service port
// (addresses and weights) and asks it for a backend per new connection or UDP flow; the Pool
// applies ClientIP session affinity first and otherwise asks its Scheduler.
//
// Each scheduler follows the definition of its IPVS namesake in net/netfilter/ipvs (ip_vs_rr.c,
// ip_vs_wrr.c, ip_vs_lc.c, ip_vs_wlc.c, ip_vs_sed.c, ip_vs_nq.c, ip_vs_dh.c, ip_vs_sh.c), so an
// operator's expectations of `ipvsadm -s NAME` hold here, choice for choice. Where IPVS looks at
// a destination's "overloaded" flag we look at Conn.Skip: the proxy uses it to avoid backends a
// connection already failed to reach.
package schedule

import (
	"net/netip"
	"sync/atomic"
)

// Backend is one destination of a Service port with the load figures IPVS schedulers read.
// Active and inactive connections follow IPVS's meaning: a TCP connection is active while
// established, inactive while being set up or closed half-way; UDP flows are always inactive.
// The proxy moves the counters; schedulers only read them.
type Backend struct {
	Addr netip.AddrPort

	// weight is written by Pool.Update under the pool's lock and read by schedulers under
	// the same lock.
	weight   int
	active   atomic.Int32
	inactive atomic.Int32
	// removed is set once the backend has left its pool; it never comes back (an address
	// that returns gets a new Backend).
	removed atomic.Bool
}

// NewBackend returns a backend with the given weight, for tests and for callers building
// scheduler input by hand; a Pool creates its own.
func NewBackend(addr netip.AddrPort, weight int) *Backend {
	return &Backend{Addr: addr, weight: weight}
}

// Weight is the backend's relative capacity; 0 takes it out of rotation without removing it
// (IPVS's quiescing).
func (b *Backend) Weight() int { return b.weight }

// Removed reports whether the backend has left its pool. A connection that chose it just
// before may still be setting up; this lets its owner notice.
func (b *Backend) Removed() bool { return b.removed.Load() }

// Active is the number of established connections to the backend.
func (b *Backend) Active() int { return int(b.active.Load()) }

// Inactive is the number of connections being set up or torn down, and UDP flows.
func (b *Backend) Inactive() int { return int(b.inactive.Load()) }

// AddActive adjusts the active connection count by delta.
func (b *Backend) AddActive(delta int) { b.active.Add(int32(delta)) }

// AddInactive adjusts the inactive connection count by delta.
func (b *Backend) AddInactive(delta int) { b.inactive.Add(int32(delta)) }

// connOverhead is IPVS's ip_vs_dest_conn_overhead: an active connection costs 256 times an
// inactive one, because inactive entries are cheap kernel state that expires on its own.
func (b *Backend) connOverhead() int64 {
	return int64(b.active.Load())<<8 + int64(b.inactive.Load())
}

// queueOverhead is the expected delay measure of sed and nq: the active connections plus the
// new one.
func (b *Backend) queueOverhead() int64 { return int64(b.active.Load()) + 1 }

// Conn describes the connection being scheduled.
type Conn struct {
	// Client is the source address of the connection (sh hashes its IP).
	Client netip.AddrPort
	// Dest is the address the client connected to, the Service IP and port (dh hashes its IP).
	Dest netip.AddrPort
	// Skip, when set, reports backends not to choose for this connection; schedulers treat them
	// like IPVS treats a destination flagged overloaded.
	Skip func(*Backend) bool
}

func (c *Conn) skips(b *Backend) bool { return c.Skip != nil && c.Skip(b) }

// usable is IPVS's availability test shared by most schedulers: positive weight and not
// overloaded.
func (c *Conn) usable(b *Backend) bool { return b.weight > 0 && !c.skips(b) }
