package nftables

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/google/nftables"
	corev1 "k8s.io/api/core/v1"

	"github.com/svcplane/svcplane/pkg/proxy"
)

// TableName is the table svcplane owns in each family; nothing else of the host's ruleset is
// touched.
const TableName = "svcplane"

// Names of the fixed chains and maps.
const (
	chainServices      = "services"
	chainRejectCheck   = "reject-check"
	chainReject        = "reject-no-endpoints"
	chainMark          = "mark-for-masquerade"
	chainMasquerading  = "masquerading"
	mapServiceIPs      = "service-ips"
	mapServiceNodePort = "service-nodeports"
	mapNoEndpointIPs   = "no-endpoint-services"
	mapNoEndpointNodeP = "no-endpoint-nodeports"
	setNodePortIPs     = "nodeport-ips"
	setHairpin         = "hairpin"
	mapEndpoints       = "endpoints"
	mapShortCircuit    = "short-circuit"
	mapEndpointChains  = "endpoint-chains"
)

// Config is what the proxier needs besides the Snapshots.
type Config struct {
	Family corev1.IPFamily
	// ClusterCIDR: traffic from outside it to a ClusterIP is masqueraded (so replies come
	// back through this node); invalid means masquerade all ClusterIP traffic.
	ClusterCIDR netip.Prefix
	// NodePortAddresses are the addresses NodePorts answer on (--nodeport-addresses,
	// resolved to this node's addresses).
	NodePortAddresses []netip.Addr
}

// Proxier programs one family's table from Snapshots. Sync is called from one goroutine.
//
// What the kernel holds for a Service without session affinity is only map elements: each
// of its frontends (ClusterIP, external and LoadBalancer IPs with the port; the NodePort) in
// a dispatch verdict map, pointing at the chain shared by all Services of its kind with the
// same number of endpoints, and one @endpoints element per frontend and endpoint. Only
// Services with ClientIP affinity add chains (and timeout sets) of their own.
type Proxier struct {
	cfg    Config
	family family
	kernel Kernel
	// conntrack is nil in rule-level tests.
	conntrack Conntrack

	mu sync.Mutex // guards the fields below against Dump from other goroutines
	// programmed is what the kernel holds per ServicePort, to remove exactly that later.
	programmed map[proxy.ServicePortName]*servicePlan
	needFull   bool
	// shared are the shared chains in the kernel (created on first use, removed by the
	// next full sync once unused).
	shared map[string]sharedChain
	// owners says which ServicePort holds each dispatch key: two Services claiming one
	// address and port (externalIPs are not checked by the API) must not fail the whole
	// transaction; the first keeps it.
	owners map[elemKey]proxy.ServicePortName
	// ids number the ServicePorts with affinity for the keys of @endpoint-chains: port k
	// uses 2k for its cluster selection and 2k+1 for a different external one.
	ids         map[proxy.ServicePortName]uint32
	hairpinRefs map[netip.Addr]int
	freeID      []uint32
	nextID      uint32
}

func (p *Proxier) idOf(name proxy.ServicePortName) uint32 {
	if id, ok := p.ids[name]; ok {
		return id
	}
	var id uint32
	if n := len(p.freeID); n > 0 {
		id, p.freeID = p.freeID[n-1], p.freeID[:n-1]
	} else {
		p.nextID++
		id = p.nextID
	}
	p.ids[name] = id
	return id
}

// Kernel applies a transaction; netlinkKernel is the real one, tests use a recorder.
type Kernel interface {
	Apply(tx *transaction) error
}

// NewProxier returns a proxier that programs through k.
func NewProxier(cfg Config, k Kernel) *Proxier {
	f := ipv4
	if cfg.Family == corev1.IPv6Protocol {
		f = ipv6
	}
	return &Proxier{cfg: cfg, family: f, kernel: k, programmed: map[proxy.ServicePortName]*servicePlan{}, needFull: true,
		ids: map[proxy.ServicePortName]uint32{}, shared: map[string]sharedChain{}, owners: map[elemKey]proxy.ServicePortName{}}
}

// sharedKind is what a shared chain does with a packet whose frontend it serves.
type sharedKind int

const (
	// sharedCluster: masquerade traffic from outside the cluster CIDR, DNAT to one of the
	// ClusterIP's endpoints.
	sharedCluster sharedKind = iota
	// sharedExternal: masquerade, DNAT to one of the frontend's endpoints.
	sharedExternal
	// sharedLocal: DNAT to one of this node's endpoints, keeping the client address
	// (externalTrafficPolicy: Local).
	sharedLocal
	// sharedShortCircuit: DNAT to one of all the Service's endpoints (@short-circuit), for
	// Pods and the node itself reaching an externalTrafficPolicy: Local frontend.
	sharedShortCircuit
	// sharedLocalPolicy dispatches an externalTrafficPolicy: Local frontend: to
	// sharedShortCircuit with n2 endpoints for Pods and the node, else to sharedLocal.
	sharedLocalPolicy
)

