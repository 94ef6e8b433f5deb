package loadbalancer

// Addresses used here: pools in 10.251.0.0/24 and fd00:251::/120, as in the sandbox.

import (
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mustPool(t *testing.T, name string, spec svcplanev1.LoadBalancerIPPoolSpec) *pool {
	t.Helper()
	p, err := newPool(&svcplanev1.LoadBalancerIPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func allocatorWith(t *testing.T, pools ...*pool) *allocator {
	t.Helper()
	a := newAllocator()
	a.setPools(pools)
	return a
}

// svc builds a request for an IPv4 Service with one TCP port, created age minutes after t0.
func svc(key string, age int, port int32) *request {
	return &request{key: key, created: t0.Add(time.Duration(age) * time.Minute),
		ports: []portKey{{port, corev1.ProtocolTCP}}, families: []corev1.IPFamily{corev1.IPv4Protocol},
		requested: map[corev1.IPFamily]netip.Addr{}}
}

func ips(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

func wantIPs(t *testing.T, res result, want ...string) {
	t.Helper()
	if !slices.Equal(res.ips, ips(want...)) {
		t.Fatalf("got %v (problems %q), want %v", res.ips, res.problems, want)
	}
}

func TestDynamicAssignmentSkipsNetworkAndBroadcast(t *testing.T) {
	a := allocatorWith(t, mustPool(t, "default", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.0/30"}}))
	wantIPs(t, a.assign(svc("ns/a", 0, 80)), "10.251.0.1")
	wantIPs(t, a.assign(svc("ns/b", 1, 80)), "10.251.0.2")
	res := a.assign(svc("ns/c", 2, 80))
	wantIPs(t, res)
	if len(res.problems) != 1 || !strings.Contains(res.problems[0], `no available IPs in pool "default" for IPv4`) {
		t.Fatalf("problems = %q, want the pool named as exhausted", res.problems)
	}
}

func TestAssignmentIsStableAcrossSyncs(t *testing.T) {
	a := allocatorWith(t, mustPool(t, "default", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.10-10.251.0.20"}}))
	wantIPs(t, a.assign(svc("ns/a", 0, 80)), "10.251.0.10")
	// A retry after a failed status write picks what it already holds.
	wantIPs(t, a.assign(svc("ns/a", 0, 80)), "10.251.0.10")
	b := svc("ns/b", 1, 80)
	b.current = ips("10.251.0.15")
	wantIPs(t, a.assign(b), "10.251.0.15")
}

func TestReleaseFreesForAPendingService(t *testing.T) {
	a := allocatorWith(t, mustPool(t, "default", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.5-10.251.0.5"}}))
	wantIPs(t, a.assign(svc("ns/a", 0, 80)), "10.251.0.5")
	wantIPs(t, a.assign(svc("ns/b", 1, 80)))
	if !a.release("ns/a") {
		t.Fatal("release reported nothing freed")
	}
	wantIPs(t, a.assign(svc("ns/b", 1, 80)), "10.251.0.5")
}

func TestRequestedIP(t *testing.T) {
	a := allocatorWith(t, mustPool(t, "default", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.0/24"}}))
	r := svc("ns/a", 0, 80)
	r.requested[corev1.IPv4Protocol] = netip.MustParseAddr("10.251.0.42")
	wantIPs(t, a.assign(r), "10.251.0.42")

	taken := svc("ns/b", 1, 443)
	taken.requested[corev1.IPv4Protocol] = netip.MustParseAddr("10.251.0.42")
	res := a.assign(taken)
	wantIPs(t, res)
	if len(res.problems) != 1 || !strings.Contains(res.problems[0], "already in use by ns/a") {
		t.Fatalf("problems = %q", res.problems)
	}

	outside := svc("ns/c", 2, 80)
	outside.requested[corev1.IPv4Protocol] = netip.MustParseAddr("192.0.2.1")
	if res := a.assign(outside); len(res.problems) != 1 || !strings.Contains(res.problems[0], "not in any LoadBalancerIPPool") {
		t.Fatalf("problems = %q", res.problems)
	}
}

func TestSharingNeedsTheSameKeyAndDistinctPorts(t *testing.T) {
	ip := netip.MustParseAddr("10.251.0.7")
	for _, tc := range []struct {
		name           string
		keyA, keyB     string
		portA, portB   int32
		protoB         corev1.Protocol
		wantShared     bool
		wantProblemFor string
	}{
		{name: "same key, different ports", keyA: "k", keyB: "k", portA: 80, portB: 443, wantShared: true},
		{name: "same key, same port and protocol", keyA: "k", keyB: "k", portA: 80, portB: 80, wantProblemFor: "ns/a"},
		{name: "same key, same port, other protocol", keyA: "k", keyB: "k", portA: 53, portB: 53, protoB: corev1.ProtocolUDP, wantShared: true},
		{name: "different keys", keyA: "k", keyB: "other", portA: 80, portB: 443, wantProblemFor: "ns/a"},
		{name: "only one opted in", keyA: "k", portA: 80, portB: 443, wantProblemFor: "ns/a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := allocatorWith(t, mustPool(t, "default", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.0/24"}}))
			first := svc("ns/a", 0, tc.portA)
			first.sharingKey = tc.keyA
			first.requested[corev1.IPv4Protocol] = ip
			wantIPs(t, a.assign(first), ip.String())
			second := svc("ns/b", 1, tc.portB)
			second.sharingKey = tc.keyB
			if tc.protoB != "" {
				second.ports[0].protocol = tc.protoB
			}
			second.requested[corev1.IPv4Protocol] = ip
			res := a.assign(second)
			if tc.wantShared {
				wantIPs(t, res, ip.String())
				return
			}
			if len(res.problems) != 1 || !strings.Contains(res.problems[0], tc.wantProblemFor) {
				t.Fatalf("problems = %q, want a refusal naming %s", res.problems, tc.wantProblemFor)
			}
		})
	}
}

func TestDynamicAssignmentJoinsASharedAddress(t *testing.T) {
	a := allocatorWith(t, mustPool(t, "default", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.0/24"}}))
	web := svc("ns/web", 0, 80)
	web.sharingKey = "front"
	wantIPs(t, a.assign(web), "10.251.0.1")
	wantIPs(t, a.assign(svc("ns/other", 1, 443)), "10.251.0.2")
	tls := svc("ns/tls", 2, 443)
	tls.sharingKey = "front"
	wantIPs(t, a.assign(tls), "10.251.0.1")
}

func TestDoubleClaimGoesToTheOlderService(t *testing.T) {
	a := allocatorWith(t, mustPool(t, "default", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.0/24"}}))
	young, old := svc("ns/young", 5, 80), svc("ns/old", 1, 80)
	young.current, old.current = ips("10.251.0.9"), ips("10.251.0.9")
	// The younger is synced first and holds it; the older's sync takes it back.
	wantIPs(t, a.assign(young), "10.251.0.9")
	res := a.assign(old)
	wantIPs(t, res, "10.251.0.9")
	if !slices.Equal(res.evicted, []string{"ns/young"}) {
		t.Fatalf("evicted = %v, want ns/young", res.evicted)
	}
	// The younger's next sync moves it.
	wantIPs(t, a.assign(young), "10.251.0.1")
}

func TestRebuildKeepsAssignmentsAndSettlesByAge(t *testing.T) {
	a := allocatorWith(t, mustPool(t, "default", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.0/24"}}))
	old, young := svc("ns/old", 1, 80), svc("ns/young", 2, 80)
	old.current, young.current = ips("10.251.0.30"), ips("10.251.0.30")
	other := svc("ns/other", 3, 80)
	other.current = ips("10.251.0.31")
	for _, r := range []*request{old, young, other} { // oldest first, as rebuild does
		a.claim(r)
	}
	wantIPs(t, a.assign(other), "10.251.0.31")
	wantIPs(t, a.assign(old), "10.251.0.30")
	wantIPs(t, a.assign(young), "10.251.0.1")
}

func TestSelectorsAndAutoAssign(t *testing.T) {
	a := allocatorWith(t,
		mustPool(t, "a-reserved", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.100-10.251.0.110"}, AutoAssign: ptr.To(false)}),
		mustPool(t, "b-team", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.50-10.251.0.60"},
			ServiceSelector:   &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "edge"}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}}}),
		mustPool(t, "c-default", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.200-10.251.0.210"}}),
	)
	edge := svc("blue/edge", 0, 80)
	edge.labels, edge.namespaceLabels = labels.Set{"tier": "edge"}, labels.Set{"team": "blue"}
	wantIPs(t, a.assign(edge), "10.251.0.50")
	wrongNS := svc("red/edge", 0, 80)
	wrongNS.labels, wrongNS.namespaceLabels = labels.Set{"tier": "edge"}, labels.Set{"team": "red"}
	wantIPs(t, a.assign(wrongNS), "10.251.0.200")
	// A pool that does not auto-assign still serves requests.
	reserved := svc("ns/reserved", 0, 80)
	reserved.requested[corev1.IPv4Protocol] = netip.MustParseAddr("10.251.0.105")
	wantIPs(t, a.assign(reserved), "10.251.0.105")
}

func TestDualStackGetsOneAddressPerFamily(t *testing.T) {
	a := allocatorWith(t,
		mustPool(t, "v4", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.0/24"}}),
		mustPool(t, "v6", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"fd00:251::/120"}}))
	r := svc("ns/dual", 0, 80)
	r.families = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
	wantIPs(t, a.assign(r), "fd00:251::1", "10.251.0.1")

	onlyV6 := allocatorWith(t, mustPool(t, "v6", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"fd00:251::/120"}}))
	res := onlyV6.assign(r)
	wantIPs(t, res, "fd00:251::1")
	if len(res.problems) != 1 || !strings.Contains(res.problems[0], "IPv4") {
		t.Fatalf("problems = %q, want the missing IPv4 pool named", res.problems)
	}
}

func TestAvoidBuggyIPs(t *testing.T) {
	a := allocatorWith(t, mustPool(t, "p", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.255-10.251.1.1"}, AvoidBuggyIPs: true}))
	wantIPs(t, a.assign(svc("ns/a", 0, 80)), "10.251.1.1")
}

func TestCounts(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		spec                    svcplanev1.LoadBalancerIPPoolSpec
		hold                    int
		wantAssigned, wantAvail int64
	}{
		{"a /24 keeps network and broadcast back", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.0/24"}}, 3, 3, 251},
		{"a range is used whole", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.10-10.251.0.19"}}, 0, 0, 10},
		{"avoidBuggyIPs across a /23", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.0/23"}, AvoidBuggyIPs: true}, 0, 0, 508},
		{"a huge IPv6 pool saturates", svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"fd00::/64"}}, 0, 0, math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPool(t, "p", tc.spec)
			a := allocatorWith(t, p)
			for i := range tc.hold {
				a.assign(svc("ns/s"+string(rune('a'+i)), i, 80))
			}
			assigned, available := a.counts(p)
			if assigned != tc.wantAssigned || available != tc.wantAvail {
				t.Fatalf("counts = %d assigned, %d available; want %d, %d", assigned, available, tc.wantAssigned, tc.wantAvail)
			}
		})
	}
}
