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
type Proxier struct {
	cfg    Config
	family family
	kernel Kernel

	mu sync.Mutex // guards the fields below against Dump from other goroutines
	// programmed is what the kernel holds per ServicePort, to remove exactly that later.
	programmed map[proxy.ServicePortName]*servicePlan
	needFull   bool
	// lastText is the rendered ruleset of the last full sync plus partial updates, for Dump.
	// ids number the ServicePorts for the keys of @endpoints and @endpoint-chains.
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
		ids: map[proxy.ServicePortName]uint32{}}
}

// servicePlan is everything one ServicePort puts in the kernel.
type servicePlan struct {
	chains       []*chainPlan // in creation order; jump targets before their users
	serviceIPs   map[ipProtoPort]string
	nodePorts    map[protoPort]string
	noEndpointIP map[ipProtoPort]string
	noEndpointNP map[protoPort]string
	affinitySets []*nftables.Set
	hairpin      []netip.Addr
	// endpoints and endpointChains are this ServicePort's elements of @endpoints and
	// @endpoint-chains: index → target, index → chain, under the port's id.
	id             uint32
	endpoints      []netip.AddrPort
	endpointChains []string
}

type chainPlan struct {
	name  string
	rules []rule
}

func (p *Proxier) endpointMaps() (endpoints, endpointChains *nftables.Set) {
	idIdx, _ := nftables.ConcatSetType(nftables.TypeInteger, nftables.TypeInteger)
	target, _ := nftables.ConcatSetType(p.family.addrType, nftables.TypeInetService)
	endpoints = &nftables.Set{Name: mapEndpoints, IsMap: true, KeyType: idIdx, DataType: target, Concatenation: true}
	endpointChains = &nftables.Set{Name: mapEndpointChains, IsMap: true, KeyType: idIdx, DataType: nftables.TypeVerdict, Concatenation: true}
	return
}