// sharedChain is one chain serving every frontend of a kind with n usable endpoints.
type sharedChain struct {
	kind     sharedKind
	nodePort bool
	n, n2    uint32
}

func (c sharedChain) name() string {
	np := ""
	if c.nodePort {
		np = "np-"
	}
	switch c.kind {
	case sharedExternal:
		return fmt.Sprintf("ext-%sn%d", np, c.n)
	case sharedLocal:
		return fmt.Sprintf("local-%sn%d", np, c.n)
	case sharedShortCircuit:
		return fmt.Sprintf("short-%sn%d", np, c.n)
	case sharedLocalPolicy:
		return fmt.Sprintf("etp-local-%sn%d-all%d", np, c.n, c.n2)
	}
	return fmt.Sprintf("svc-n%d", c.n)
}

// needs lists the shared chains c jumps to, which must exist with it.
func (c sharedChain) needs() []sharedChain {
	if c.kind != sharedLocalPolicy {
		return nil
	}
	return []sharedChain{{kind: sharedLocal, nodePort: c.nodePort, n: c.n}, {kind: sharedShortCircuit, nodePort: c.nodePort, n: c.n2}}
}

func (p *Proxier) sharedRules(c sharedChain) []rule {
	f := p.family
	epMap, scMap, _ := p.endpointMaps()
	switch c.kind {
	case sharedExternal:
		return []rule{ruleJump(vJump, chainMark), ruleDNATShared(f, c.n, c.nodePort, epMap)}
	case sharedLocal:
		return []rule{ruleDNATShared(f, c.n, c.nodePort, epMap)}
	case sharedShortCircuit:
		return []rule{ruleDNATShared(f, c.n, c.nodePort, scMap)}
	case sharedLocalPolicy:
		deps := c.needs()
		local, short := deps[0].name(), deps[1].name()
		var rules []rule
		if p.cfg.ClusterCIDR.IsValid() {
			rules = append(rules, ruleSaddrPrefix(f, p.cfg.ClusterCIDR, false, vGoto, short))
		}
		return append(rules, ruleSrcLocal(vJump, chainMark), ruleSrcLocal(vGoto, short), ruleJump(vGoto, local))
	}
	return []rule{p.masqueradeCheck(), ruleDNATShared(f, c.n, false, epMap)}
}

// masqueradeCheck marks ClusterIP traffic from outside the cluster for masquerading.
func (p *Proxier) masqueradeCheck() rule {
	if p.cfg.ClusterCIDR.IsValid() {
		return ruleSaddrPrefix(p.family, p.cfg.ClusterCIDR, true, vJump, chainMark)
	}
	return ruleJump(vJump, chainMark)
}

// servicePlan is everything one ServicePort puts in the kernel.
type servicePlan struct {
	// chains are the port's own chains (affinity, eTP Local), in creation order: jump
	// targets before their users. shared are the shared chains its verdicts lead to.
	chains       []*chainPlan
	shared       []sharedChain
	serviceIPs   map[ipProtoPort]string
	nodePorts    map[protoPort]string
	noEndpointIP map[ipProtoPort]string
	noEndpointNP map[protoPort]string
	affinitySets []*nftables.Set
	hairpin      []netip.Addr
	// endpoints and shortCircuit are the port's elements of @endpoints and @short-circuit:
	// frontend → index → target.
	endpoints, shortCircuit map[ipProtoPort][]netip.AddrPort
	// ids (affinity only) are the cluster and external selection numbers, equal when both
	// select the same endpoints; endpointChains are the elements of @endpoint-chains:
	// id → index → chain.
	ids            [2]uint32
	endpointChains map[uint32][]string
}

type chainPlan struct {
	name  string
	rules []rule
}

func (p *Proxier) endpointMaps() (endpoints, shortCircuit, endpointChains *nftables.Set) {
	// Indexes (and affinity ids) are host-order 32-bit numbers, as numgen writes them: the
	// mark type has that layout, and lets `nft list` print the maps (it cannot size a bare
	// integer inside a concatenation).
	idIdx, _ := nftables.ConcatSetType(nftables.TypeMark, nftables.TypeMark)
	frontendIdx, _ := nftables.ConcatSetType(p.family.addrType, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark)
	target, _ := nftables.ConcatSetType(p.family.addrType, nftables.TypeInetService)
	endpoints = &nftables.Set{Name: mapEndpoints, IsMap: true, KeyType: frontendIdx, DataType: target, Concatenation: true}
	shortCircuit = &nftables.Set{Name: mapShortCircuit, IsMap: true, KeyType: frontendIdx, DataType: target, Concatenation: true}
	endpointChains = &nftables.Set{Name: mapEndpointChains, IsMap: true, KeyType: idIdx, DataType: nftables.TypeVerdict, Concatenation: true}
	return
}

