package nftables

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A packet tracer over the rules' eval views: it walks the first packet of a flow through
// the hooks our table attaches to, the way the kernel would (filter before NAT, then DNAT,
// then source NAT after routing), and reports what becomes of it. Random choices (numgen)
// are followed on every branch, so the outcome lists every endpoint the flow may reach.
// Affinity sets are taken as empty: a first packet.
//
// Addresses (besides those in helpers_test.go): a Pod of this node at 10.244.1.50, the
// outside client 10.250.0.200 and a denied one 10.250.0.201, an address that is not one of
// the node's NodePort addresses 10.250.0.99.

// flow is the first packet of a connection as the node sees it.
type flow struct {
	src, dst string
	proto    uint8
	dport    uint16
	// onNode: sent by a process of the node itself (output hooks, not prerouting).
	onNode bool
}

// outcome is what became of a flow: "accept" (left alone: no Service of ours), "drop",
// "reject", or "dnat" to each possible target, each with whether its source is
// masqueraded.
type outcome struct {
	verdict string
	targets []target
}

type target struct {
	to         netip.AddrPort
	masquerade bool
}

func (o outcome) String() string {
	if o.verdict != "dnat" {
		return o.verdict
	}
	var parts []string
	for _, t := range o.targets {
		s := t.to.String()
		if t.masquerade {
			s += " masquerade"
		}
		parts = append(parts, s)
	}
	return "dnat " + strings.Join(parts, ", ")
}

// tracerTables fills the tracer's view of the named sets from what p has programmed.
func tracerTables(p *Proxier) (map[string][]rule, *tables) {
	chains := map[string][]rule{}
	_, base := p.baseChains()
	for name, rules := range base {
		chains[name] = rules
	}
	for name, c := range p.shared {
		chains[name] = p.sharedRules(c)
	}
	tbl := &tables{serviceIPs: map[ipProtoPort]string{}, noEndpointIPs: map[ipProtoPort]string{},
		nodePorts: map[protoPort]string{}, noEndpointNodePort: map[protoPort]string{}, nodePortIPs: map[netip.Addr]bool{},
		hairpin: map[netip.Addr]bool{}, endpoints: map[ipProtoPort][]netip.AddrPort{}, shortCircuit: map[ipProtoPort][]netip.AddrPort{}}
	for _, a := range p.cfg.NodePortAddresses {
		tbl.nodePortIPs[a] = true
	}
	for _, pl := range p.programmed {
		for _, c := range pl.chains {
			chains[c.name] = c.rules
		}
		for k, v := range pl.serviceIPs {
			tbl.serviceIPs[k] = v
		}
		for k, v := range pl.noEndpointIP {
			tbl.noEndpointIPs[k] = v
		}
		for k, v := range pl.nodePorts {
			tbl.nodePorts[k] = v
		}
		for k, v := range pl.noEndpointNP {
			tbl.noEndpointNodePort[k] = v
		}
		for k, v := range pl.endpoints {
			tbl.endpoints[k] = v
		}
		for k, v := range pl.shortCircuit {
			tbl.shortCircuit[k] = v
		}
		for _, a := range pl.hairpin {
			tbl.hairpin[a] = true
		}
	}
	return chains, tbl
}

// tracePacket runs the flow through the hooks and returns its outcome.
func tracePacket(t *testing.T, p *Proxier, f flow, localAddrs []netip.Addr) outcome {
	t.Helper()
	chains, tbl := tracerTables(p)
	pkt := packet{src: netip.MustParseAddr(f.src), dst: netip.MustParseAddr(f.dst), proto: f.proto, dport: f.dport}
	pkt.srcIsLocal = slices.Contains(localAddrs, pkt.src)
	filterHook, natHook := "filter-prerouting", "nat-prerouting"
	if f.onNode {
		filterHook, natHook = "filter-output", "nat-output"
	}
	for _, r := range walkChain(t, chains, tbl, filterHook, pkt) {
		switch r.kind {
		case vDrop:
			return outcome{verdict: "drop"}
		case vReject:
			return outcome{verdict: "reject"}
		}
	}
	var out outcome
	for _, r := range walkChain(t, chains, tbl, natHook, pkt) {
		switch r.kind {
		case vDrop:
			return outcome{verdict: "drop"}
		case vReject:
			return outcome{verdict: "reject"}
		case vDNAT:
			out.verdict = "dnat"
			for _, to := range r.pkt.dnatTargets {
				// Source NAT happens after routing, on the translated packet.
				after := r.pkt
				after.dst = to.Addr()
				masq := false
				for _, pr := range walkChain(t, chains, tbl, "nat-postrouting", after) {
					masq = masq || pr.kind == vMasquerade
				}
				out.targets = append(out.targets, target{to: to, masquerade: masq})
			}
		}
	}
	if out.verdict == "" {
		return outcome{verdict: "accept"}
	}
	slices.SortFunc(out.targets, func(a, b target) int { return a.to.Compare(b.to) })
	out.targets = slices.Compact(out.targets)
	return out
}

