package nftables

import (
	"encoding/binary"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The rule vocabulary. Every rule the proxier generates is built by one of the constructors
// below, each of which produces three views of the same rule: the nft text (tests, debugging,
// `svcplane proxy --dump`), the netlink expressions the kernel receives, and an evaluator for
// our packet tracer. Keeping the three in one place is what keeps them in agreement; the
// kernel test TestKernelListingMatchesDump checks the text against `nft list` of what we sent.

// masqueradeBit is the packet mark meaning "masquerade this in postrouting" (kube-proxy's).
const masqueradeBit = 0x4000

// Registers: NFT_REG_1 (16 bytes) holds keys; concatenations use its 32-bit slots 8, 9, 10...
const (
	reg1   = unix.NFT_REG_1
	reg2   = unix.NFT_REG_2
	reg32a = unix.NFT_REG32_00
)

type verdictKind int

const (
	vContinue verdictKind = iota
	vJump
	vGoto
	vReturn
	vAccept
	vDrop
	vReject
	vDNAT
	vMasquerade
)

// packet is what the tracer knows of a packet: enough to evaluate every rule we generate.
type packet struct {
	src, dst    netip.Addr
	proto       uint8
	dport       uint16
	srcIsLocal  bool // fib saddr type local
	established bool // conntrack already tracks the flow (ct state is not new)
	mark        uint32
	dnatTargets []netip.AddrPort
}

// anonSet is a constant anonymous set (or map) bound to one rule.
type anonSet struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

type rule struct {
	text string
	anon []anonSet
	// build returns the expressions, once the anonymous sets have IDs.
	build func(anon []*nftables.Set) []expr.Any
	// eval returns whether the rule matched and its verdict; it may change p (mark, dnat).
	eval func(p *packet, t *tables) (bool, verdictKind, string)
	// branches, when set, are every chain a matching rule may go to (a random choice):
	// the tracer follows each, eval's verdict names only the first.
	branches []string
}

// tables gives the tracer the named sets the rules look into.
type tables struct {
	serviceIPs, noEndpointIPs     map[ipProtoPort]string // value: verdict text "goto X" / "drop"
	nodePorts, noEndpointNodePort map[protoPort]string
	nodePortIPs                   map[netip.Addr]bool
	hairpin                       map[netip.Addr]bool
	// endpoints and shortCircuit are @endpoints and @short-circuit: frontend → targets.
	endpoints, shortCircuit map[ipProtoPort][]netip.AddrPort
}

type ipProtoPort struct {
	ip    netip.Addr
	proto uint8
	port  uint16
}

type protoPort struct {
	proto uint8
	port  uint16
}

func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	}
	return fmt.Sprint(p)
}

func parseVerdict(v string) (verdictKind, string) {
	switch {
	case strings.HasPrefix(v, "goto "):
		return vGoto, v[5:]
	case strings.HasPrefix(v, "jump "):
		return vJump, v[5:]
	case v == "drop":
		return vDrop, ""
	}
	return vContinue, ""
}

func verdictExpr(kind verdictKind, chain string) *expr.Verdict {
	switch kind {
	case vJump:
		return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}
	case vGoto:
		return &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}
	case vReturn:
		return &expr.Verdict{Kind: expr.VerdictReturn}
	case vDrop:
		return &expr.Verdict{Kind: expr.VerdictDrop}
	}
	return &expr.Verdict{Kind: expr.VerdictAccept}
}

func verdictText(kind verdictKind, chain string) string {
	switch kind {
	case vJump:
		return "jump " + chain
	case vGoto:
		return "goto " + chain
	case vReturn:
		return "return"
	case vDrop:
		return "drop"
	}
	return "accept"
}

// family-dependent payload offsets.
type family struct {
	nfproto  byte
	addrLen  uint32
	srcOff   uint32
	dstOff   uint32
	addrType nftables.SetDatatype
	name     string // "ip" or "ip6"
}