// dispatchSets are the maps the base chains look into.
type dispatchSets struct {
	serviceIPs, nodePorts, noEPIPs, noEPNodePorts, nodePortIPs, hairpin *nftables.Set
}

func (p *Proxier) sets() dispatchSets {
	f := p.family
	ippp, _ := nftables.ConcatSetType(f.addrType, nftables.TypeInetProto, nftables.TypeInetService)
	pp, _ := nftables.ConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	ipip, _ := nftables.ConcatSetType(f.addrType, f.addrType)
	return dispatchSets{
		serviceIPs:    &nftables.Set{Name: mapServiceIPs, IsMap: true, KeyType: ippp, DataType: nftables.TypeVerdict, Concatenation: true},
		nodePorts:     &nftables.Set{Name: mapServiceNodePort, IsMap: true, KeyType: pp, DataType: nftables.TypeVerdict, Concatenation: true},
		noEPIPs:       &nftables.Set{Name: mapNoEndpointIPs, IsMap: true, KeyType: ippp, DataType: nftables.TypeVerdict, Concatenation: true},
		noEPNodePorts: &nftables.Set{Name: mapNoEndpointNodeP, IsMap: true, KeyType: pp, DataType: nftables.TypeVerdict, Concatenation: true},
		nodePortIPs:   &nftables.Set{Name: setNodePortIPs, KeyType: f.addrType},
		hairpin:       &nftables.Set{Name: setHairpin, KeyType: ipip, Concatenation: true},
	}
}

func (d dispatchSets) all() []*nftables.Set {
	return []*nftables.Set{d.serviceIPs, d.nodePorts, d.noEPIPs, d.noEPNodePorts, d.nodePortIPs, d.hairpin}
}

func protoNumber(p corev1.Protocol) uint8 {
	switch p {
	case corev1.ProtocolUDP:
		return 17
	case corev1.ProtocolSCTP:
		return 132
	}
	return 6
}

func addrPorts(eps []*proxy.Endpoint) []netip.AddrPort {
	out := make([]netip.AddrPort, len(eps))
	for i, e := range eps {
		out[i] = e.AddrPort()
	}
	return out
}

