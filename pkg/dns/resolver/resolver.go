// Package resolver turns a DNS question about the cluster zone (or a reverse name of a cluster
// address) into the records of the Kubernetes DNS-Based Service Discovery specification, schema
// 1.1.0, reading the slim objects of package cache. It does no I/O: the server package owns the
// sockets, EDNS0, truncation and forwarding.
//
// Where the specification leaves a choice (names of endpoints without a hostname, what the zone's
// empty non-terminals answer, SRV at a bare Service name, PTR for endpoints of ClusterIP Services)
// we answer as CoreDNS's kubernetes plugin does, so that Pods see the same answers from either.
package resolver

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/svcplane/svcplane/pkg/dns/cache"
	"github.com/svcplane/svcplane/pkg/dns/object"
)

// SchemaVersion is the version of the specification served as dns-version.<zone> TXT.
const SchemaVersion = "1.1.0"

// schemaVersionTTL follows the specification's example and CoreDNS: the version never changes
// while a server runs, so it may be cached long.
const schemaVersionTTL = 28800

// PodMode says whether and how <a-b-c-d>.<ns>.pod.<zone> names are answered.
type PodMode int

const (
	// PodsInsecure answers any well-formed address in an existing namespace, as kube-dns did.
	PodsInsecure PodMode = iota
	// PodsVerified answers only addresses of Pods that exist in that namespace.
	PodsVerified
	// PodsDisabled answers NXDOMAIN for every pod name.
	PodsDisabled
)

// ParsePodMode parses the value of --pod-records.
func ParsePodMode(s string) (PodMode, error) {
	switch s {
	case "insecure":
		return PodsInsecure, nil
	case "verified":
		return PodsVerified, nil
	case "disabled":
		return PodsDisabled, nil
	}
	return 0, fmt.Errorf("--pod-records must be insecure, verified or disabled, not %q", s)
}

func (m PodMode) String() string {
	return [...]string{"insecure", "verified", "disabled"}[m]
}

// Config chooses the zone and the answers' TTL.
type Config struct {
	// Zone is the cluster domain, e.g. cluster.local.
	Zone string
	// TTL of every record but dns-version, and the SOA minimum that bounds negative caching.
	TTL  uint32
	Pods PodMode
	// DNSServiceNamespace/Name is the Service whose addresses are the zone's name server.
	DNSServiceNamespace string
	DNSServiceName      string
}

// Resolver answers questions from an Index.
type Resolver struct {
	ix   *cache.Index
	cfg  Config
	zone string // lower case, fully qualified
	ns   string // the zone's name server, ns.dns.<zone>
}

// New returns a Resolver of cfg.Zone backed by ix.
func New(ix *cache.Index, cfg Config) *Resolver {
	zone := dns.Fqdn(strings.ToLower(cfg.Zone))
	if cfg.DNSServiceName == "" {
		cfg.DNSServiceNamespace, cfg.DNSServiceName = "kube-system", "kube-dns"
	}
	return &Resolver{ix: ix, cfg: cfg, zone: zone, ns: "ns.dns." + zone}
}

// Zone returns the cluster zone, fully qualified and lower case.
func (r *Resolver) Zone() string { return r.zone }

// Result is the content of a reply.
type Result struct {
	Rcode  int
	Answer []dns.RR
	Ns     []dns.RR
	Extra  []dns.RR
}

// Resolve answers q if it is ours: a name in the cluster zone (always), or a reverse name of a
// ClusterIP or endpoint address. ok is false for everything else, which the caller forwards.
func (r *Resolver) Resolve(q dns.Question) (res Result, ok bool) {
	name := strings.ToLower(q.Name)
	if rest, in := r.trimZone(name); in {
		res = r.inZone(q, rest)
		if res.Rcode == dns.RcodeNameError && !r.ix.Synced() {
			// Before the first list a missing name may simply not have arrived yet; a
			// negative answer would be cached by clients for the SOA minimum.
			return Result{Rcode: dns.RcodeServerFailure}, true
		}
		return res, true
	}
	if q.Qtype != dns.TypePTR {
		return Result{}, false
	}
	ip, isReverse := parseReverse(name)
	if !isReverse {
		return Result{}, false
	}
	return r.reverse(q, ip)
}

func (r *Resolver) trimZone(name string) (rest string, ok bool) {
	if name == r.zone {
		return "", true
	}
	if strings.HasSuffix(name, "."+r.zone) {
		return name[:len(name)-len(r.zone)-1], true
	}
	return "", false
}