var ipv4 = family{nfproto: unix.NFPROTO_IPV4, addrLen: 4, srcOff: 12, dstOff: 16, addrType: nftables.TypeIPAddr, name: "ip"}
var ipv6 = family{nfproto: unix.NFPROTO_IPV6, addrLen: 16, srcOff: 8, dstOff: 24, addrType: nftables.TypeIP6Addr, name: "ip6"}

// keyReg returns the 32-bit register slot after a value of n bytes starting at reg (concat
// components are padded to 4 bytes).
func nextReg(reg, n uint32) uint32 { return reg + (n+3)/4 }

func loadSaddr(f family, reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: f.srcOff, Len: f.addrLen}
}
func loadDaddr(f family, reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: f.dstOff, Len: f.addrLen}
}
func loadL4proto(reg uint32) expr.Any { return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg} }
func loadDport(reg uint32) expr.Any {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

// pad4 pads b to a multiple of 4 bytes, as concatenated set keys are laid out.
func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func portBytes(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }

// ruleJump is an unconditional jump/goto.
func ruleJump(kind verdictKind, chain string) rule {
	return rule{
		text:  verdictText(kind, chain),
		build: func([]*nftables.Set) []expr.Any { return []expr.Any{verdictExpr(kind, chain)} },
		eval:  func(*packet, *tables) (bool, verdictKind, string) { return true, kind, chain },
	}
}

// ruleNewJump: `ct state new jump|goto CHAIN` — only a flow's first packet is checked; later
// ones follow the decision conntrack already made for it.
func ruleNewJump(kind verdictKind, chain string) rule {
	return rule{
		text: "ct state new " + verdictText(kind, chain),
		build: func([]*nftables.Set) []expr.Any {
			return []expr.Any{
				&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
				verdictExpr(kind, chain),
			}
		},
		eval: func(p *packet, _ *tables) (bool, verdictKind, string) { return !p.established, kind, chain },
	}
}

// ruleSaddrPrefix: `ip saddr [!=] PREFIX jump|goto CHAIN`.
func ruleSaddrPrefix(f family, prefix netip.Prefix, negate bool, kind verdictKind, chain string) rule {
	op, opText := expr.CmpOpEq, ""
	if negate {
		op, opText = expr.CmpOpNeq, "!= "
	}
	mask := make([]byte, f.addrLen)
	for i := 0; i < prefix.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	match := prefix.String()
	if prefix.IsSingleIP() {
		match = prefix.Addr().String() // as nft prints a full-length prefix
	}
	return rule{
		text: fmt.Sprintf("%s saddr %s%s %s", f.name, opText, match, verdictText(kind, chain)),
		build: func([]*nftables.Set) []expr.Any {
			return []expr.Any{
				loadSaddr(f, reg1),
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: f.addrLen, Mask: mask, Xor: make([]byte, f.addrLen)},
				&expr.Cmp{Op: op, Register: reg1, Data: prefix.Masked().Addr().AsSlice()},
				verdictExpr(kind, chain),
			}
		},
		eval: func(p *packet, _ *tables) (bool, verdictKind, string) {
			return prefix.Contains(p.src) != negate, kind, chain
		},
	}
}

// ruleSrcLocal: `fib saddr type local jump|goto CHAIN` — the packet comes from this node.
func ruleSrcLocal(kind verdictKind, chain string) rule {
	return rule{
		text: "fib saddr type local " + verdictText(kind, chain),
		build: func([]*nftables.Set) []expr.Any {
			return []expr.Any{
				&expr.Fib{Register: reg1, FlagSADDR: true, ResultADDRTYPE: true},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
				verdictExpr(kind, chain),
			}
		},
		eval: func(p *packet, _ *tables) (bool, verdictKind, string) { return p.srcIsLocal, kind, chain },
	}
}

// ruleSetMark: `meta mark set meta mark | 0x4000`.
func ruleSetMark() rule {
	return rule{
		text: fmt.Sprintf("meta mark set meta mark | %s", markText(masqueradeBit)),
		build: func([]*nftables.Set) []expr.Any {
			return []expr.Any{
				&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(^uint32(masqueradeBit)), Xor: binaryutil.NativeEndian.PutUint32(masqueradeBit)},
				&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
			}
		},
		eval: func(p *packet, _ *tables) (bool, verdictKind, string) {
			p.mark |= masqueradeBit
			return true, vContinue, ""
		},
	}
}