// plan computes what one ServicePort needs.
func (p *Proxier) plan(sp *proxy.ServicePort, eps []*proxy.Endpoint) *servicePlan {
	f := p.family
	h := sp.Name.ShortHash()
	proto := protoNumber(sp.Protocol)
	cluster, external, _ := proxy.UsableEndpoints(sp, eps)
	sameExt := slices.Equal(cluster, external)
	sticky := sp.StickyTimeout > 0
	pl := &servicePlan{serviceIPs: map[ipProtoPort]string{}, nodePorts: map[protoPort]string{},
		noEndpointIP: map[ipProtoPort]string{}, noEndpointNP: map[protoPort]string{},
		endpoints: map[ipProtoPort][]netip.AddrPort{}, shortCircuit: map[ipProtoPort][]netip.AddrPort{},
		endpointChains: map[uint32][]string{}}
	useShared := func(c sharedChain) string {
		for _, x := range append([]sharedChain{c}, c.needs()...) {
			if !slices.Contains(pl.shared, x) {
				pl.shared = append(pl.shared, x)
			}
		}
		return c.name()
	}
	if sticky {
		k := p.idOf(sp.Name)
		pl.ids = [2]uint32{2 * k, 2 * k}
		if !sameExt {
			pl.ids[1] = 2*k + 1
		}
	}
	_, _, epChainMap := p.endpointMaps()

	// affinity returns the rules choosing among eps with ClientIP affinity: a chain per
	// endpoint records the client in a timeout set, and a client found in one goes back.
	epChains := map[netip.AddrPort]string{}
	affinitySets := map[netip.AddrPort]*nftables.Set{}
	affinity := func(eps []*proxy.Endpoint, id uint32) []rule {
		var rules []rule
		var chains []string
		for _, e := range eps {
			ap := e.AddrPort()
			name, ok := epChains[ap]
			if !ok {
				suffix := strings.NewReplacer(".", "-", ":", "-").Replace(e.IP.String()) + fmt.Sprintf("-%d", e.Port)
				name = "ep-" + h + "-" + suffix
				set := &nftables.Set{Name: "aff-" + h + "-" + suffix, KeyType: f.addrType, HasTimeout: true,
					Dynamic: true, Timeout: sp.StickyTimeout}
				affinitySets[ap] = set
				pl.affinitySets = append(pl.affinitySets, set)
				pl.chains = append(pl.chains, &chainPlan{name: name, rules: []rule{
					ruleAffinityUpdate(f, set, sp.StickyTimeout),
					ruleDNAT(f, ap),
				}})
				epChains[ap] = name
			}
			rules = append(rules, ruleAffinityCheck(f, affinitySets[ap], name))
			chains = append(chains, name)
		}
		pl.endpointChains[id] = chains
		return append(rules, ruleNumgenGotoRange(chains, id, 0, epChainMap))
	}

	// ClusterIP.
	stickyChain := "" // an affinity Service's own chain choosing among cluster endpoints
	if len(cluster) > 0 && sticky {
		stickyChain = "svc-" + h
		pl.chains = append(pl.chains, &chainPlan{name: stickyChain,
			rules: append([]rule{p.masqueradeCheck()}, affinity(cluster, pl.ids[0])...)})
	}
	if sp.ClusterIP.IsValid() {
		fe := ipProtoPort{sp.ClusterIP, proto, uint16(sp.Port)}
		switch {
		case len(cluster) == 0:
			pl.noEndpointIP[fe] = "goto " + chainReject
		case sticky:
			pl.serviceIPs[fe] = "goto " + stickyChain
		default:
			pl.serviceIPs[fe] = "goto " + useShared(sharedChain{kind: sharedCluster, n: uint32(len(cluster))})
			pl.endpoints[fe] = addrPorts(cluster)
		}
	}
	// Hairpin traffic (a Pod reaching itself through a Service) can only come from a Pod of
	// this node, so only local endpoints need an element.
	for _, list := range [][]*proxy.Endpoint{cluster, external} {
		for _, e := range list {
			if e.IsLocal && !slices.Contains(pl.hairpin, e.IP) {
				pl.hairpin = append(pl.hairpin, e.IP)
			}
		}
	}
	if !sp.ExternallyAccessible() {
		return pl
	}

	// External frontends: external and LoadBalancer IPs, and the NodePort.
	// With no usable endpoint: reject if there is none at all; with eTP Local and
	// endpoints elsewhere, drop, so the load balancer's health check moves traffic away
	// rather than the client seeing a refusal.
	noEP := "goto " + chainReject
	if len(cluster) > 0 || hasAnyUsable(eps) {
		noEP = "drop"
	}
	stickyExt := ""
	if sticky && len(external) > 0 {
		stickyExt = "ext-" + h
		var rules []rule
		if !sp.ExternalPolicyLocal {
			rules = append(rules, ruleJump(vJump, chainMark))
		} else {
			// eTP Local keeps the client address, so no mark. Pods and the node itself are
			// not "external" (upstream's short-circuit): they go the cluster way.
			if p.cfg.ClusterCIDR.IsValid() {
				rules = append(rules, ruleSaddrPrefix(f, p.cfg.ClusterCIDR, false, vGoto, stickyChain))
			}
			rules = append(rules, ruleSrcLocal(vJump, chainMark), ruleSrcLocal(vGoto, stickyChain))
		}
		if sameExt {
			rules = append(rules, ruleJump(vGoto, stickyChain))
		} else {
			rules = append(rules, affinity(external, pl.ids[1])...)
		}
		pl.chains = append(pl.chains, &chainPlan{name: stickyExt, rules: rules})
	}
	// verdict returns where an external frontend's traffic goes, and records its elements.
	verdict := func(fe ipProtoPort, nodePort bool) string {
		switch {
		case len(external) == 0:
			return ""
		case sticky:
			return "goto " + stickyExt
		case !sp.ExternalPolicyLocal:
			pl.endpoints[fe] = addrPorts(external)
			return "goto " + useShared(sharedChain{kind: sharedExternal, nodePort: nodePort, n: uint32(len(external))})
		}
		pl.endpoints[fe] = addrPorts(external)
		pl.shortCircuit[fe] = addrPorts(cluster)
		return "goto " + useShared(sharedChain{kind: sharedLocalPolicy, nodePort: nodePort, n: uint32(len(external)), n2: uint32(len(cluster))})
	}
	for _, a := range append(slices.Clone(sp.ExternalIPs), sp.LoadBalancerIPs...) {
		fe := ipProtoPort{a, proto, uint16(sp.Port)}
		if v := verdict(fe, false); v != "" {
			pl.serviceIPs[fe] = v
		} else {
			pl.noEndpointIP[fe] = noEP
		}
	}
	p.planFirewall(pl, sp, h, proto, len(external) > 0, noEP)
	if sp.NodePort != 0 {
		key := protoPort{proto, uint16(sp.NodePort)}
		fe := ipProtoPort{frontendAddr(f, true, netip.Addr{}), proto, uint16(sp.NodePort)}
		if v := verdict(fe, true); v != "" {
			pl.nodePorts[key] = v
		} else {
			pl.noEndpointNP[key] = noEP
		}
	}
	return pl
}