func (r *Resolver) inZone(q dns.Question, rest string) Result {
	if rest == "" {
		return r.apex(q)
	}
	labels := strings.Split(rest, ".")
	last := len(labels) - 1
	switch {
	case labels[last] == "svc":
		return r.service(q, labels[:last])
	case labels[last] == "pod":
		return r.pod(q, labels[:last])
	case rest == "dns-version":
		if q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY {
			return Result{Answer: []dns.RR{&dns.TXT{Hdr: r.hdr(q.Name, dns.TypeTXT, schemaVersionTTL), Txt: []string{SchemaVersion}}}}
		}
		return r.noData()
	case rest == "ns.dns":
		return r.addresses(q, r.nameServerAddrs())
	case rest == "dns":
		return r.noData() // an empty non-terminal above ns.dns
	}
	return r.nxDomain()
}

func (r *Resolver) apex(q dns.Question) Result {
	switch q.Qtype {
	case dns.TypeSOA:
		return Result{Answer: []dns.RR{r.soa(q.Name)}}
	case dns.TypeNS:
		ns := &dns.NS{Hdr: r.hdr(q.Name, dns.TypeNS, r.cfg.TTL), Ns: r.ns}
		var extra []dns.RR
		for _, ip := range r.nameServerAddrs() {
			extra = append(extra, r.addressRR(r.ns, ip))
		}
		return Result{Answer: []dns.RR{ns}, Extra: extra}
	}
	return r.noData()
}

func (r *Resolver) nameServerAddrs() []netip.Addr {
	if svc := r.ix.Service(r.cfg.DNSServiceNamespace, r.cfg.DNSServiceName); svc != nil {
		return svc.ClusterIPs
	}
	return nil
}

// service answers names under svc.<zone>; labels are those before "svc".
func (r *Resolver) service(q dns.Question, labels []string) Result {
	n := len(labels)
	if n == 0 {
		return r.noData()
	}
	namespace := labels[n-1]
	if !r.ix.NamespaceExists(namespace) {
		return r.nxDomain()
	}
	if n == 1 {
		return r.noData()
	}
	svc := r.ix.Service(namespace, labels[n-2])
	if svc == nil {
		return r.nxDomain()
	}
	switch n {
	case 2:
		return r.serviceName(q, svc)
	case 3:
		return r.endpointName(q, svc, labels[0])
	case 4:
		port, okPort := strings.CutPrefix(labels[0], "_")
		proto, okProto := strings.CutPrefix(labels[1], "_")
		if okPort && okProto && port != "" && proto != "" {
			return r.portName(q, svc, port, proto)
		}
	}
	return r.nxDomain()
}

func (r *Resolver) serviceFQDN(svc *object.Service) string {
	return svc.Name + "." + svc.Namespace + ".svc." + r.zone
}

// serviceName answers <service>.<ns>.svc.<zone>.
func (r *Resolver) serviceName(q dns.Question, svc *object.Service) Result {
	if svc.ExternalName != "" {
		// A CNAME answers every type; the client's resolver chases it. We never proxy the
		// target: it is outside our authority and may be outside the cluster.
		return Result{Answer: []dns.RR{&dns.CNAME{Hdr: r.hdr(q.Name, dns.TypeCNAME, r.cfg.TTL), Target: svc.ExternalName}}}
	}
	if !svc.Headless {
		if q.Qtype == dns.TypeSRV {
			// A bare Service name answers SRV for every port, named or not, as CoreDNS does.
			return r.clusterIPSRV(q, svc, func(object.Port) bool { return true })
		}
		return r.addresses(q, svc.ClusterIPs)
	}
	eps := r.readyEndpoints(svc, func(string) bool { return true })
	if len(eps) == 0 {
		return r.nxDomain() // specification 2.4.1: a headless Service without ready endpoints
	}
	if q.Qtype == dns.TypeSRV {
		return r.headlessSRV(q, svc, eps, func(object.Port) bool { return true })
	}
	addrs := make([]netip.Addr, 0, len(eps))
	for _, e := range eps {
		addrs = appendUnique(addrs, e.addr)
	}
	return r.addresses(q, addrs)
}