// ruleMasqueradeMarked: `meta mark & 0x4000 != 0 masquerade fully-random`. fully-random
// because port allocation collisions across nodes otherwise drop SYNs (kube-proxy #80536).
func ruleMasqueradeMarked() rule {
	return rule{
		text: fmt.Sprintf("meta mark & %s != %s masquerade fully-random", markText(masqueradeBit), markText(0)),
		build: func([]*nftables.Set) []expr.Any {
			return []expr.Any{
				&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(masqueradeBit), Xor: make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
				&expr.Masq{FullyRandom: true},
			}
		},
		eval: func(p *packet, _ *tables) (bool, verdictKind, string) {
			return p.mark&masqueradeBit != 0, vMasquerade, ""
		},
	}
}

// ruleMasqueradeHairpin: `ip saddr . ip daddr @hairpin masquerade fully-random`. A pod sent
// to a Service and was DNATed to itself: without SNAT its reply would skip conntrack's reverse
// NAT. The hairpin set holds "ep . ep" for every endpoint address: one element per endpoint
// instead of kube-proxy's one chain and rule per endpoint.
func ruleMasqueradeHairpin(f family, hairpin *nftables.Set) rule {
	return rule{
		text: fmt.Sprintf("%s saddr . %s daddr @%s masquerade fully-random", f.name, f.name, hairpin.Name),
		build: func([]*nftables.Set) []expr.Any {
			return []expr.Any{
				loadSaddr(f, reg1),
				loadDaddr(f, nextReg(reg32a, f.addrLen)),
				&expr.Lookup{SourceRegister: reg1, SetName: hairpin.Name, SetID: hairpin.ID},
				&expr.Masq{FullyRandom: true},
			}
		},
		eval: func(p *packet, t *tables) (bool, verdictKind, string) {
			return p.src == p.dst && t.hairpin[p.src], vMasquerade, ""
		},
	}
}

// ruleServiceIPs: `ip daddr . meta l4proto . th dport vmap @MAP`.
func ruleServiceIPs(f family, m *nftables.Set, noEndpoints bool) rule {
	return rule{
		text: fmt.Sprintf("%s daddr . meta l4proto . th dport vmap @%s", f.name, m.Name),
		build: func([]*nftables.Set) []expr.Any {
			r2 := nextReg(reg32a, f.addrLen)
			return []expr.Any{
				loadDaddr(f, reg1), loadL4proto(r2), loadDport(r2 + 1),
				&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
			}
		},
		eval: func(p *packet, t *tables) (bool, verdictKind, string) {
			tbl := t.serviceIPs
			if noEndpoints {
				tbl = t.noEndpointIPs
			}
			v, ok := tbl[ipProtoPort{p.dst, p.proto, p.dport}]
			if !ok {
				return false, vContinue, ""
			}
			k, c := parseVerdict(v)
			return true, k, c
		},
	}
}

// ruleNodePorts: `ip daddr @nodeport-ips meta l4proto . th dport vmap @MAP`.
func ruleNodePorts(f family, ips, m *nftables.Set, noEndpoints bool) rule {
	return rule{
		text: fmt.Sprintf("%s daddr @%s meta l4proto . th dport vmap @%s", f.name, ips.Name, m.Name),
		build: func([]*nftables.Set) []expr.Any {
			return []expr.Any{
				loadDaddr(f, reg1),
				&expr.Lookup{SourceRegister: reg1, SetName: ips.Name, SetID: ips.ID},
				loadL4proto(reg32a), loadDport(reg32a + 1),
				&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
			}
		},
		eval: func(p *packet, t *tables) (bool, verdictKind, string) {
			if !t.nodePortIPs[p.dst] {
				return false, vContinue, ""
			}
			tbl := t.nodePorts
			if noEndpoints {
				tbl = t.noEndpointNodePort
			}
			v, ok := tbl[protoPort{p.proto, p.dport}]
			if !ok {
				return false, vContinue, ""
			}
			k, c := parseVerdict(v)
			return true, k, c
		},
	}
}