// planFirewall enforces loadBalancerSourceRanges on the LoadBalancer IPs of a port that has
// ranges. As upstream's nftables mode, only LoadBalancer IPs are filtered: external IPs and
// NodePorts are not ("nodeports are not subject to loadBalancerSourceRanges, and we can't
// change that", pkg/proxy/nftables/proxier.go), and neither is the ClusterIP.
//
// The port gets one chain, fw-<hash>: one `ip saddr PREFIX` rule per range, then drop. Its LB
// frontends point at it from the filter-stage vmap @no-endpoint-services, which every packet
// already looks up before NAT; a map of its own (upstream's @firewall-ips) would cost every
// packet of every Service one more lookup, while this way Services without ranges pay nothing
// and have nothing in the kernel. A range list is a handful of CIDRs, so prefix rules (no
// lookup, nothing the kernel walks when they are added) beat a set per Service.
func (p *Proxier) planFirewall(pl *servicePlan, sp *proxy.ServicePort, h string, proto uint8, hasEndpoints bool, noEP string) {
	if len(sp.LoadBalancerSourceRanges) == 0 || len(sp.LoadBalancerIPs) == 0 {
		return
	}
	// An allowed packet goes on to NAT (return to the hook) or, with no endpoints, to the
	// reject it would have had; when it would be dropped anyway the ranges change nothing.
	kind, target := vReturn, ""
	if !hasEndpoints {
		if noEP == "drop" {
			return
		}
		kind, target = parseVerdict(noEP)
	}
	name := "fw-" + h
	var rules []rule
	allowFromNode := false
	for _, r := range sp.LoadBalancerSourceRanges {
		rules = append(rules, ruleSaddrPrefix(p.family, r, false, kind, target))
		for _, a := range p.cfg.NodePortAddresses {
			allowFromNode = allowFromNode || r.Contains(a)
		}
	}
	// As upstream: when the node itself is allowed, so are the LB IPs as sources, for a
	// node that holds the LB IP as a local address and reaches it from that address.
	if allowFromNode {
		for _, a := range sp.LoadBalancerIPs {
			rules = append(rules, ruleSaddrPrefix(p.family, netip.PrefixFrom(a, a.BitLen()), false, kind, target))
		}
	}
	pl.chains = append(pl.chains, &chainPlan{name: name, rules: append(rules, ruleJump(vDrop, ""))})
	for _, a := range sp.LoadBalancerIPs {
		pl.noEndpointIP[ipProtoPort{a, proto, uint16(sp.Port)}] = "goto " + name
	}
}

// elemKey names one element of one named set or map; elemValue is its data.
type elemKey struct {
	set string
	key string // the key's bytes as the kernel sees them
}

type elemValue struct {
	val     string // a data map's value bytes
	verdict string // a verdict map's verdict ("goto X", "drop")
}

// elements lists every element the plan puts in the shared maps (hairpin aside).
func (pl *servicePlan) elements() map[elemKey]elemValue {
	out := make(map[elemKey]elemValue, len(pl.serviceIPs)+len(pl.nodePorts)+len(pl.endpoints)*10)
	for k, v := range pl.serviceIPs {
		out[elemKey{mapServiceIPs, string(ipProtoPortKey(k))}] = elemValue{verdict: v}
	}
	for k, v := range pl.noEndpointIP {
		out[elemKey{mapNoEndpointIPs, string(ipProtoPortKey(k))}] = elemValue{verdict: v}
	}
	for k, v := range pl.nodePorts {
		out[elemKey{mapServiceNodePort, string(protoPortKey(k))}] = elemValue{verdict: v}
	}
	for k, v := range pl.noEndpointNP {
		out[elemKey{mapNoEndpointNodeP, string(protoPortKey(k))}] = elemValue{verdict: v}
	}
	for set, m := range map[string]map[ipProtoPort][]netip.AddrPort{mapEndpoints: pl.endpoints, mapShortCircuit: pl.shortCircuit} {
		for fe, targets := range m {
			for i, t := range targets {
				out[elemKey{set, string(frontendIndexKey(fe, uint32(i)))}] = elemValue{val: string(targetValue(t))}
			}
		}
	}
	for id, chains := range pl.endpointChains {
		for i, c := range chains {
			out[elemKey{mapEndpointChains, string(idIndexKey(id, uint32(i)))}] = elemValue{verdict: "goto " + c}
		}
	}
	return out
}