// endpointName answers <hostname>.<service>.<ns>.svc.<zone>.
func (r *Resolver) endpointName(q dns.Question, svc *object.Service, label string) Result {
	if svc.ExternalName != "" {
		return r.nxDomain()
	}
	eps := r.readyEndpoints(svc, func(name string) bool { return name == label })
	if len(eps) == 0 {
		return r.nxDomain()
	}
	var addrs []netip.Addr
	for _, e := range eps {
		addrs = appendUnique(addrs, e.addr)
	}
	return r.addresses(q, addrs)
}

// portName answers _<port>._<proto>.<service>.<ns>.svc.<zone>.
func (r *Resolver) portName(q dns.Question, svc *object.Service, port, proto string) Result {
	if svc.ExternalName != "" {
		return r.nxDomain()
	}
	match := func(p object.Port) bool { return p.Name == port && p.Protocol == proto }
	var res Result
	if svc.Headless {
		res = r.headlessSRV(q, svc, r.readyEndpoints(svc, func(string) bool { return true }), match)
	} else {
		res = r.clusterIPSRV(q, svc, match)
	}
	if len(res.Answer) == 0 {
		return r.nxDomain()
	}
	if q.Qtype != dns.TypeSRV && q.Qtype != dns.TypeANY {
		return r.noData()
	}
	return res
}

func (r *Resolver) clusterIPSRV(q dns.Question, svc *object.Service, match func(object.Port) bool) Result {
	target := r.serviceFQDN(svc)
	var res Result
	for _, p := range svc.Ports {
		if match(p) {
			res.Answer = append(res.Answer, &dns.SRV{Hdr: r.hdr(q.Name, dns.TypeSRV, r.cfg.TTL), Port: p.Port, Target: target})
		}
	}
	if len(res.Answer) == 0 {
		return r.noData()
	}
	setWeights(res.Answer)
	for _, ip := range svc.ClusterIPs {
		res.Extra = append(res.Extra, r.addressRR(target, ip))
	}
	return res
}

func (r *Resolver) headlessSRV(q dns.Question, svc *object.Service, eps []readyEndpoint, match func(object.Port) bool) Result {
	type key struct {
		target string
		port   uint16
	}
	seen := map[key]bool{}
	extraSeen := map[netip.Addr]bool{}
	var res Result
	suffix := "." + r.serviceFQDN(svc)
	for _, e := range eps {
		target := e.name + suffix
		for _, p := range e.ports {
			if !match(p) {
				continue
			}
			// An endpoint with a hostname and addresses of both families is one target.
			if !seen[key{target, p.Port}] {
				seen[key{target, p.Port}] = true
				res.Answer = append(res.Answer, &dns.SRV{Hdr: r.hdr(q.Name, dns.TypeSRV, r.cfg.TTL), Port: p.Port, Target: target})
			}
			if !extraSeen[e.addr] {
				extraSeen[e.addr] = true
				res.Extra = append(res.Extra, r.addressRR(target, e.addr))
			}
		}
	}
	if len(res.Answer) == 0 {
		return r.noData()
	}
	setWeights(res.Answer)
	return res
}

// setWeights spreads a weight of 100 over the records, all at priority 0: every target is equally
// preferred (RFC 2782).
func setWeights(rrs []dns.RR) {
	w := uint16(100 / len(rrs))
	if w == 0 {
		w = 1
	}
	for _, rr := range rrs {
		rr.(*dns.SRV).Weight = w
	}
}

type readyEndpoint struct {
	name  string
	addr  netip.Addr
	ports []object.Port
}

// readyEndpoints lists (name, address) pairs of the Service's ready endpoints whose name passes
// keep. An endpoint is ready if its slice says so or the Service publishes not-ready addresses.
func (r *Resolver) readyEndpoints(svc *object.Service, keep func(name string) bool) []readyEndpoint {
	var out []readyEndpoint
	r.ix.EachEndpoint(svc.Namespace, svc.Name, func(slice *object.EndpointSlice, ep *object.Endpoint) {
		if !ep.Ready && !svc.PublishNotReady {
			return
		}
		for _, a := range ep.Addresses {
			name := object.EndpointName(ep, a)
			if keep(name) {
				out = append(out, readyEndpoint{name: name, addr: a, ports: slice.Ports})
			}
		}
	})
	return out
}