// ruleReject: TCP gets a reset, everything else ICMP port unreachable, so a client of a
// Service without endpoints fails at once instead of timing out.
func ruleReject(f family, tcp bool) rule {
	code := uint8(3) // ICMP port unreachable
	if f.nfproto == unix.NFPROTO_IPV6 {
		code = 4 // ICMPv6 port unreachable
	}
	if tcp {
		return rule{
			// nft folds the protocol match into the reject when printing.
			text: "reject with tcp reset",
			build: func([]*nftables.Set) []expr.Any {
				return []expr.Any{loadL4proto(reg1),
					&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
					&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
			},
			eval: func(p *packet, _ *tables) (bool, verdictKind, string) {
				return p.proto == unix.IPPROTO_TCP, vReject, ""
			},
		}
	}
	return rule{
		text: "reject",
		build: func([]*nftables.Set) []expr.Any {
			return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: code}}
		},
		eval: func(*packet, *tables) (bool, verdictKind, string) { return true, vReject, "" },
	}
}

// ruleDNAT: `dnat ip to ADDR:PORT`, the last rule of an affinity Service's endpoint chain.
func ruleDNAT(f family, t netip.AddrPort) rule {
	return rule{
		text: fmt.Sprintf("dnat to %s", t),
		build: func([]*nftables.Set) []expr.Any {
			return []expr.Any{
				&expr.Immediate{Register: reg1, Data: t.Addr().AsSlice()},
				&expr.Immediate{Register: reg2, Data: portBytes(t.Port())},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(f.nfproto), RegAddrMin: reg1, RegProtoMin: reg2, Specified: true},
			}
		},
		eval: func(p *packet, _ *tables) (bool, verdictKind, string) {
			p.dnatTargets = []netip.AddrPort{t}
			return true, vDNAT, ""
		},
	}
}

// frontendAddr is the address part of a NodePort's frontend key: NodePorts answer on every
// node address, so their elements are keyed by the unspecified address instead.
func frontendAddr(f family, nodePort bool, dst netip.Addr) netip.Addr {
	if !nodePort {
		return dst
	}
	if f.addrLen == 16 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// ruleDNATShared is the one DNAT rule of a chain shared by every Service with n usable
// endpoints: `dnat ip to ip daddr . meta l4proto . th dport . numgen random mod n map @MAP`.
// The key is the frontend the packet came in by (Service address and port; for a NodePort
// the unspecified address and the node port) and a random index, so the rule needs nothing
// per Service: each Service's elements carry its endpoints.
//
// Sharing is what makes 10k Services cheap to load: a rule that looks up a map makes the
// kernel walk every element of that map when the rule is added (nf_tables_bind_set), and
// check every element added later against every such rule, so one DNAT rule per Service
// made a full sync quadratic (51 s at 10k × 10). (Passing a Service number to a shared chain
// in a register is refused since Linux 6.1x: a rule may only read registers it wrote.)
func ruleDNATShared(f family, n uint32, nodePort bool, m *nftables.Set) rule {
	daddr := f.name + " daddr"
	if nodePort {
		// An immediate carries no type, so nft prints the unspecified address as a number.
		daddr = untypedText(frontendAddr(f, true, netip.Addr{}).AsSlice())
	}
	return rule{
		text: fmt.Sprintf("dnat %s to %s . meta l4proto . th dport . numgen random mod %d map @%s", f.name, daddr, n, m.Name),
		build: func([]*nftables.Set) []expr.Any {
			r2 := nextReg(reg32a, f.addrLen)
			var addr expr.Any = loadDaddr(f, reg1)
			if nodePort {
				addr = &expr.Immediate{Register: reg1, Data: frontendAddr(f, true, netip.Addr{}).AsSlice()}
			}
			return []expr.Any{
				addr, loadL4proto(r2), loadDport(r2 + 1),
				&expr.Numgen{Register: r2 + 2, Modulus: n, Type: unix.NFT_NG_RANDOM},
				&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(f.nfproto), RegAddrMin: reg1,
					RegProtoMin: nextReg(reg32a, f.addrLen), Specified: true},
			}
		},
		eval: func(p *packet, t *tables) (bool, verdictKind, string) {
			tbl := t.endpoints
			if m.Name == mapShortCircuit {
				tbl = t.shortCircuit
			}
			targets := tbl[ipProtoPort{frontendAddr(f, nodePort, p.dst), p.proto, p.dport}]
			if uint32(len(targets)) < n {
				// A missing element: the lookup fails and the rule does not match.
				return false, vContinue, ""
			}
			p.dnatTargets = append([]netip.AddrPort(nil), targets[:n]...)
			return true, vDNAT, ""
		},
	}
}

