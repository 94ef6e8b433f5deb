package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Upper bounds on how long forwarded answers are cached, whatever their TTLs say, so that a
// record changed upstream is seen within the hour (CoreDNS's cache plugin uses the same caps).
const (
	maxPositiveTTL = 3600 * time.Second
	maxNegativeTTL = 1800 * time.Second
	cacheCapacity  = 10000
)

// forwarder sends questions outside the cluster zone to the upstream resolvers in order, and
// caches their answers for their TTL.
type forwarder struct {
	upstreams []string
	// timeout bounds one whole forward, all upstreams included, so an unreachable upstream
	// costs the client one SERVFAIL within this time rather than its own retries.
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client
	cache   *answerCache
}

func newForwarder(upstreams []string, timeout time.Duration) *forwarder {
	return &forwarder{
		upstreams: upstreams,
		timeout:   timeout,
		udp:       &dns.Client{Net: "udp", Timeout: timeout, UDPSize: dns.DefaultMsgSize},
		tcp:       &dns.Client{Net: "tcp", Timeout: timeout},
		cache:     newAnswerCache(cacheCapacity),
	}
}

var errNoUpstream = errors.New("no upstream resolver configured")

// forward returns the upstream's reply to req (with req's ID) and whether it came from the cache.
func (f *forwarder) forward(ctx context.Context, req *dns.Msg) (*dns.Msg, bool, error) {
	key := cacheKeyOf(req)
	if m := f.cache.get(key, time.Now()); m != nil {
		m.Id = req.Id
		cacheLookups.WithLabelValues("hit").Inc()
		return m, true, nil
	}
	cacheLookups.WithLabelValues("miss").Inc()
	if len(f.upstreams) == 0 {
		return nil, false, errNoUpstream
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	out := req.Copy()
	out.Id = dns.Id()
	var errs []error
	for _, upstream := range f.upstreams {
		reply, err := f.exchange(ctx, out, upstream)
		if err != nil {
			errs = append(errs, fmt.Errorf("forwarding to %s: %w", upstream, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if reply.Rcode == dns.RcodeServerFailure || reply.Rcode == dns.RcodeRefused {
			errs = append(errs, fmt.Errorf("forwarding to %s: %s", upstream, dns.RcodeToString[reply.Rcode]))
			continue
		}
		f.cache.put(key, reply, time.Now())
		reply.Id = req.Id
		return reply, false, nil
	}
	return nil, false, errors.Join(errs...)
}

func (f *forwarder) exchange(ctx context.Context, m *dns.Msg, upstream string) (*dns.Msg, error) {
	reply, _, err := f.udp.ExchangeContext(ctx, m, upstream)
	if err == nil && reply.Truncated {
		reply, _, err = f.tcp.ExchangeContext(ctx, m, upstream)
	}
	if err != nil {
		return nil, err
	}
	if reply.Id != m.Id {
		return nil, errors.New("reply ID does not match the query")
	}
	return reply, nil
}

type cacheKey struct {
	name   string
	qtype  uint16
	qclass uint16
	do     bool
	cd     bool
}

func cacheKeyOf(req *dns.Msg) cacheKey {
	q := req.Question[0]
	k := cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass, cd: req.CheckingDisabled}
	if opt := req.IsEdns0(); opt != nil {
		k.do = opt.Do()
	}
	return k
}

type cacheEntry struct {
	msg     *dns.Msg
	stored  time.Time
	expires time.Time
}

// answerCache holds forwarded replies. When full it drops an arbitrary entry: Go's map order is
// random, which is as good as LRU for a resolver cache at a fraction of the bookkeeping.
type answerCache struct {
	mu       sync.Mutex
	entries  map[cacheKey]cacheEntry
	capacity int
}

func newAnswerCache(capacity int) *answerCache {
	return &answerCache{entries: map[cacheKey]cacheEntry{}, capacity: capacity}
}

// get returns a copy of the cached reply with TTLs lowered by the time it has been held.
func (c *answerCache) get(k cacheKey, now time.Time) *dns.Msg {
	c.mu.Lock()
	e, ok := c.entries[k]
	if ok && !now.Before(e.expires) {
		delete(c.entries, k)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	m := e.msg.Copy()
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, section := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range section {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			if h := rr.Header(); h.Ttl > age {
				h.Ttl -= age
			} else {
				h.Ttl = 0
			}
		}
	}
	return m
}

func (c *answerCache) put(k cacheKey, m *dns.Msg, now time.Time) {
	ttl, ok := cacheTTL(m)
	if !ok || ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, exists := c.entries[k]; !exists && len(c.entries) >= c.capacity {
		for victim := range c.entries {
			delete(c.entries, victim)
			break
		}
	}
	c.entries[k] = cacheEntry{msg: m.Copy(), stored: now, expires: now.Add(ttl)}
	cacheEntries.Set(float64(len(c.entries)))
}

// cacheTTL is how long a reply may be kept: the smallest TTL of its answer records, or for a
// negative reply the SOA's negative TTL (RFC 2308).
func cacheTTL(m *dns.Msg) (time.Duration, bool) {
	switch {
	case m.Truncated:
		return 0, false
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
		min := uint32(0)
		for i, rr := range m.Answer {
			if t := rr.Header().Ttl; i == 0 || t < min {
				min = t
			}
		}
		return capTTL(time.Duration(min)*time.Second, maxPositiveTTL), true
	case m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError:
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				t := soa.Minttl
				if soa.Hdr.Ttl < t {
					t = soa.Hdr.Ttl
				}
				return capTTL(time.Duration(t)*time.Second, maxNegativeTTL), true
			}
		}
	}
	return 0, false
}

func capTTL(d, max time.Duration) time.Duration {
	if d > max {
		return max
	}
	return d
}
