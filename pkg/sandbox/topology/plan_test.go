package topology

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestAddressPlan(t *testing.T) {
	cases := []struct {
		what string
		got  any
		want any
	}{
		{"node1", NodeAddr(1), netip.MustParseAddr("10.250.0.11")},
		{"node3", NodeAddr(3), netip.MustParseAddr("10.250.0.13")},
		{"node10 continues past 19", NodeAddr(10), netip.MustParseAddr("10.250.0.20")},
		{"last node stays below ext", NodeAddr(MaxNodes).Less(ExternalAddr), true},
		{"pod CIDR of node2", PodCIDR(2), netip.MustParsePrefix("10.244.2.0/24")},
		{"pod gateway of node2", PodGateway(2), netip.MustParseAddr("10.244.2.1")},
		{"namespace", NamespaceName("ci-7", "node12"), "svp-ci-7-node12"},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.what, tc.got, tc.want)
		}
	}
}

func TestNamespaceNamesRoundTripAndForeignOnesAreNotOurs(t *testing.T) {
	for _, ns := range []string{"svp-default-cp", "svp-e2e-123-node3", "svp-a-net", "svp-t1-2-ext"} {
		name, member, ok := splitNamespaceName(ns)
		if !ok || NamespaceName(name, member) != ns {
			t.Errorf("splitNamespaceName(%q) = %q, %q, %v", ns, name, member, ok)
		}
	}
	for _, ns := range []string{"cni-1234", "svp-probe99", "svp-x-node0", "svp-x-node007", "svp-x-pod", "svp--cp", "svp-X-cp"} {
		if name, member, ok := splitNamespaceName(ns); ok {
			t.Errorf("splitNamespaceName(%q) = %q, %q: should not be ours", ns, name, member)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"default", "e2e-42", "a", strings.Repeat("a", maxNameLen)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "a-", "A", "a_b", "a/b", "../x", strings.Repeat("a", maxNameLen+1)} {
		if ValidateName(bad) == nil {
			t.Errorf("ValidateName(%q) accepted", bad)
		}
	}
}

func TestDualStackAddressPlan(t *testing.T) {
	cases := []struct {
		what string
		got  any
		want any
	}{
		{"node1", NodeAddrV6(1), netip.MustParseAddr("fd00:250::b")},
		{"node10", NodeAddrV6(10), netip.MustParseAddr("fd00:250::14")},
		{"last node stays below ext", NodeAddrV6(MaxNodes).Less(ExternalAddrV6), true},
		{"ext", memberAddrV6(MemberExternal), netip.MustParseAddr("fd00:250::c8")},
		{"pod CIDR of node2", PodCIDRV6(2), netip.MustParsePrefix("fd00:244:0:2::/64")},
		{"pod CIDR of node189 is in the cluster CIDR", ClusterCIDRV6.Contains(PodCIDRV6(MaxNodes).Addr()), true},
		{"pod gateway of node2", PodGatewayV6(2), netip.MustParseAddr("fd00:244:0:2::1")},
		{"unique-local", netip.MustParsePrefix("fd00::/8").Contains(ServiceCIDRV6.Addr()), true},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.what, tc.got, tc.want)
		}
	}
}

func TestNoMemberGetsADefaultRoute(t *testing.T) {
	for _, topo := range []*Topology{{name: "x", nodes: 3}, {name: "x", nodes: 3, dualStack: true}} {
		for _, m := range topo.Members() {
			for _, r := range topo.routesFor(m) {
				if r.dst.Bits() == 0 {
					t.Errorf("%s has a default route via %s", m, r.via)
				}
				if r.via.IsValid() && !NodeNetwork.Contains(r.via) && !NodeNetworkV6.Contains(r.via) {
					t.Errorf("%s routes %s via %s, outside the node network", m, r.dst, r.via)
				}
			}
		}
	}
}

func TestDualStackNodesRouteOtherNodesIPv6PodsViaTheirNodeAddress(t *testing.T) {
	topo := &Topology{name: "x", nodes: 3, dualStack: true}
	got := topo.routesFor("node2")
	want := []staticRoute{
		{PodCIDR(1), NodeAddr(1)},
		{PodCIDRV6(1), NodeAddrV6(1)},
		{PodCIDR(3), NodeAddr(3)},
		{PodCIDRV6(3), NodeAddrV6(3)},
		{ServiceCIDR, BridgeAddr},
		{LoadBalancerPool, BridgeAddr},
		{ServiceCIDRV6, BridgeAddrV6},
		{LoadBalancerPoolV6, BridgeAddrV6},
	}
	if !slices.Equal(got, want) {
		t.Errorf("routes of node2 = %v, want %v", got, want)
	}
}

func TestSysctlsForwardIPv6OnlyOnNodes(t *testing.T) {
	for _, m := range (&Topology{nodes: 2}).Members() {
		_, isNode := nodeNumber(m)
		for _, s := range ipv6SysctlsFor(m) {
			if strings.HasSuffix(s.key, ".forwarding") && (s.value == "1") != isNode {
				t.Errorf("%s: %s=%s", m, s.key, s.value)
			}
		}
	}
}

func TestNodesRouteOtherNodesPodsViaTheirNodeAddress(t *testing.T) {
	topo := &Topology{name: "x", nodes: 3}
	got := topo.routesFor("node2")
	want := []staticRoute{
		{PodCIDR(1), NodeAddr(1)},
		{PodCIDR(3), NodeAddr(3)},
		{ServiceCIDR, BridgeAddr},
		{LoadBalancerPool, BridgeAddr},
	}
	if !slices.Equal(got, want) {
		t.Errorf("routes of node2 = %v, want %v", got, want)
	}
}

func TestSysctlsForwardOnlyOnNodes(t *testing.T) {
	for _, m := range (&Topology{nodes: 2}).Members() {
		_, isNode := nodeNumber(m)
		for _, s := range sysctlsFor(m) {
			if s.key == "net.ipv4.ip_forward" && (s.value == "1") != isNode {
				t.Errorf("%s: ip_forward=%s", m, s.value)
			}
		}
	}
}