func (p *Proxier) sets() (serviceIPs, nodePorts, noEPIPs, noEPNodePorts, nodePortIPs, hairpin *nftables.Set) {
	f := p.family
	ippp, _ := nftables.ConcatSetType(f.addrType, nftables.TypeInetProto, nftables.TypeInetService)
	pp, _ := nftables.ConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	ipip, _ := nftables.ConcatSetType(f.addrType, f.addrType)
	serviceIPs = &nftables.Set{Name: mapServiceIPs, IsMap: true, KeyType: ippp, DataType: nftables.TypeVerdict, Concatenation: true}
	nodePorts = &nftables.Set{Name: mapServiceNodePort, IsMap: true, KeyType: pp, DataType: nftables.TypeVerdict, Concatenation: true}
	noEPIPs = &nftables.Set{Name: mapNoEndpointIPs, IsMap: true, KeyType: ippp, DataType: nftables.TypeVerdict, Concatenation: true}
	noEPNodePorts = &nftables.Set{Name: mapNoEndpointNodeP, IsMap: true, KeyType: pp, DataType: nftables.TypeVerdict, Concatenation: true}
	nodePortIPs = &nftables.Set{Name: setNodePortIPs, KeyType: f.addrType}
	hairpin = &nftables.Set{Name: setHairpin, KeyType: ipip, Concatenation: true}
	return
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

// plan computes what one ServicePort needs.
func (p *Proxier) plan(sp *proxy.ServicePort, eps []*proxy.Endpoint) *servicePlan {
	f := p.family
	h := sp.Name.ShortHash()
	proto := protoNumber(sp.Protocol)
	cluster, external, _ := proxy.UsableEndpoints(sp, eps)
	epMap, epChainMap := p.endpointMaps()
	id := p.idOf(sp.Name)
	pl := &servicePlan{id: id, serviceIPs: map[ipProtoPort]string{}, nodePorts: map[protoPort]string{},
		noEndpointIP: map[ipProtoPort]string{}, noEndpointNP: map[protoPort]string{}}

	epChains := map[netip.AddrPort]string{}
	var affinity map[netip.AddrPort]*nftables.Set
	if sp.StickyTimeout > 0 {
		affinity = map[netip.AddrPort]*nftables.Set{}
	}
	// selection appends the rules choosing among eps.
	selection := func(eps []*proxy.Endpoint) []rule {
		if len(eps) == 0 {
			return nil // the filter chains reject or drop first
		}
		if affinity == nil {
			targets := make([]netip.AddrPort, len(eps))
			for i, e := range eps {
				targets[i] = e.AddrPort()
			}
			if len(targets) == 1 {
				return []rule{ruleDNAT(f, targets, 0, nil)}
			}
			// Cluster and external selections may differ (eTP Local): each gets its own
			// range of indexes under the port's id.
			base := uint32(len(pl.endpoints))
			pl.endpoints = append(pl.endpoints, targets...)
			return []rule{ruleDNATRange(f, targets, id, base, epMap)}
		}
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
				affinity[ap] = set
				pl.affinitySets = append(pl.affinitySets, set)
				pl.chains = append(pl.chains, &chainPlan{name: name, rules: []rule{
					ruleAffinityUpdate(f, set, sp.StickyTimeout),
					ruleDNAT(f, []netip.AddrPort{ap}, 0, nil),
				}})
				epChains[ap] = name
			}
			rules = append(rules, ruleAffinityCheck(f, affinity[ap], name))
			chains = append(chains, name)
		}
		base := uint32(len(pl.endpointChains))
		pl.endpointChains = append(pl.endpointChains, chains...)
		return append(rules, ruleNumgenGotoRange(chains, id, base, epChainMap))
	}

	svcChain := "svc-" + h
	masq := ruleJump(vJump, chainMark)
	if p.cfg.ClusterCIDR.IsValid() {
		masq = ruleSaddrPrefix(f, p.cfg.ClusterCIDR, true, vJump, chainMark)
	}
	pl.chains = append(pl.chains, &chainPlan{name: svcChain, rules: append([]rule{masq}, selection(cluster)...)})
	if sp.ClusterIP.IsValid() {
		k := ipProtoPort{sp.ClusterIP, proto, uint16(sp.Port)}
		if len(cluster) > 0 {
			pl.serviceIPs[k] = "goto " + svcChain
		} else {
			pl.noEndpointIP[k] = "goto " + chainReject
		}
	}
	for _, e := range cluster {
		pl.hairpin = append(pl.hairpin, e.IP)
	}
	if sp.ExternallyAccessible() {
		extChain := "ext-" + h
		var rules []rule
		if !sp.ExternalPolicyLocal {
			rules = append(rules, ruleJump(vJump, chainMark))
			if slices.Equal(external, cluster) {
				rules = append(rules, ruleJump(vGoto, svcChain))
			} else {
				rules = append(rules, selection(external)...)
			}
		} else {
			// eTP Local keeps the client address, so no mark. Pods and the node itself are
			// not "external" (upstream's short-circuit): they go the cluster way.
			if p.cfg.ClusterCIDR.IsValid() {
				rules = append(rules, ruleSaddrPrefix(f, p.cfg.ClusterCIDR, false, vGoto, svcChain))
			}
			rules = append(rules, ruleSrcLocal(vJump, chainMark), ruleSrcLocal(vGoto, svcChain))
			rules = append(rules, selection(external)...)
		}
		pl.chains = append(pl.chains, &chainPlan{name: extChain, rules: rules})
		// With no usable endpoint: reject if there is none at all; with eTP Local and
		// endpoints elsewhere, drop, so the load balancer's health check moves traffic away
		// rather than the client seeing a refusal.
		noEP := "goto " + chainReject
		if len(cluster) > 0 || hasAnyUsable(eps) {
			noEP = "drop"
		}
		addrs := append(slices.Clone(sp.ExternalIPs), sp.LoadBalancerIPs...)
		for _, a := range addrs {
			k := ipProtoPort{a, proto, uint16(sp.Port)}
			if len(external) > 0 {
				pl.serviceIPs[k] = "goto " + extChain
			} else {
				pl.noEndpointIP[k] = noEP
			}
		}
		if sp.NodePort != 0 {
			k := protoPort{proto, uint16(sp.NodePort)}
			if len(external) > 0 {
				pl.nodePorts[k] = "goto " + extChain
			} else {
				pl.noEndpointNP[k] = noEP
			}
		}
	}
	return pl
}

// transaction is one atomic batch for the kernel.
type transaction struct {
	full bool
	// For a partial sync: plans removed and added (changed Services appear in both).
	removed, added map[proxy.ServicePortName]*servicePlan
	// For a full sync: every plan.
	plans map[proxy.ServicePortName]*servicePlan
	// nodePortIPs and the hairpin set are rewritten whole on every sync: small.
	nodePortIPs []netip.Addr
	// hairpin is the whole set on a full sync; hairpinDel the elements to remove on a
	// partial one (hairpin then holds those to add).
	hairpin, hairpinDel []netip.Addr
}

