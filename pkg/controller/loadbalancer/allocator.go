package loadbalancer

import (
	"cmp"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/svcplane/svcplane/pkg/api/validation"
	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
)

// pool is a LoadBalancerIPPool as the allocator uses it.
type pool struct {
	name   string
	ranges []validation.AddressRange
	// Nil selectors select everything.
	services, namespaces labels.Selector
	avoidBuggyIPs        bool
	autoAssign           bool
}

// newPool parses a stored pool. Entries that do not parse (validation refuses them, so only a
// pool stored by an older server could have one) are skipped rather than failing the whole pool.
func newPool(p *svcplanev1.LoadBalancerIPPool) (*pool, error) {
	out := &pool{name: p.Name, avoidBuggyIPs: p.Spec.AvoidBuggyIPs, autoAssign: p.Spec.AutoAssign == nil || *p.Spec.AutoAssign}
	for _, s := range p.Spec.Addresses {
		if r, err := validation.ParseAddressRange(s); err == nil {
			out.ranges = append(out.ranges, r)
		}
	}
	var err error
	if p.Spec.ServiceSelector != nil {
		if out.services, err = metav1.LabelSelectorAsSelector(p.Spec.ServiceSelector); err != nil {
			return nil, fmt.Errorf("pool %s: spec.serviceSelector: %w", p.Name, err)
		}
	}
	if p.Spec.NamespaceSelector != nil {
		if out.namespaces, err = metav1.LabelSelectorAsSelector(p.Spec.NamespaceSelector); err != nil {
			return nil, fmt.Errorf("pool %s: spec.namespaceSelector: %w", p.Name, err)
		}
	}
	return out, nil
}

func (p *pool) selects(r *request) bool {
	return (p.services == nil || p.services.Matches(r.labels)) && (p.namespaces == nil || p.namespaces.Matches(r.namespaceLabels))
}

func (p *pool) contains(ip netip.Addr) bool {
	for _, r := range p.ranges {
		if first, last, ok := r.Assignable(); ok && first.Compare(ip) <= 0 && ip.Compare(last) <= 0 {
			return !p.avoidBuggyIPs || !buggy(ip)
		}
	}
	return false
}

func (p *pool) hasFamily(family corev1.IPFamily) bool {
	for _, r := range p.ranges {
		if familyOf(r.First) == family {
			return true
		}
	}
	return false
}

// buggy reports an IPv4 address ending in .0 or .255: valid inside a larger prefix, but some
// clients and middleboxes still treat them as network or broadcast addresses.
func buggy(ip netip.Addr) bool {
	if !ip.Is4() {
		return false
	}
	last := ip.As4()[3]
	return last == 0 || last == 255
}