// dispatchKeys are the keys other Services may also claim (addresses and ports).
func (pl *servicePlan) dispatchKeys() []elemKey {
	var out []elemKey
	for k := range pl.serviceIPs {
		out = append(out, elemKey{mapServiceIPs, string(ipProtoPortKey(k))})
	}
	for k := range pl.noEndpointIP {
		out = append(out, elemKey{mapNoEndpointIPs, string(ipProtoPortKey(k))})
	}
	for k := range pl.nodePorts {
		out = append(out, elemKey{mapServiceNodePort, string(protoPortKey(k))})
	}
	for k := range pl.noEndpointNP {
		out = append(out, elemKey{mapNoEndpointNodeP, string(protoPortKey(k))})
	}
	return out
}

// claims tracks which ServicePort holds each dispatch key during one sync: the committed
// owners plus this sync's releases and claims, applied to the Proxier only on success.
type claims struct {
	committed map[elemKey]proxy.ServicePortName
	changed   map[elemKey]*proxy.ServicePortName // nil: released
}

func (c *claims) owner(k elemKey) (proxy.ServicePortName, bool) {
	if o, ok := c.changed[k]; ok {
		if o == nil {
			return proxy.ServicePortName{}, false
		}
		return *o, true
	}
	o, ok := c.committed[k]
	return o, ok
}

func (c *claims) release(pl *servicePlan, name proxy.ServicePortName) {
	for _, k := range pl.dispatchKeys() {
		if o, ok := c.owner(k); ok && o == name {
			c.changed[k] = nil
		}
	}
}

// claim removes from pl the dispatch keys held by another ServicePort and claims the rest.
func (c *claims) claim(pl *servicePlan, name proxy.ServicePortName) {
	for _, k := range pl.dispatchKeys() {
		if o, ok := c.owner(k); ok && o != name {
			switch k.set {
			case mapServiceIPs:
				delete(pl.serviceIPs, parseIPProtoPortKey(k.key))
			case mapNoEndpointIPs:
				delete(pl.noEndpointIP, parseIPProtoPortKey(k.key))
			case mapServiceNodePort:
				delete(pl.nodePorts, parseProtoPortKey(k.key))
			case mapNoEndpointNodeP:
				delete(pl.noEndpointNP, parseProtoPortKey(k.key))
			}
			continue
		}
		c.changed[k] = &name
	}
}

// apply writes the changes into the committed owners.
func (c *claims) apply() {
	for k, o := range c.changed {
		if o == nil {
			delete(c.committed, k)
		} else {
			c.committed[k] = *o
		}
	}
}

// transaction is one atomic batch for the kernel.
type transaction struct {
	full bool
	// plans are every plan (full sync) or the plans added or replaced (partial sync).
	plans map[proxy.ServicePortName]*servicePlan
	// removed are, for a partial sync, the replaced or deleted plans: their own chains and
	// sets go unless a new plan keeps them.
	removed map[proxy.ServicePortName]*servicePlan
	// shared are the shared chains to create (all of them on a full sync).
	shared []sharedChain
	// addElems and delElems are a partial sync's element changes (a full sync writes every
	// plan's elements).
	addElems, delElems map[elemKey]elemValue
	// nodePortIPs is rewritten whole on every sync: small.
	nodePortIPs []netip.Addr
	// hairpin is the whole set on a full sync; hairpinDel the elements to remove on a
	// partial one (hairpin then holds those to add).
	hairpin, hairpinDel []netip.Addr
}

