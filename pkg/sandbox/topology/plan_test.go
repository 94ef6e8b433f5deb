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

func TestNoMemberGetsADefaultRoute(t *testing.T) {
	topo := &Topology{name: "x", nodes: 3}
	for _, m := range topo.Members() {
		for _, r := range topo.routesFor(m) {
			if r.dst.Bits() == 0 {
				t.Errorf("%s has a default route via %s", m, r.via)
			}
			if r.via.IsValid() && !NodeNetwork.Contains(r.via) {
				t.Errorf("%s routes %s via %s, outside the node network", m, r.dst, r.via)
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