type traceResult struct {
	kind verdictKind
	pkt  packet
}

// walkChain evaluates chain for pkt as nf_tables does (jump returns, goto does not, the end
// of a base chain accepts) and returns every terminal result, one per random branch.
func walkChain(t *testing.T, chains map[string][]rule, tbl *tables, hook string, pkt packet) []traceResult {
	t.Helper()
	type frame struct {
		chain string
		next  int
	}
	var results []traceResult
	var walk func(chain string, i int, stack []frame, pkt packet, depth int)
	walk = func(chain string, i int, stack []frame, pkt packet, depth int) {
		if depth > 64 {
			t.Fatalf("trace from %s loops", hook)
		}
		for {
			rules, ok := chains[chain]
			if !ok {
				t.Fatalf("trace from %s reached a missing chain %q", hook, chain)
			}
			if i >= len(rules) {
				if len(stack) == 0 {
					results = append(results, traceResult{vAccept, pkt})
					return
				}
				f := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				chain, i = f.chain, f.next
				continue
			}
			r := rules[i]
			matched, kind, next := r.eval(&pkt, tbl)
			i++
			if !matched {
				continue
			}
			switch kind {
			case vJump:
				stack = append(slices.Clone(stack), frame{chain, i})
				chain, i = next, 0
			case vGoto:
				if len(r.branches) > 0 {
					for _, b := range r.branches {
						p := pkt
						p.dnatTargets = slices.Clone(pkt.dnatTargets)
						walk(b, 0, slices.Clone(stack), p, depth+1)
					}
					return
				}
				chain, i = next, 0
			case vReturn:
				i = len(rules)
			case vContinue:
			default:
				// accept, drop, reject, DNAT and masquerade end the hook.
				results = append(results, traceResult{kind, pkt})
				return
			}
		}
	}
	walk(hook, 0, nil, pkt, 0)
	return results
}

