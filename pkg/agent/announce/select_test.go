package announce

// Addresses used here: 10.251.0.0/24 (the sandbox's LoadBalancer pool) and fd00:251::/120.

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func lbService(name, ip string, local bool) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
	if local {
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	return svc
}

func TestChoiceIsTheSameWhateverTheOrderOfNodes(t *testing.T) {
	ip := netip.MustParseAddr("10.251.0.1")
	a := chooseNode(ip, []string{"node1", "node2", "node3"})
	b := chooseNode(ip, []string{"node3", "node1", "node2"})
	if a != b || a == "" {
		t.Errorf("chooseNode gave %q and %q for the same nodes", a, b)
	}
}

func TestOnlyTheLeavingNodesAddressesMove(t *testing.T) {
	all := []string{"node1", "node2", "node3"}
	moved, spread := 0, map[string]int{}
	for i := 1; i <= 200; i++ {
		ip := netip.MustParseAddr(fmt.Sprintf("10.251.0.%d", i))
		before := chooseNode(ip, all)
		spread[before]++
		after := chooseNode(ip, []string{"node1", "node3"})
		if before != "node2" && after != before {
			t.Errorf("%s moved from %s to %s though %s stayed", ip, before, after, before)
		}
		if before == "node2" {
			moved++
		}
	}
	if len(spread) != 3 || moved == 0 {
		t.Errorf("200 addresses spread over %v; want all three nodes used", spread)
	}
}

func TestLocalPolicyAnnouncesFromANodeWithAReadyEndpoint(t *testing.T) {
	ready, notReady := true, false
	node := func(n string) *string { return &n }
	st := State{
		Services:   []*corev1.Service{lbService("web", "10.251.0.1", true), lbService("none", "10.251.0.2", true)},
		ReadyNodes: []string{"node1", "node2", "node3"},
		Slices: map[string][]*discoveryv1.EndpointSlice{"default/web": {{Endpoints: []discoveryv1.Endpoint{
			{NodeName: node("node2"), Conditions: discoveryv1.EndpointConditions{Ready: &ready}},
			{NodeName: node("node1"), Conditions: discoveryv1.EndpointConditions{Ready: &notReady}},
			{NodeName: node("node9")}, // not a Ready node
		}}}},
	}
	got := Assignments(st)
	if got[netip.MustParseAddr("10.251.0.1")] != "node2" {
		t.Errorf("10.251.0.1 announced by %q, want node2 (its only ready local endpoint)", got[netip.MustParseAddr("10.251.0.1")])
	}
	if n, ok := got[netip.MustParseAddr("10.251.0.2")]; ok {
		t.Errorf("a Local Service without endpoints is announced by %s", n)
	}
}

func TestWhichAddressesAreAnnounced(t *testing.T) {
	proxy, vip := corev1.LoadBalancerIPModeProxy, corev1.LoadBalancerIPModeVIP
	other := "example.com/other"
	svc := lbService("a", "10.251.0.1", false)
	svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress,
		corev1.LoadBalancerIngress{IP: "10.251.0.2", IPMode: &vip},
		corev1.LoadBalancerIngress{IP: "10.251.0.3", IPMode: &proxy},
		corev1.LoadBalancerIngress{IP: "fd00:251::1"},
		corev1.LoadBalancerIngress{IP: "fd00:251::2", IPMode: &proxy},
		corev1.LoadBalancerIngress{IP: "ff02::1"},
		corev1.LoadBalancerIngress{Hostname: "lb.example.com"})
	foreign := lbService("b", "10.251.0.4", false)
	foreign.Spec.LoadBalancerClass = &other
	got := Assignments(State{Services: []*corev1.Service{svc, foreign}, ReadyNodes: []string{"node1"}})
	want := map[netip.Addr]string{netip.MustParseAddr("10.251.0.1"): "node1", netip.MustParseAddr("10.251.0.2"): "node1",
		netip.MustParseAddr("fd00:251::1"): "node1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Assignments = %v, want %v", got, want)
	}
}

func TestSilentNodesAreNotReady(t *testing.T) {
	now := time.Now()
	n := &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.NewTime(now.Add(-20 * time.Second))}}}}
	if !nodeReady(n, now, 30*time.Second) {
		t.Error("a node with a 20s old heartbeat is not ready with a 30s grace")
	}
	if nodeReady(n, now, 10*time.Second) {
		t.Error("a node with a 20s old heartbeat is ready with a 10s grace")
	}
}

func TestARPRoundTrip(t *testing.T) {
	p := arpPacket{op: arpReply, senderMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, senderIP: netip.MustParseAddr("10.251.0.1"),
		targetMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, targetIP: netip.MustParseAddr("10.250.0.200")}
	got, ok := parseARP(p.marshal())
	if !ok || fmt.Sprint(got) != fmt.Sprint(p) {
		t.Errorf("parseARP(marshal(%v)) = %v, %v", p, got, ok)
	}
}