func familyOf(ip netip.Addr) corev1.IPFamily {
	if ip.Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// portKey is what two Services sharing an address must not both use.
type portKey struct {
	port     int32
	protocol corev1.Protocol
}

// request is what the allocator needs to know about one LoadBalancer Service.
type request struct {
	key     string // namespace/name
	created time.Time
	// sharingKey is the svcplane.io/allow-shared-ip annotation; empty means "share with no one".
	sharingKey      string
	ports           []portKey
	labels          labels.Set
	namespaceLabels labels.Set
	// families the Service has, in its spec.ipFamilies order; each gets one address.
	families []corev1.IPFamily
	// requested addresses, at most one per family (already checked by requestFor).
	requested map[corev1.IPFamily]netip.Addr
	// current addresses, from status.loadBalancer.ingress.
	current []netip.Addr
}

// older orders Services by age, then by key: when two Services' statuses claim one address
// (two controllers raced, or a status was written by hand), the older keeps it. Every
// controller comes to the same answer from the same objects.
func (r *request) older(o *holder) bool {
	if !r.created.Equal(o.created) {
		return r.created.Before(o.created)
	}
	return r.key < o.key
}

// holder is a Service holding an address.
type holder struct {
	key        string
	created    time.Time
	sharingKey string
	ports      []portKey
}

// canShare reports whether the two may use one address: both opted in with the same key, and no
// port and protocol is used by both (the proxy could not tell their traffic apart).
func canShare(r *request, h *holder) bool {
	if r.sharingKey == "" || r.sharingKey != h.sharingKey {
		return false
	}
	for _, p := range r.ports {
		if slices.Contains(h.ports, p) {
			return false
		}
	}
	return true
}

// allocator is the controller's view of which Service holds which address. It is derived only
// from Services' status (rebuilt at start, kept current by every sync), never stored elsewhere,
// so nothing can drift between it and what users see. It is not safe for concurrent use; the
// controller syncs with one worker.
type allocator struct {
	pools     []*pool // by name: the order pools are tried in
	holders   map[netip.Addr][]*holder
	byService map[string][]netip.Addr
}

func newAllocator() *allocator {
	return &allocator{holders: map[netip.Addr][]*holder{}, byService: map[string][]netip.Addr{}}
}

func (a *allocator) setPools(pools []*pool) {
	slices.SortFunc(pools, func(x, y *pool) int { return cmp.Compare(x.name, y.name) })
	a.pools = pools
}

// result is the outcome of assign for one Service.
type result struct {
	// ips are the addresses the Service should have, in its family order.
	ips []netip.Addr
	// pools name the pool of each of ips.
	pools []string
	// problems say, for each family left without an address, why; they become Events.
	problems []string
	// evicted are Services that lost an address to this one (it is older and both statuses
	// claimed it); they must be synced again.
	evicted []string
}

// assign decides the addresses of one Service and records them. Per family, in order:
// the requested address, else the one in its status, else one it already holds, else one shared
// with a Service of the same sharing key, else the first free address of the first pool (by name)
// that selects the Service and auto-assigns.
func (a *allocator) assign(r *request) result {
	var res result
	held := a.byService[r.key]
	for _, family := range r.families {
		ip, pool, problem, evicted := a.pick(r, family, held)
		res.evicted = append(res.evicted, evicted...)
		if problem != "" {
			res.problems = append(res.problems, problem)
			continue
		}
		res.ips = append(res.ips, ip)
		res.pools = append(res.pools, pool)
	}
	a.hold(r, res.ips)
	return res
}

func (a *allocator) pick(r *request, family corev1.IPFamily, held []netip.Addr) (ip netip.Addr, poolName, problem string, evicted []string) {
	if want, ok := r.requested[family]; ok {
		p := a.poolFor(r, want)
		if p == nil {
			return ip, "", fmt.Sprintf("requested IP %s is not in any LoadBalancerIPPool that selects this Service", want), nil
		}
		// The Service already holds it: keep it, settling a double claim by age.
		if slices.Contains(r.current, want) || slices.Contains(held, want) {
			if lost, by := a.losesTo(r, want); lost {
				return ip, "", fmt.Sprintf("requested IP %s is in use by %s", want, by), nil
			}
			return want, p.name, "", a.evict(r, want)
		}
		if by := a.blocker(r, want); by != "" {
			return ip, "", fmt.Sprintf("requested IP %s is already in use by %s (both Services need annotation %s with the same value and different ports to share it)",
				want, by, svcplanev1.AnnotationAllowSharedIP), nil
		}
		return want, p.name, "", nil
	}
	for _, candidates := range [][]netip.Addr{r.current, held} {
		for _, cur := range candidates {
			if familyOf(cur) != family {
				continue
			}
			p := a.poolFor(r, cur)
			if p == nil {
				continue // its pool is gone or no longer selects the Service
			}
			if lost, _ := a.losesTo(r, cur); lost {
				continue
			}
			return cur, p.name, "", a.evict(r, cur)
		}
	}

	var tried []string
	for _, p := range a.pools {
		if !p.autoAssign || !p.hasFamily(family) || !p.selects(r) {
			continue
		}
		tried = append(tried, fmt.Sprintf("%q", p.name))
		if ip, ok := a.shared(r, p, family); ok {
			return ip, p.name, "", nil
		}
		if ip, ok := a.free(p, family); ok {
			return ip, p.name, "", nil
		}
	}
	if len(tried) == 0 {
		return ip, "", fmt.Sprintf("no LoadBalancerIPPool with %s addresses selects this Service", family), nil
	}
	return ip, "", fmt.Sprintf("no available IPs in pool %s for %s", strings.Join(tried, ", "), family), nil
}

// poolFor returns the first pool holding ip that selects the Service.
func (a *allocator) poolFor(r *request, ip netip.Addr) *pool {
	for _, p := range a.pools {
		if p.contains(ip) && p.selects(r) {
			return p
		}
	}
	return nil
}

// blocker names a holder of ip, other than the Service itself, it cannot share with.
func (a *allocator) blocker(r *request, ip netip.Addr) string {
	for _, h := range a.holders[ip] {
		if h.key != r.key && !canShare(r, h) {
			return h.key
		}
	}
	return ""
}

// losesTo reports whether an older holder of ip that cannot share it keeps it.
func (a *allocator) losesTo(r *request, ip netip.Addr) (bool, string) {
	for _, h := range a.holders[ip] {
		if h.key != r.key && !canShare(r, h) && !r.older(h) {
			return true, h.key
		}
	}
	return false, ""
}

// evict takes ip from the younger holders r cannot share with.
func (a *allocator) evict(r *request, ip netip.Addr) []string {
	var evicted []string
	for _, h := range slices.Clone(a.holders[ip]) {
		if h.key != r.key && !canShare(r, h) {
			evicted = append(evicted, h.key)
			a.drop(h.key, ip)
		}
	}
	return evicted
}

// shared returns an address of p held only by Services r may share with.
func (a *allocator) shared(r *request, p *pool, family corev1.IPFamily) (netip.Addr, bool) {
	if r.sharingKey == "" {
		return netip.Addr{}, false
	}
	var candidates []netip.Addr
	for ip, hs := range a.holders {
		if familyOf(ip) != family || !p.contains(ip) {
			continue
		}
		ok := len(hs) > 0
		for _, h := range hs {
			if h.key == r.key || !canShare(r, h) {
				ok = false
			}
		}
		if ok {
			candidates = append(candidates, ip)
		}
	}
	if len(candidates) == 0 {
		return netip.Addr{}, false
	}
	return slices.MinFunc(candidates, netip.Addr.Compare), true
}

// free returns the lowest address of p nobody holds. The walk stops at the first free address,
// so it costs at most one step per held address (plus skipped .0/.255), even in an IPv6 /64.
func (a *allocator) free(p *pool, family corev1.IPFamily) (netip.Addr, bool) {
	for _, r := range p.ranges {
		if familyOf(r.First) != family {
			continue
		}
		first, last, ok := r.Assignable()
		if !ok {
			continue
		}
		for ip := first; ip.IsValid() && ip.Compare(last) <= 0; ip = ip.Next() {
			if p.avoidBuggyIPs && buggy(ip) {
				continue
			}
			if len(a.holders[ip]) == 0 {
				return ip, true
			}
		}
	}
	return netip.Addr{}, false
}

// hold makes ips the Service's addresses, releasing the ones it no longer has.
func (a *allocator) hold(r *request, ips []netip.Addr) {
	for _, ip := range a.byService[r.key] {
		if !slices.Contains(ips, ip) {
			a.drop(r.key, ip)
		}
	}
	h := &holder{key: r.key, created: r.created, sharingKey: r.sharingKey, ports: r.ports}
	for _, ip := range ips {
		hs := slices.DeleteFunc(a.holders[ip], func(o *holder) bool { return o.key == r.key })
		a.holders[ip] = append(hs, h)
	}
	if len(ips) == 0 {
		delete(a.byService, r.key)
	} else {
		a.byService[r.key] = slices.Clone(ips)
	}
}

// release forgets every address of a Service; it reports whether it held any.
func (a *allocator) release(key string) bool {
	ips := a.byService[key]
	for _, ip := range ips {
		a.drop(key, ip)
	}
	return len(ips) > 0
}

func (a *allocator) drop(key string, ip netip.Addr) {
	hs := slices.DeleteFunc(a.holders[ip], func(h *holder) bool { return h.key == key })
	if len(hs) == 0 {
		delete(a.holders, ip)
	} else {
		a.holders[ip] = hs
	}
	rest := slices.DeleteFunc(slices.Clone(a.byService[key]), func(o netip.Addr) bool { return o == ip })
	if len(rest) == 0 {
		delete(a.byService, key)
	} else {
		a.byService[key] = rest
	}
}

// counts returns how many of the pool's addresses are held and how many are free (saturating at
// MaxInt64: an IPv6 pool can be larger).
func (a *allocator) counts(p *pool) (assigned, available int64) {
	size := new(big.Int)
	for _, r := range p.ranges {
		size.Add(size, rangeSize(r, p.avoidBuggyIPs))
	}
	for ip := range a.holders {
		if p.contains(ip) {
			assigned++
		}
	}
	size.Sub(size, big.NewInt(assigned))
	if !size.IsInt64() {
		return assigned, math.MaxInt64
	}
	return assigned, max(size.Int64(), 0)
}

func rangeSize(r validation.AddressRange, avoidBuggyIPs bool) *big.Int {
	a, b, ok := r.Assignable()
	if !ok {
		return new(big.Int)
	}
	first, last := new(big.Int).SetBytes(a.AsSlice()), new(big.Int).SetBytes(b.AsSlice())
	n := new(big.Int).Sub(last, first)
	n.Add(n, big.NewInt(1))
	if avoidBuggyIPs && a.Is4() {
		f, l := first.Int64(), last.Int64()
		n.Sub(n, big.NewInt(countModulo(f, l, 0)+countModulo(f, l, 255)))
	}
	return n
}

// countModulo counts x in [first, last] with x mod 256 == rem.
func countModulo(first, last, rem int64) int64 {
	upTo := func(v int64) int64 { // count in [0, v]
		if v < rem {
			return 0
		}
		return (v-rem)/256 + 1
	}
	return upTo(last) - upTo(first-1)
}

// claim records the addresses a Service's status already names, without picking or evicting:
// the rebuild at start claims Services oldest first, so where two statuses name one address the
// older keeps it and the younger is moved when it is synced.
func (a *allocator) claim(r *request) {
	var keep []netip.Addr
	for _, ip := range r.current {
		if !slices.Contains(r.families, familyOf(ip)) || slices.ContainsFunc(keep, func(k netip.Addr) bool { return familyOf(k) == familyOf(ip) }) {
			continue
		}
		if a.poolFor(r, ip) != nil && a.blocker(r, ip) == "" {
			keep = append(keep, ip)
		}
	}
	a.hold(r, keep)
}
