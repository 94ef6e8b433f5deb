// Package topology builds and removes the network-namespace cluster that the sandbox, the
// networked tests and the benchmarks run in.
//
// Everything lives inside namespaces this package creates; the host's root namespace only gains
// the namespace names under /run/netns. The address plan (below) is fixed so that tests and
// docs can name addresses; the per-run name keeps topologies apart:
//
//	svp-<name>-net    bridge br0 10.250.0.1/24, the node network (no uplink, no default route)
//	svp-<name>-cp     control plane, eth0 10.250.0.2
//	svp-<name>-nodeN  node N, eth0 10.250.0.(10+N), pod bridge cbr0 10.244.N.1/24
//	svp-<name>-ext    outside client, eth0 10.250.0.200
//
// A dual-stack topology (Options.DualStack) adds an IPv6 unique-local plan beside it:
// fd00:250::/64 on the node network (br0 ::1, cp ::2, ext ::c8, node N ::(10+N) — the last
// byte of the IPv4 address), node N's pod bridge fd00:244:0:N::1/64, Services fd00:96::/112,
// LoadBalancer addresses fd00:251::/120 (on-link for ext, as 10.251.0.0/24 is).
//
// See docs/sandbox.md for routes, sysctls and the safety rules.
package topology

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Address plan shared by every topology (see ARCHITECTURE.md, "Test topology").
var (
	NodeNetwork      = netip.MustParsePrefix("10.250.0.0/24")
	BridgeAddr       = netip.MustParseAddr("10.250.0.1")
	ControlPlaneAddr = netip.MustParseAddr("10.250.0.2")
	ExternalAddr     = netip.MustParseAddr("10.250.0.200")
	ClusterCIDR      = netip.MustParsePrefix("10.244.0.0/16")
	ServiceCIDR      = netip.MustParsePrefix("10.96.0.0/12")
	ClusterDNSAddr   = netip.MustParseAddr("10.96.0.10")
	LoadBalancerPool = netip.MustParsePrefix("10.251.0.0/24")
)

// The IPv6 plan of a dual-stack topology: unique-local (fd00::/8), so nothing could ever be
// routed outside the machine even by mistake.
var (
	NodeNetworkV6      = netip.MustParsePrefix("fd00:250::/64")
	BridgeAddrV6       = netip.MustParseAddr("fd00:250::1")
	ControlPlaneAddrV6 = netip.MustParseAddr("fd00:250::2")
	ExternalAddrV6     = netip.MustParseAddr("fd00:250::c8")
	ClusterCIDRV6      = netip.MustParsePrefix("fd00:244::/56")
	ServiceCIDRV6      = netip.MustParsePrefix("fd00:96::/112")
	// ClusterDNSAddrV6 is the kube-dns Service of an IPv6-only cluster: the 10th address of
	// ServiceCIDRV6, as 10.96.0.10 is of ServiceCIDR.
	ClusterDNSAddrV6   = netip.MustParseAddr("fd00:96::a")
	LoadBalancerPoolV6 = netip.MustParsePrefix("fd00:251::/120")
)

// APIServerPort is where `svcplane server` listens inside the control-plane namespace.
const APIServerPort = 6443

// Member names: the last part of a namespace name, and what `svcplane sandbox exec` takes.
const (
	MemberNetwork      = "net"
	MemberControlPlane = "cp"
	MemberExternal     = "ext"
)

// Interface names inside the namespaces. Every namespace has its own interface-name space, so
// these need no per-run prefix and stay far below the 15-character limit.
const (
	NodeBridgeName = "br0"  // in the net namespace
	UplinkName     = "eth0" // in every member namespace, the veth end facing br0
	PodBridgeName  = "cbr0" // in every node namespace
)

// MaxNodes keeps node addresses (10.250.0.10+N) below the outside client's 10.250.0.200.
const MaxNodes = 189

// NamespacePrefix starts every namespace name this package creates, so that leftovers of a
// killed run can be recognised and removed (see CleanupStale).
const NamespacePrefix = "svp-"

// NodeMember names node n (1-based) as it appears in namespace names and, later, as its Node
// object name.
func NodeMember(n int) string { return "node" + strconv.Itoa(n) }

// NodeAddr is node n's address on the node network: node1 is 10.250.0.11. Past node 9 this
// continues as 10+n (node10 is 10.250.0.20) rather than string concatenation, so addresses stay
// contiguous.
func NodeAddr(n int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 250, 0, byte(10 + n)})
}

// PodCIDR is the /24 node n hands out to its pods.
func PodCIDR(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(n), 0}), 24)
}

// PodGateway is node n's address on its pod bridge, the default gateway of its pods.
func PodGateway(n int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 244, byte(n), 1})
}

// NodeAddrV6 is node n's IPv6 address on the node network of a dual-stack topology: the last
// byte is that of its IPv4 address (node1 is fd00:250::b).
func NodeAddrV6(n int) netip.Addr {
	return v6WithLastByte(NodeNetworkV6, byte(10+n))
}

// PodCIDRV6 is the IPv6 /64 node n hands out to its pods in a dual-stack topology: subnet n
// of ClusterCIDRV6, the one node IPAM would number n (node1 has fd00:244:0:1::/64).
func PodCIDRV6(n int) netip.Prefix {
	b := ClusterCIDRV6.Addr().As16()
	b[7] = byte(n)
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// PodGatewayV6 is node n's IPv6 address on its pod bridge: the first of PodCIDRV6(n).
func PodGatewayV6(n int) netip.Addr {
	return PodCIDRV6(n).Addr().Next()
}

func v6WithLastByte(p netip.Prefix, last byte) netip.Addr {
	b := p.Addr().As16()
	b[15] = last
	return netip.AddrFrom16(b)
}

// NamespaceName is the network namespace that holds member of topology name.
func NamespaceName(name, member string) string {
	return NamespacePrefix + name + "-" + member
}

// splitNamespaceName is the inverse of NamespaceName; ok is false for namespaces that are not ours.
func splitNamespaceName(ns string) (name, member string, ok bool) {
	rest, found := strings.CutPrefix(ns, NamespacePrefix)
	if !found {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '-')
	if i <= 0 || i == len(rest)-1 {
		return "", "", false
	}
	name, member = rest[:i], rest[i+1:]
	if ValidateName(name) != nil || !validMember(member) {
		return "", "", false
	}
	return name, member, true
}

func validMember(member string) bool {
	switch member {
	case MemberNetwork, MemberControlPlane, MemberExternal:
		return true
	}
	n, ok := nodeNumber(member)
	return ok && n >= 1 && n <= MaxNodes
}

// NodeNumber returns n for the member (and Node) name "nodeN".
func NodeNumber(member string) (int, bool) { return nodeNumber(member) }

// nodeNumber returns n for "nodeN".
func nodeNumber(member string) (int, bool) {
	digits, ok := strings.CutPrefix(member, "node")
	if !ok || digits == "" || digits[0] == '0' {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil
}

var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// maxNameLen keeps namespace names and state paths readable; namespace names themselves may be
// long, interface names never carry the run name.
const maxNameLen = 24

// ValidateName checks a topology (sandbox) name.
func ValidateName(name string) error {
	if len(name) > maxNameLen || !namePattern.MatchString(name) {
		return fmt.Errorf("invalid sandbox name %q: use 1-%d lower-case letters, digits and '-', starting and ending with a letter or digit", name, maxNameLen)
	}
	return nil
}