// Sync programs the Snapshot: only the changed ServicePorts, or everything when full or
// after a failure. It is the only writer of the table.
func (p *Proxier) Sync(snap *proxy.Snapshot, full bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	full = full || p.needFull
	tx := &transaction{full: full, nodePortIPs: p.cfg.NodePortAddresses}
	next := p.programmed
	if full {
		next = make(map[proxy.ServicePortName]*servicePlan, len(snap.Services))
		for name, sp := range snap.Services {
			next[name] = p.plan(sp, snap.Endpoints[name])
		}
		tx.plans = next
	} else {
		tx.removed = map[proxy.ServicePortName]*servicePlan{}
		tx.added = map[proxy.ServicePortName]*servicePlan{}
		for name := range snap.Changed {
			if old, ok := p.programmed[name]; ok {
				tx.removed[name] = old
			}
			if sp, ok := snap.Services[name]; ok {
				tx.added[name] = p.plan(sp, snap.Endpoints[name])
			}
		}
	}
	refs := p.hairpinRefs
	if full {
		refs = map[netip.Addr]int{}
		for _, pl := range next {
			for _, a := range pl.hairpin {
				refs[a]++
			}
		}
		tx.hairpin = sortedAddrs(refs)
	} else {
		refs = maps.Clone(refs)
		for _, pl := range tx.removed {
			for _, a := range pl.hairpin {
				if refs[a]--; refs[a] <= 0 {
					delete(refs, a)
				}
			}
		}
		for _, pl := range tx.added {
			for _, a := range pl.hairpin {
				refs[a]++
			}
		}
		for a := range p.hairpinRefs {
			if _, ok := refs[a]; !ok {
				tx.hairpinDel = append(tx.hairpinDel, a)
			}
		}
		for a := range refs {
			if _, ok := p.hairpinRefs[a]; !ok {
				tx.hairpin = append(tx.hairpin, a)
			}
		}
	}
	if err := p.kernel.Apply(tx); err != nil {
		p.needFull = true
		return err
	}
	if !full {
		for name := range tx.removed {
			delete(next, name)
			if _, ok := tx.added[name]; !ok {
				p.releaseID(name)
			}
		}
		for name, pl := range tx.added {
			next[name] = pl
		}
	} else {
		for name := range p.ids {
			if _, ok := next[name]; !ok {
				p.releaseID(name)
			}
		}
	}
	p.programmed = next
	p.hairpinRefs = refs
	p.needFull = false
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

func hairpinOf(all, removed, added map[proxy.ServicePortName]*servicePlan) []netip.Addr {
	seen := map[netip.Addr]bool{}
	for name, pl := range all {
		if _, gone := removed[name]; gone {
			continue
		}
		for _, a := range pl.hairpin {
			seen[a] = true
		}
	}
	for _, pl := range added {
		for _, a := range pl.hairpin {
			seen[a] = true
		}
	}
	out := make([]netip.Addr, 0, len(seen))
	for a := range seen {
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
	sIPs, sNP, nIPs, nNP, npIPs, hp := p.sets()
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
		chainMark:           {ruleSetMark()},
		chainMasquerading:   {ruleMasqueradeMarked(), ruleMasqueradeHairpin(f, hp)},
		chainServices:       {ruleServiceIPs(f, sIPs, false), ruleNodePorts(f, npIPs, sNP, false)},
		chainReject:         {ruleReject(f, true), ruleReject(f, false)},
		chainRejectCheck:    {ruleServiceIPs(f, nIPs, true), ruleNodePorts(f, npIPs, nNP, true)},
		"filter-prerouting": {ruleJump(vJump, chainRejectCheck)},
		"filter-output":     {ruleJump(vJump, chainRejectCheck)},
		"nat-prerouting":    {ruleJump(vJump, chainServices)},
		"nat-output":        {ruleJump(vJump, chainServices)},
		"nat-postrouting":   {ruleJump(vJump, chainMasquerading)},
	}
	return chains, rules
}

// Dump renders the whole programmed table as nft-like text, sorted, for tests and debugging.
func (p *Proxier) Dump() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.render(p.programmed)
}

func (p *Proxier) render(plans map[proxy.ServicePortName]*servicePlan) string {
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
		for i, t := range pl.endpoints {
			elems = append(elems, fmt.Sprintf("add element %s { %#x . %d : %s . %d }", mapEndpoints, pl.id, i, t.Addr(), t.Port()))
		}
		for i, c := range pl.endpointChains {
			elems = append(elems, fmt.Sprintf("add element %s { %#x . %d : goto %s }", mapEndpointChains, pl.id, i, c))
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
	for _, a := range hairpinOf(plans, nil, nil) {
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