// pod answers names under pod.<zone>; labels are those before "pod".
func (r *Resolver) pod(q dns.Question, labels []string) Result {
	n := len(labels)
	if n == 0 {
		return r.noData()
	}
	namespace := labels[n-1]
	if r.cfg.Pods == PodsDisabled || !r.ix.NamespaceExists(namespace) || n > 2 {
		return r.nxDomain()
	}
	if n == 1 {
		return r.noData()
	}
	ip, ok := parseDashed(labels[0])
	if !ok {
		return r.nxDomain()
	}
	if r.cfg.Pods == PodsVerified && !r.ix.PodHasIP(namespace, ip) {
		return r.nxDomain()
	}
	return r.addresses(q, []netip.Addr{ip})
}

// parseDashed reads a-b-c-d (IPv4) or the IPv6 form with '-' for ':'.
func parseDashed(label string) (netip.Addr, bool) {
	var s string
	if strings.Count(label, "-") == 3 && !strings.Contains(label, "--") {
		s = strings.ReplaceAll(label, "-", ".")
	} else {
		s = strings.ReplaceAll(label, "-", ":")
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip, true
}

func (r *Resolver) reverse(q dns.Question, ip netip.Addr) (Result, bool) {
	var names []string
	for _, svc := range r.ix.ServicesWithClusterIP(ip) {
		names = appendUnique(names, r.serviceFQDN(svc))
	}
	r.ix.EachEndpointWithIP(ip, func(svc *object.Service, _ *object.EndpointSlice, ep *object.Endpoint) {
		if svc == nil || svc.ExternalName != "" || (!ep.Ready && !svc.PublishNotReady) {
			return
		}
		names = appendUnique(names, object.EndpointName(ep, ip)+"."+r.serviceFQDN(svc))
	})
	if len(names) == 0 {
		return Result{}, false
	}
	var res Result
	for _, n := range names {
		res.Answer = append(res.Answer, &dns.PTR{Hdr: r.hdr(q.Name, dns.TypePTR, r.cfg.TTL), Ptr: n})
	}
	return res, true
}

// parseReverse reads the address of a full in-addr.arpa or ip6.arpa name.
func parseReverse(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, l := range labels {
			v, err := strconv.ParseUint(l, 10, 8)
			if err != nil || (len(l) > 1 && l[0] == '0') {
				return netip.Addr{}, false
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		if len(rest) != 63 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i := 0; i < 32; i++ {
			c := rest[i*2]
			if i < 31 && rest[i*2+1] != '.' {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(string(c), 16, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			// Nibbles come least significant first.
			pos := 31 - i
			if pos%2 == 0 {
				b[pos/2] |= byte(v) << 4
			} else {
				b[pos/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// addresses answers a name that exists and owns addrs: the A or AAAA records the question asks
// for, or NODATA when it asks for another type or family.
func (r *Resolver) addresses(q dns.Question, addrs []netip.Addr) Result {
	var res Result
	for _, a := range addrs {
		if (q.Qtype == dns.TypeA && a.Is4()) || (q.Qtype == dns.TypeAAAA && a.Is6()) || q.Qtype == dns.TypeANY {
			res.Answer = append(res.Answer, r.addressRR(q.Name, a))
		}
	}
	if len(res.Answer) == 0 {
		return r.noData()
	}
	return res
}

func (r *Resolver) addressRR(owner string, a netip.Addr) dns.RR {
	if a.Is4() {
		return &dns.A{Hdr: r.hdr(owner, dns.TypeA, r.cfg.TTL), A: a.AsSlice()}
	}
	return &dns.AAAA{Hdr: r.hdr(owner, dns.TypeAAAA, r.cfg.TTL), AAAA: a.AsSlice()}
}

func (r *Resolver) hdr(owner string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

// soa is the zone's SOA; its serial is the time of the last change to the index, so secondaries
// and caches that look at it see every change.
func (r *Resolver) soa(owner string) dns.RR {
	return &dns.SOA{
		Hdr:     r.hdr(owner, dns.TypeSOA, r.cfg.TTL),
		Ns:      r.ns,
		Mbox:    "hostmaster." + r.zone,
		Serial:  r.ix.Serial(),
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  r.cfg.TTL,
	}
}

// Negative answers carry the SOA in the authority section so resolvers can cache them for its
// minimum (RFC 2308).
func (r *Resolver) noData() Result { return Result{Ns: []dns.RR{r.soa(r.zone)}} }
func (r *Resolver) nxDomain() Result {
	return Result{Rcode: dns.RcodeNameError, Ns: []dns.RR{r.soa(r.zone)}}
}

func appendUnique[T comparable](s []T, v T) []T {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// Ready reports whether the index has listed everything it watches.
func (r *Resolver) Ready() bool { return r.ix.Synced() }