// Sync programs the Snapshot: only the changed ServicePorts, or everything when full or
// after a failure. It is the only writer of the table. A partial sync costs in proportion to
// what changed, not to the number of Services: nothing here walks all of them.
func (p *Proxier) Sync(snap *proxy.Snapshot, full bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	full = full || p.needFull
	tx := &transaction{full: full, nodePortIPs: p.cfg.NodePortAddresses, plans: map[proxy.ServicePortName]*servicePlan{}}
	owners := &claims{committed: p.owners, changed: map[elemKey]*proxy.ServicePortName{}}
	if full {
		owners.committed = map[elemKey]proxy.ServicePortName{}
	}
	newShared := map[string]sharedChain{}
	useShared := func(pl *servicePlan) {
		for _, c := range pl.shared {
			_, had := p.shared[c.name()]
			if _, ok := newShared[c.name()]; !ok && (full || !had) {
				newShared[c.name()] = c
				tx.shared = append(tx.shared, c)
			}
		}
	}
	hairpinDelta := map[netip.Addr]int{}
	if full {
		// Sorted, so that of two Services claiming one address the same one always wins.
		names := slices.SortedFunc(maps.Keys(snap.Services), func(a, b proxy.ServicePortName) int {
			return strings.Compare(a.String(), b.String())
		})
		for _, name := range names {
			pl := p.plan(snap.Services[name], snap.Endpoints[name])
			owners.claim(pl, name)
			tx.plans[name] = pl
			useShared(pl)
			for _, a := range pl.hairpin {
				hairpinDelta[a]++
			}
		}
		tx.hairpin = sortedAddrs(hairpinDelta)
	} else {
		tx.removed = map[proxy.ServicePortName]*servicePlan{}
		tx.addElems, tx.delElems = map[elemKey]elemValue{}, map[elemKey]elemValue{}
		oldElems, newElems := map[elemKey]elemValue{}, map[elemKey]elemValue{}
		for name := range snap.Changed {
			if old, ok := p.programmed[name]; ok {
				tx.removed[name] = old
				owners.release(old, name)
				maps.Copy(oldElems, old.elements())
				for _, a := range old.hairpin {
					hairpinDelta[a]--
				}
			}
		}
		for name := range snap.Changed {
			sp, ok := snap.Services[name]
			if !ok {
				continue
			}
			pl := p.plan(sp, snap.Endpoints[name])
			owners.claim(pl, name)
			tx.plans[name] = pl
			maps.Copy(newElems, pl.elements())
			useShared(pl)
			for _, a := range pl.hairpin {
				hairpinDelta[a]++
			}
		}
		// Only elements that differ travel: one changed endpoint is one delete and one add.
		// A changed value is both, as the kernel refuses to overwrite a map element's data.
		for k, v := range oldElems {
			if nv, ok := newElems[k]; !ok || nv != v {
				tx.delElems[k] = v
			}
		}
		for k, v := range newElems {
			if ov, ok := oldElems[k]; !ok || ov != v {
				tx.addElems[k] = v
			}
		}
		for a, d := range hairpinDelta {
			before := p.hairpinRefs[a]
			switch after := before + d; {
			case before > 0 && after <= 0:
				tx.hairpinDel = append(tx.hairpinDel, a)
			case before <= 0 && after > 0:
				tx.hairpin = append(tx.hairpin, a)
			}
		}
	}
	if err := p.kernel.Apply(tx); err != nil {
		p.needFull = true
		return err
	}
	owners.apply()
	p.owners = owners.committed
	if full {
		for name := range p.ids {
			if _, ok := tx.plans[name]; !ok {
				p.releaseID(name)
			}
		}
		p.programmed, p.shared, p.hairpinRefs = tx.plans, newShared, hairpinDelta
	} else {
		for name := range tx.removed {
			delete(p.programmed, name)
			if _, ok := tx.plans[name]; !ok {
				p.releaseID(name)
			}
		}
		maps.Copy(p.programmed, tx.plans)
		maps.Copy(p.shared, newShared)
		for a, d := range hairpinDelta {
			if p.hairpinRefs[a] += d; p.hairpinRefs[a] <= 0 {
				delete(p.hairpinRefs, a)
			}
		}
	}
	p.needFull = false
	p.flushStaleUDP(snap)
	return nil
}

func (p *Proxier) releaseID(name proxy.ServicePortName) {
	if id, ok := p.ids[name]; ok {
		delete(p.ids, name)
		p.freeID = append(p.freeID, id)
	}
}

func sortedAddrs(m map[netip.Addr]int) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// baseChains are the fixed chains: hooks and dispatch.
type baseChain struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority *nftables.ChainPriority
}

func (p *Proxier) baseChains() ([]baseChain, map[string][]rule) {
	f := p.family
	d := p.sets()
	prio := func(v int32) *nftables.ChainPriority { pr := nftables.ChainPriority(v); return &pr }
	chains := []baseChain{
		{name: chainMark}, {name: chainMasquerading}, {name: chainServices}, {name: chainReject}, {name: chainRejectCheck},
		// Rejects run before DNAT (priority dstnat-10) so they see the Service address.
		{name: "filter-prerouting", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookPrerouting, priority: prio(-110)},
		{name: "filter-output", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookOutput, priority: prio(-110)},
		{name: "nat-prerouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPrerouting, priority: prio(-100)},
		{name: "nat-output", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookOutput, priority: prio(-100)},
		{name: "nat-postrouting", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting, priority: prio(100)},
	}
	rules := map[string][]rule{
		chainMark:         {ruleSetMark()},
		chainMasquerading: {ruleMasqueradeMarked(), ruleMasqueradeHairpin(f, d.hairpin)},
		chainServices:     {ruleServiceIPs(f, d.serviceIPs, false), ruleNodePorts(f, d.nodePortIPs, d.nodePorts, false)},
		chainReject:       {ruleReject(f, true), ruleReject(f, false)},
		chainRejectCheck:  {ruleServiceIPs(f, d.noEPIPs, true), ruleNodePorts(f, d.nodePortIPs, d.noEPNodePorts, true)},
		// Rejecting only new flows keeps the per-packet cost of established traffic at one
		// conntrack lookup, and lets a connection that is already open finish on its old
		// endpoint while the Service has none for newcomers.
		"filter-prerouting": {ruleNewJump(vJump, chainRejectCheck)},
		"filter-output":     {ruleNewJump(vJump, chainRejectCheck)},
		"nat-prerouting":    {ruleJump(vJump, chainServices)},
		"nat-output":        {ruleJump(vJump, chainServices)},
		"nat-postrouting":   {ruleJump(vJump, chainMasquerading)},
	}
	return chains, rules
}

// commands renders the programmed table as one nft command per rule and element, sorted;
// tests look for single lines in it. Dump (render.go) is the listing-shaped view.
func (p *Proxier) commands() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.renderCommands(p.programmed)
}