func TestPacketFlows(t *testing.T) {
	const (
		tcp  = unix.IPPROTO_TCP
		udp  = unix.IPPROTO_UDP
		pod  = "10.244.1.50"
		node = "10.250.0.11"
		ext  = "10.250.0.200"
	)
	localAddrs := []netip.Addr{netip.MustParseAddr(node)}
	cases := map[string]*Proxier{}
	for _, c := range rulesetCases() {
		p := NewProxier(testConfig(), &recorder{})
		if err := p.Sync(c.tracker().Snapshot(), true); err != nil {
			t.Fatal(err)
		}
		cases[c.name] = p
	}
	for _, tc := range []struct {
		name, ruleset string
		flow          flow
		want          string
	}{
		// ClusterIPs.
		{"ClusterIP from a Pod: any endpoint, client address kept", "clusterip",
			flow{pod, "10.96.0.3", tcp, 80, false}, "dnat 10.244.1.3:8080, 10.244.2.3:8080, 10.244.3.3:8080"},
		{"ClusterIP from the node: masqueraded", "clusterip",
			flow{node, "10.96.0.3", tcp, 80, true}, "dnat 10.244.1.3:8080 masquerade, 10.244.2.3:8080 masquerade, 10.244.3.3:8080 masquerade"},
		{"ClusterIP with one endpoint", "clusterip",
			flow{pod, "10.96.0.1", tcp, 80, false}, "dnat 10.244.2.1:8080"},
		{"UDP ClusterIP", "clusterip", flow{pod, "10.96.0.10", udp, 53, false}, "dnat 10.244.2.10:5353"},
		{"a port the Service does not have passes untouched", "clusterip", flow{pod, "10.96.0.3", tcp, 81, false}, "accept"},
		{"a protocol the Service does not have passes untouched", "clusterip", flow{pod, "10.96.0.10", tcp, 53, false}, "accept"},
		{"an address that is no Service passes untouched", "clusterip", flow{pod, "10.96.0.99", tcp, 80, false}, "accept"},
		{"no endpoints: TCP reset", "clusterip", flow{pod, "10.96.0.4", tcp, 80, false}, "reject"},
		{"no endpoints from the node too", "clusterip", flow{node, "10.96.0.4", tcp, 80, true}, "reject"},

		// NodePorts and external IPs.
		{"NodePort from outside: masqueraded", "nodeport-externalips",
			flow{ext, node, tcp, 30080, false}, "dnat 10.244.1.5:8080 masquerade, 10.244.2.5:8080 masquerade"},
		{"NodePort on an address not in --nodeport-addresses passes untouched", "nodeport-externalips",
			flow{ext, "10.250.0.99", tcp, 30080, false}, "accept"},
		{"NodePort on another protocol passes untouched", "nodeport-externalips",
			flow{ext, node, udp, 30080, false}, "accept"},
		{"NodePort without endpoints rejects", "nodeport-externalips", flow{ext, node, tcp, 30081, false}, "reject"},
		{"external IP from outside: masqueraded", "nodeport-externalips",
			flow{ext, "192.0.2.6", tcp, 80, false}, "dnat 10.244.2.6:8080 masquerade"},
		{"hairpin: a Pod reaching itself is masqueraded, the other endpoint is not", "nodeport-externalips",
			flow{"10.244.1.5", "10.96.0.5", tcp, 80, false}, "dnat 10.244.1.5:8080 masquerade, 10.244.2.5:8080"},

		// loadBalancerSourceRanges.
		{"LB IP from an allowed source", "loadbalancer-source-ranges",
			flow{ext, "10.251.0.2", tcp, 80, false}, "dnat 10.244.1.20:8080 masquerade"},
		{"LB IP from a source outside the ranges is dropped", "loadbalancer-source-ranges",
			flow{"10.250.0.201", "10.251.0.2", tcp, 80, false}, "drop"},
		{"the NodePort of a ranged Service is not filtered", "loadbalancer-source-ranges",
			flow{"10.250.0.201", node, tcp, 30090, false}, "dnat 10.244.1.20:8080 masquerade"},

		// ClientIP affinity (a first packet: any endpoint).
		{"affinity ClusterIP from a Pod", "client-ip-affinity",
			flow{pod, "10.96.0.9", tcp, 80, false}, "dnat 10.244.1.9:8080, 10.244.2.9:8080"},
		{"affinity NodePort from outside", "client-ip-affinity",
			flow{ext, node, tcp, 30090, false}, "dnat 10.244.1.9:8080 masquerade, 10.244.2.9:8080 masquerade"},

		// Traffic policies.
		{"eTP Local from outside: only the local endpoint, client address kept", "traffic-policy-local",
			flow{ext, "10.251.0.1", tcp, 80, false}, "dnat 10.244.1.7:8080"},
		{"eTP Local NodePort from outside", "traffic-policy-local",
			flow{ext, node, tcp, 30081, false}, "dnat 10.244.1.7:8080"},
		{"eTP Local from a Pod: short-circuit to every endpoint", "traffic-policy-local",
			flow{pod, "10.251.0.1", tcp, 80, false}, "dnat 10.244.1.7:8080, 10.244.2.7:8080"},
		{"eTP Local from the node: every endpoint, masqueraded", "traffic-policy-local",
			flow{node, "10.251.0.1", tcp, 80, true}, "dnat 10.244.1.7:8080 masquerade, 10.244.2.7:8080 masquerade"},
		{"eTP Local from outside on a node without local endpoints is dropped", "traffic-policy-local",
			flow{ext, node, tcp, 30082, false}, "drop"},
		{"eTP Local without local endpoints: the ClusterIP still uses every endpoint", "traffic-policy-local",
			flow{pod, "10.96.0.8", tcp, 80, false}, "dnat 10.244.2.8:8080"},
		{"iTP Local: only this node's endpoint", "traffic-policy-local",
			flow{pod, "10.96.0.11", tcp, 80, false}, "dnat 10.244.1.11:8080"},
		{"iTP Local without local endpoints rejects", "traffic-policy-local",
			flow{pod, "10.96.0.12", tcp, 80, false}, "reject"},

		// Terminating endpoints.
		{"only terminating endpoints: they serve", "terminating-only",
			flow{pod, "10.96.0.13", tcp, 80, false}, "dnat 10.244.2.13:8080, 10.244.3.13:8080"},
		{"a ready endpoint beside a terminating one: only the ready", "terminating-only",
			flow{pod, "10.96.0.14", tcp, 80, false}, "dnat 10.244.2.15:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := cases[tc.ruleset]
			if p == nil {
				t.Fatalf("no ruleset case %q", tc.ruleset)
			}
			if got := tracePacket(t, p, tc.flow, localAddrs).String(); got != tc.want {
				t.Errorf("%s:%d/%d from %s: got %q, want %q", tc.flow.dst, tc.flow.dport, tc.flow.proto, tc.flow.src, got, tc.want)
			}
		})
	}
}

// A Service that loses its last endpoint rejects new connections, but the packets of one
// already open pass the filter hooks untouched: conntrack, not our rules, decides their fate.
func TestRejectOnlyNewFlows(t *testing.T) {
	var c rulesetCase
	for _, rc := range rulesetCases() {
		if rc.name == "clusterip" {
			c = rc
		}
	}
	p := NewProxier(testConfig(), &recorder{})
	if err := p.Sync(c.tracker().Snapshot(), true); err != nil {
		t.Fatal(err)
	}
	for _, hook := range []string{"filter-prerouting", "filter-output"} {
		for _, established := range []bool{false, true} {
			pkt := packet{src: netip.MustParseAddr("10.244.1.50"), dst: netip.MustParseAddr("10.96.0.4"),
				proto: unix.IPPROTO_TCP, dport: 80, established: established}
			want := vReject
			if established {
				want = vAccept
			}
			if got := trace(t, p, hook, pkt); got != want {
				t.Errorf("%s, established=%v: verdict %v, want %v", hook, established, got, want)
			}
		}
	}
}