// ruleNumgenGoto: `ID . numgen random mod N vmap @endpoint-chains`, for Services with session
// affinity, whose endpoints need chains of their own to record the client.
func ruleNumgenGotoRange(chains []string, id, base uint32, endpointChains *nftables.Set) rule {
	n := uint32(len(chains))
	return rule{
		text: fmt.Sprintf("%s . numgen random mod %d%s vmap @%s", untypedText(binaryutil.NativeEndian.PutUint32(id)), n, offsetText(base), endpointChains.Name),
		build: func([]*nftables.Set) []expr.Any {
			return []expr.Any{
				&expr.Immediate{Register: reg32a, Data: binaryutil.NativeEndian.PutUint32(id)},
				&expr.Numgen{Register: reg32a + 1, Modulus: n, Type: unix.NFT_NG_RANDOM, Offset: base},
				&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: endpointChains.Name, SetID: endpointChains.ID},
			}
		},
		eval: func(*packet, *tables) (bool, verdictKind, string) {
			return true, vGoto, chains[0]
		},
		branches: chains,
	}
}

// ruleAffinityCheck: `ip saddr @SET goto CHAIN` — a client seen recently goes back to the
// endpoint it was sent to. The tracer treats affinity sets as empty (a first packet).
func ruleAffinityCheck(f family, set *nftables.Set, chain string) rule {
	return rule{
		text: fmt.Sprintf("%s saddr @%s goto %s", f.name, set.Name, chain),
		build: func([]*nftables.Set) []expr.Any {
			return []expr.Any{loadSaddr(f, reg1),
				&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
				verdictExpr(vGoto, chain)}
		},
		eval: func(*packet, *tables) (bool, verdictKind, string) { return false, vContinue, "" },
	}
}

// ruleAffinityUpdate: `update @SET { ip saddr }` — (re)start the client's timeout.
func ruleAffinityUpdate(f family, set *nftables.Set, timeout time.Duration) rule {
	return rule{
		text: fmt.Sprintf("update @%s { %s saddr timeout %s }", set.Name, f.name, durationText(timeout)),
		build: func([]*nftables.Set) []expr.Any {
			return []expr.Any{loadSaddr(f, reg1),
				&expr.Dynset{SrcRegKey: reg1, SetName: set.Name, SetID: set.ID, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: timeout}}
		},
		eval: func(*packet, *tables) (bool, verdictKind, string) { return true, vContinue, "" },
	}
}

// The helpers below spell values the way `nft list` prints them, so that rule texts match the
// kernel's listing (TestKernelListingMatchesDump).

// markText is a mark as nft prints it: 32-bit hex, zero-padded.
func markText(v uint32) string { return fmt.Sprintf("0x%08x", v) }

// untypedText is how nft prints an immediate it has no type for: the bytes as one big-endian
// number, whatever they mean.
func untypedText(b []byte) string {
	var v big.Int
	v.SetBytes(b)
	return "0x" + v.Text(16) + " [invalid type]"
}

func offsetText(base uint32) string {
	if base == 0 {
		return ""
	}
	return fmt.Sprintf(" offset %d", base)
}

// durationText is nft's time format: 1d2h3m4s5ms, zero units left out.
func durationText(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	ms := d.Milliseconds()
	for _, u := range []struct {
		ms   int64
		unit string
	}{{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}} {
		if n := ms / u.ms; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.unit)
			ms -= n * u.ms
		}
	}
	return b.String()
}