func (p *Proxier) renderCommands(plans map[proxy.ServicePortName]*servicePlan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s\n", p.family.name, TableName)
	bases, baseRules := p.baseChains()
	for _, c := range bases {
		if c.hook != nil {
			fmt.Fprintf(&b, "chain %s { type %s hook %s priority %d }\n", c.name, c.typ, hookName(c.hook), *c.priority)
		}
	}
	var lines []string
	for _, c := range bases {
		for _, r := range baseRules[c.name] {
			lines = append(lines, fmt.Sprintf("add rule %s %s", c.name, r.text))
		}
	}
	b.WriteString(strings.Join(lines, "\n") + "\n")
	lines = lines[:0]
	var elems []string
	shared := map[string]sharedChain{}
	for _, pl := range plans {
		for _, c := range pl.shared {
			shared[c.name()] = c
		}
	}
	for name, c := range shared {
		for _, r := range p.sharedRules(c) {
			lines = append(lines, fmt.Sprintf("add rule %s %s", name, r.text))
		}
	}
	for _, pl := range plans {
		for _, c := range pl.chains {
			for _, r := range c.rules {
				lines = append(lines, fmt.Sprintf("add rule %s %s", c.name, r.text))
			}
		}
		for k, v := range pl.serviceIPs {
			elems = append(elems, fmt.Sprintf("add element %s { %s . %s . %d : %s }", mapServiceIPs, k.ip, protoName(k.proto), k.port, v))
		}
		for k, v := range pl.noEndpointIP {
			elems = append(elems, fmt.Sprintf("add element %s { %s . %s . %d : %s }", mapNoEndpointIPs, k.ip, protoName(k.proto), k.port, v))
		}
		for k, v := range pl.nodePorts {
			elems = append(elems, fmt.Sprintf("add element %s { %s . %d : %s }", mapServiceNodePort, protoName(k.proto), k.port, v))
		}
		for set, m := range map[string]map[ipProtoPort][]netip.AddrPort{mapEndpoints: pl.endpoints, mapShortCircuit: pl.shortCircuit} {
			for fe, targets := range m {
				for i, t := range targets {
					elems = append(elems, fmt.Sprintf("add element %s { %s . %s . %d . %d : %s . %d }", set, fe.ip, protoName(fe.proto), fe.port, i, t.Addr(), t.Port()))
				}
			}
		}
		for id, chains := range pl.endpointChains {
			for i, c := range chains {
				elems = append(elems, fmt.Sprintf("add element %s { %#x . %d : goto %s }", mapEndpointChains, id, i, c))
			}
		}
		for k, v := range pl.noEndpointNP {
			elems = append(elems, fmt.Sprintf("add element %s { %s . %d : %s }", mapNoEndpointNodeP, protoName(k.proto), k.port, v))
		}
	}
	// Rules keep their order within a chain; chains are sorted by name.
	sort.SliceStable(lines, func(i, j int) bool { return chainOf(lines[i]) < chainOf(lines[j]) })
	sort.Strings(elems)
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	for _, e := range elems {
		b.WriteString(e + "\n")
	}
	for _, a := range p.cfg.NodePortAddresses {
		fmt.Fprintf(&b, "add element %s { %s }\n", setNodePortIPs, a)
	}
	hairpin := map[netip.Addr]int{}
	for _, pl := range plans {
		for _, a := range pl.hairpin {
			hairpin[a]++
		}
	}
	for _, a := range sortedAddrs(hairpin) {
		fmt.Fprintf(&b, "add element %s { %s . %s }\n", setHairpin, a, a)
	}
	return b.String()
}

func chainOf(line string) string { return strings.Fields(line)[2] }

func hookName(h *nftables.ChainHook) string {
	switch *h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	}
	return fmt.Sprint(*h)
}

// hasAnyUsable reports whether the Service has a usable endpoint on any node.
func hasAnyUsable(eps []*proxy.Endpoint) bool {
	_, all, _ := proxy.UsableEndpoints(&proxy.ServicePort{}, eps)
	return len(all) > 0
}
