package schedule

import (
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Target is a backend as the proxy configures it.
type Target struct {
	Addr   netip.AddrPort
	Weight int
}

// Pool is the scheduling state of one Service port: its backends, its scheduler and its
// ClientIP affinity table. It is safe for concurrent use.
type Pool struct {
	mu        sync.Mutex
	scheduler Scheduler
	backends  []*Backend
	byAddr    map[netip.AddrPort]*Backend

	// affinity is the Service's sessionAffinityConfig.clientIP.timeoutSeconds; 0 disables.
	// Like upstream's proxies, the timeout runs from a client's latest connection.
	affinity  time.Duration
	sticky    map[netip.Addr]stickyEntry
	lastSweep time.Time
	now       func() time.Time
}

type stickyEntry struct {
	backend  *Backend
	lastUsed time.Time
}

// NewPool returns an empty pool choosing with s and, if affinity > 0, keeping each client IP
// on its backend until it has made no new connection for affinity.
func NewPool(s Scheduler, affinity time.Duration) *Pool {
	return &Pool{scheduler: s, affinity: affinity, byAddr: map[netip.AddrPort]*Backend{}, now: time.Now}
}

// Update replaces the backends. A backend whose address stays keeps its *Backend, and so its
// connection counts and affinity entries; removed backends are returned so the caller can
// close their connections if the Service asks for it. Targets keep their order, which is the
// order schedulers walk.
func (p *Pool) Update(targets []Target) (removed []*Backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := make(map[netip.AddrPort]*Backend, len(targets))
	backends := make([]*Backend, 0, len(targets))
	for _, t := range targets {
		if _, dup := next[t.Addr]; dup {
			continue
		}
		b := p.byAddr[t.Addr]
		if b == nil {
			b = &Backend{Addr: t.Addr}
		}
		b.weight = t.Weight
		next[t.Addr] = b
		backends = append(backends, b)
	}
	for addr, b := range p.byAddr {
		if next[addr] == nil {
			b.removed.Store(true)
			removed = append(removed, b)
		}
	}
	if len(removed) > 0 {
		for ip, e := range p.sticky {
			if next[e.backend.Addr] != e.backend {
				delete(p.sticky, ip)
			}
		}
	}
	p.backends, p.byAddr = backends, next
	p.scheduler.Update(backends)
	return removed
}

// SetScheduler switches the scheduling algorithm, keeping backends and affinity.
func (p *Pool) SetScheduler(s Scheduler) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.scheduler = s
	s.Update(p.backends)
}

// SetAffinity changes the ClientIP affinity timeout; 0 turns affinity off and forgets clients.
func (p *Pool) SetAffinity(timeout time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.affinity = timeout
	if timeout == 0 {
		p.sticky = nil
	}
}

// Backends returns the current backends in order.
func (p *Pool) Backends() []*Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.backends)
}

// Select returns the backend for a new connection, or nil when no backend is usable. With
// affinity, a client that connected within the timeout gets its previous backend while that
// backend is usable; otherwise the scheduler decides and the client is pinned to its choice.
func (p *Pool) Select(c Conn) *Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.affinity <= 0 {
		return p.scheduler.Select(c)
	}
	now := p.now()
	p.sweep(now)
	client := c.Client.Addr()
	if e, ok := p.sticky[client]; ok && now.Sub(e.lastUsed) < p.affinity && c.usable(e.backend) {
		p.sticky[client] = stickyEntry{backend: e.backend, lastUsed: now}
		return e.backend
	}
	b := p.scheduler.Select(c)
	if b == nil {
		delete(p.sticky, client)
		return nil
	}
	if p.sticky == nil {
		p.sticky = map[netip.Addr]stickyEntry{}
	}
	p.sticky[client] = stickyEntry{backend: b, lastUsed: now}
	return b
}

// sweep drops expired affinity entries at most once per timeout, so the table holds only
// clients seen within the last two timeouts.
func (p *Pool) sweep(now time.Time) {
	if now.Sub(p.lastSweep) < p.affinity {
		return
	}
	p.lastSweep = now
	for ip, e := range p.sticky {
		if now.Sub(e.lastUsed) >= p.affinity {
			delete(p.sticky, ip)
		}
	}
}
