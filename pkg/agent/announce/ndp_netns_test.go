package announce

// Addresses used here, all inside namespaces the test creates: the dual-stack topology's plan
// (pkg/sandbox/topology, plan.go; nodes and ext on one segment in both families), and the
// LoadBalancer address fd00:251::9 from the topology's IPv6 pool fd00:251::/120, which ext has
// on-link as it has 10.251.0.0/24.

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcplane/svcplane/test/netns"
)

// dualStackCluster builds a dual-stack topology of two nodes; its ext has the IPv6 pool
// on-link.
func dualStackCluster(t *testing.T) *netns.Cluster {
	t.Helper()
	return netns.New(t, netns.Config{Nodes: 2, DualStack: true})
}

// TestIPv6AddressIsAnnouncedByOneNodeAndMovesWhenItStops runs two announcers against one
// (fake) API with an IPv6 LoadBalancer address: exactly one node answers ext's Neighbor
// Solicitation, ext's kernel learns that node's MAC when it sends to the address, and when that
// node's announcer stops the other answers and ext's neighbour entry follows through the
// unsolicited advertisement.
func TestIPv6AddressIsAnnouncedByOneNodeAndMovesWhenItStops(t *testing.T) {
	c := dualStackCluster(t)
	lbIP := netip.MustParseAddr("fd00:251::9")
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web6"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, IPFamilies: []corev1.IPFamily{corev1.IPv6Protocol}}}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lbIP.String()}}
	client := fake.NewClientset(readyNode("node1"), readyNode("node2"), svc)

	owner := chooseNode(lbIP, []string{"node1", "node2"})
	other := map[string]string{"node1": "node2", "node2": "node1"}[owner]
	macs := map[string]string{"node1": macOf(t, c, "node1"), "node2": macOf(t, c, "node2")}

	// Before any announcer runs nobody answers: the nodes' kernels do not know the address.
	if got := extAnswers(t, c, lbIP); len(got) != 0 {
		t.Fatalf("answers for %s with no announcer running: %v", lbIP, got)
	}

	agents := newTestAnnouncers(t, c, client, false)
	agents.start("node1")
	agents.start("node2")

	waitOnlyAnswer(t, c, lbIP, "both running", macs[owner], 5*time.Second)
	// Only the owner has joined the address's solicited-node group: on a real NIC (and
	// behind an MLD-snooping switch) the solicitations reach only members. A veth passes
	// every multicast frame, so the answers above do not show it; the kernel's list does.
	group := solicitedNode(lbIP).String()
	joined := func(node string) bool {
		return strings.Contains(c.Run(t, node, "ip", "-6", "maddr", "show", "dev", "eth0"), group)
	}
	if !joined(owner) || joined(other) {
		t.Errorf("members of %s: %s %v, %s %v; want only the owner %s", group, owner, joined(owner), other, joined(other), owner)
	}
	// ext's own kernel resolves the address when it sends there, from the owner's answer.
	if conn, err := c.Dial(context.Background(), netns.External, "udp", net.JoinHostPort(lbIP.String(), "9")); err == nil {
		conn.Write([]byte("x"))
		conn.Close()
	} else {
		t.Fatalf("ext cannot send to %s: %v", lbIP, err)
	}
	waitNeighbour(t, c, lbIP, "ext sent to the address", macs[owner], 2*time.Second)

	stopped := time.Now()
	agents.stop(owner)
	took := waitNeighbour(t, c, lbIP, "the owner stopped", macs[other], 2*time.Second)
	t.Logf("%s stopped: ext's neighbour entry for %s moved to %s %v after the stop returned (%v after it began)", owner, lbIP, other, took, time.Since(stopped))
	waitOnlyAnswer(t, c, lbIP, "the owner stopped", macs[other], 2*time.Second)
	if joined(owner) || !joined(other) {
		t.Errorf("after the stop, members of %s: %s %v, %s %v; want only %s", group, owner, joined(owner), other, joined(other), other)
	}
}

// TestOwnerClaimsItsAddressBackOnceFromAnotherNode: another node's claim on an owned address
// (its gratuitous ARP or unsolicited advertisement, as sent by an agent that started at the
// same moment and was not chosen, but claimed last) moves ext's neighbour entry; the owner
// claims the address back one beacon interval later. A second claim within the defend
// interval stands, as RFC 5227 asks, which also shows that the claims do move ext's entry.
func TestOwnerClaimsItsAddressBackOnceFromAnotherNode(t *testing.T) {
	for _, ip := range []string{"10.251.0.9", "fd00:251::9"} {
		lbIP := netip.MustParseAddr(ip)
		t.Run(ip, func(t *testing.T) {
			c := dualStackCluster(t)
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
			svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lbIP.String()}}
			client := fake.NewClientset(readyNode("node1"), readyNode("node2"), svc)
			macs := map[string]string{"node1": macOf(t, c, "node1"), "node2": macOf(t, c, "node2")}

			// node2 runs no announcer, so node1 owns every address.
			agents := newTestAnnouncers(t, c, client, true)
			agents.start("node1")
			waitOnlyAnswer(t, c, lbIP, "node1 running alone", macs["node1"], 5*time.Second)
			if conn, err := c.Dial(context.Background(), netns.External, "udp", net.JoinHostPort(lbIP.String(), "9")); err == nil {
				conn.Write([]byte("x"))
				conn.Close()
			} else {
				t.Fatalf("ext cannot send to %s: %v", lbIP, err)
			}
			waitNeighbour(t, c, lbIP, "ext sent to the address", macs["node1"], 2*time.Second)

			const interval = 100 * time.Millisecond // newTestAnnouncers' beacon interval
			claimFrom(t, c, "node2", lbIP)
			time.Sleep(3 * interval)
			took := waitNeighbour(t, c, lbIP, "node2 claimed node1's address", macs["node1"], 2*time.Second)
			t.Logf("ext's entry for %s names node1 again %v after node2's claim", lbIP, took+3*interval)

			claimFrom(t, c, "node2", lbIP)
			time.Sleep(5 * interval)
			if got := extNeighbour(t, c, lbIP); got != macs["node2"] {
				t.Errorf("after a second claim by node2 within %v of node1's defence, ext's entry for %s is %s, want node2's %s",
					defendInterval, lbIP, got, macs["node2"])
			}
		})
	}
}

// claimFrom sends, from member's eth0, a gratuitous ARP (IPv4) or an unsolicited Neighbor
// Advertisement (IPv6) saying that ip is at member's MAC.
func claimFrom(t *testing.T, c *netns.Cluster, member string, ip netip.Addr) {
	t.Helper()
	err := c.Do(member, func() error {
		iface, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if ip.Is6() {
			r, err := openNDP(iface)
			if err != nil {
				return err
			}
			defer r.Close()
			r.unsolicited(ip)
			return nil
		}
		conn, err := openARP(iface)
		if err != nil {
			return err
		}
		defer conn.Close()
		return conn.send(arpPacket{op: arpRequest, senderMAC: iface.HardwareAddr, senderIP: ip,
			targetMAC: make(net.HardwareAddr, 6), targetIP: ip}, broadcastMAC)
	})
	if err != nil {
		t.Fatalf("claiming %s from %s: %v", ip, member, err)
	}
}
