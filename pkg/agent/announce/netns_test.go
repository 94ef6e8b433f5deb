package announce

// Addresses used here (ARCHITECTURE.md, "Test topology"), all inside namespaces the tests
// create: node1 10.250.0.11 and node2 10.250.0.12 announce, ext 10.250.0.200 asks; the
// LoadBalancer addresses 10.251.0.7 and 10.251.0.9 come from the sandbox's pool
// 10.251.0.0/24, which ext has on-link.

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
	"github.com/svcplane/svcplane/test/netns"
)

// extAnswers asks from ext who has ip (ARP for IPv4, a Neighbor Solicitation for IPv6) and
// returns the MACs that answered.
func extAnswers(t *testing.T, c *netns.Cluster, ip netip.Addr) []string {
	t.Helper()
	var answers []net.HardwareAddr
	err := c.Do(netns.External, func() error {
		var err error
		if ip.Is4() {
			answers, err = Query(context.Background(), "eth0", netns.ExternalAddr, ip, 200*time.Millisecond)
		} else {
			answers, err = QueryNDP(context.Background(), "eth0", topology.ExternalAddrV6, ip, 200*time.Millisecond)
		}
		return err
	})
	if err != nil {
		t.Fatalf("asking from ext who has %s: %v", ip, err)
	}
	var out []string
	for _, a := range answers {
		out = append(out, a.String())
	}
	return out
}

// waitOnlyAnswer waits until ext's query for ip is answered by mac alone and returns how long
// that took.
func waitOnlyAnswer(t *testing.T, c *netns.Cluster, ip netip.Addr, what, mac string, within time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	var got []string
	for time.Since(begin) < within {
		if got = extAnswers(t, c, ip); len(got) == 1 && got[0] == mac {
			return time.Since(begin)
		}
	}
	t.Fatalf("%s: answers for %s %v, want only %s within %v", what, ip, got, mac, within)
	return 0
}

// waitNeighbour waits until ext's neighbour entry for ip names mac and returns how long that
// took.
func waitNeighbour(t *testing.T, c *netns.Cluster, ip netip.Addr, what, mac string, within time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	var got string
	for time.Since(begin) < within {
		if got = extNeighbour(t, c, ip); got == mac {
			return time.Since(begin)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: ext's neighbour entry for %s is %q, want %s within %v", what, ip, got, mac, within)
	return 0
}

func macOf(t *testing.T, c *netns.Cluster, member string) string {
	t.Helper()
	var mac string
	err := c.Do(member, func() error {
		iface, err := net.InterfaceByName("eth0")
		if err == nil {
			mac = iface.HardwareAddr.String()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// TestKernelAnswersNoARPForServiceAddressesWithStrictARP: the userspace proxy routes Service
// addresses locally, so without strict ARP every node's kernel answers ARP for them.
func TestKernelAnswersNoARPForServiceAddressesWithStrictARP(t *testing.T) {
	c := netns.New(t, netns.Config{Nodes: 1})
	node := netns.Node(1)
	lbIP := netip.MustParseAddr("10.251.0.7")
	// What the userspace proxy installs for a LoadBalancer address (pkg/proxy/userspace).
	c.Run(t, node, "ip", "route", "add", "local", lbIP.String()+"/32", "dev", "lo", "table", "local")
	if got := extAnswers(t, c, lbIP); len(got) != 1 {
		t.Fatalf("before: %d ARP answers for a locally routed address, want the kernel's one; the test shows nothing", len(got))
	}
	var changed []string
	err := c.Do(node, func() error {
		var err error
		changed, err = ensureStrictARP("eth0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 2 {
		t.Errorf("ensureStrictARP changed %v, want arp_ignore and arp_announce", changed)
	}
	if got := extAnswers(t, c, lbIP); len(got) != 0 {
		t.Errorf("with strict ARP the node's kernel still answers ARP for %s: %v", lbIP, got)
	}
	if got := extAnswers(t, c, netns.NodeAddr(1)); len(got) != 1 {
		t.Errorf("with strict ARP the node no longer answers ARP for its own address %s", netns.NodeAddr(1))
	}
	for s, want := range map[string]string{"arp_ignore": "1", "arp_announce": "2"} {
		if got := strings.TrimSpace(c.Run(t, node, "cat", "/proc/sys/net/ipv4/conf/eth0/"+s)); got != want {
			t.Errorf("node's eth0 %s = %s, want %s", s, got, want)
		}
	}
	// A second call finds nothing to do.
	_ = c.Do(node, func() error { changed, err = ensureStrictARP("eth0"); return err })
	if err != nil || len(changed) != 0 {
		t.Errorf("second ensureStrictARP: changed %v, %v", changed, err)
	}
}

func readyNode(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}}}
}

// extNeighbour is ext's cached MAC for ip ("" when none).
func extNeighbour(t *testing.T, c *netns.Cluster, ip netip.Addr) string {
	t.Helper()
	var mac string
	err := c.Do(netns.External, func() error {
		family := netlink.FAMILY_V4
		if ip.Is6() {
			family = netlink.FAMILY_V6
		}
		neighs, err := netlink.NeighList(0, family)
		for _, n := range neighs {
			if n.IP.Equal(ip.AsSlice()) && n.HardwareAddr != nil && n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
				mac = n.HardwareAddr.String()
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// TestAnnouncementMovesWhenTheAnnouncingAgentStops runs two announcers in two node namespaces
// against one (fake) API: exactly one answers ARP; when it stops the other takes over at once
// and ext's neighbour cache follows through the gratuitous ARP; when it comes back it takes
// its address back.
func TestAnnouncementMovesWhenTheAnnouncingAgentStops(t *testing.T) {
	c := netns.New(t, netns.Config{Nodes: 2})
	lbIP := netip.MustParseAddr("10.251.0.9")
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lbIP.String()}}
	client := fake.NewClientset(readyNode("node1"), readyNode("node2"), svc)

	owner := chooseNode(lbIP, []string{"node1", "node2"})
	other := map[string]string{"node1": "node2", "node2": "node1"}[owner]
	macs := map[string]string{"node1": macOf(t, c, "node1"), "node2": macOf(t, c, "node2")}

	agents := newTestAnnouncers(t, c, client, true)
	agents.start("node1")
	agents.start("node2")

	waitOnlyAnswer(t, c, lbIP, "both running", macs[owner], 5*time.Second)

	// ext talks to the address, so it caches the owner's MAC.
	if conn, err := c.Dial(context.Background(), netns.External, "udp", net.JoinHostPort(lbIP.String(), "9")); err == nil {
		conn.Write([]byte("x"))
		conn.Close()
	}
	waitNeighbour(t, c, lbIP, "ext talked to the address", macs[owner], 2*time.Second)

	stopped := time.Now()
	agents.stop(owner)
	took := waitNeighbour(t, c, lbIP, "the owner stopped", macs[other], time.Second)
	t.Logf("%s stopped: ext's neighbour entry moved to %s %v after the stop returned (%v after it began)", owner, other, took, time.Since(stopped))
	waitOnlyAnswer(t, c, lbIP, "the owner stopped", macs[other], time.Second)

	// Back: after listening for a hold it is a candidate again, and wins its address back.
	agents.start(owner)
	back := waitNeighbour(t, c, lbIP, "the owner restarted", macs[owner], 5*time.Second)
	waitOnlyAnswer(t, c, lbIP, "the owner restarted", macs[owner], time.Second)
	t.Logf("%s restarted: it announces again %v after its start", owner, back)
}

// TestAnnouncementMovesWhenTheAnnouncerFallsSilent: node1 "runs" as a peer that only beacons
// (a killed agent simply stops), node2 runs the announcer. While node1's beacons come, node2
// leaves node1's address alone; once they stop, node2 answers within a hold.
func TestAnnouncementMovesWhenTheAnnouncerFallsSilent(t *testing.T) {
	c := netns.New(t, netns.Config{Nodes: 2})
	var lbIP netip.Addr
	for i := 1; i < 255 && !lbIP.IsValid(); i++ {
		if ip := netip.AddrFrom4([4]byte{10, 251, 0, byte(i)}); chooseNode(ip, []string{"node1", "node2"}) == "node1" {
			lbIP = ip
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lbIP.String()}}
	client := fake.NewClientset(readyNode("node1"), readyNode("node2"), svc)
	const interval = 100 * time.Millisecond
	hold := BeaconHoldIntervals * interval

	var node1 *packetConn
	err := c.Do("node1", func() error {
		iface, err := net.InterfaceByName("eth0")
		if err == nil {
			node1, err = openPacket(iface, beaconEtherType)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer node1.Close()
	silent := make(chan struct{})
	beaconing := make(chan struct{})
	go func() {
		defer close(beaconing)
		for {
			node1.sendRaw(beacon{node: "node1", candidate: true, hold: hold}.marshal(), broadcastMAC)
			select {
			case <-silent:
				return
			case <-time.After(interval):
			}
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Do("node2", func() error {
			return Run(ctx, Config{Client: client, NodeName: "node2", NodeIP: netns.NodeAddr(2),
				NodeGracePeriod: time.Hour, BeaconInterval: interval})
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("announcer: %v", err)
		}
	}()
	// node2 is up (past its warm-up) and leaves node1's address alone.
	time.Sleep(hold + time.Second)
	if got := extAnswers(t, c, lbIP); len(got) != 0 {
		t.Fatalf("node2 answers for %s while node1, its chosen node, beacons: %v", lbIP, got)
	}
	close(silent)
	<-beaconing
	fell := time.Now()
	node2 := macOf(t, c, "node2")
	for {
		if got := extAnswers(t, c, lbIP); len(got) == 1 && got[0] == node2 {
			break
		}
		if time.Since(fell) > hold+time.Second {
			t.Fatalf("node2 does not answer for %s %v after node1 fell silent (hold %v)", lbIP, time.Since(fell), hold)
		}
	}
	t.Logf("node2 answers for %s %v after node1's last beacon (hold %v)", lbIP, time.Since(fell).Round(time.Millisecond), hold)
}

// testAnnouncers runs announcers in the node namespaces of c against client, as the agents
// would; every one still running is stopped when the test ends.
type testAnnouncers struct {
	t       *testing.T
	c       *netns.Cluster
	client  kubernetes.Interface
	strict  bool
	running map[string]announcerRun
}

type announcerRun struct {
	cancel context.CancelFunc
	done   chan error
}

func newTestAnnouncers(t *testing.T, c *netns.Cluster, client kubernetes.Interface, strictARP bool) *testAnnouncers {
	a := &testAnnouncers{t: t, c: c, client: client, strict: strictARP, running: map[string]announcerRun{}}
	t.Cleanup(func() {
		for node := range a.running {
			a.stop(node)
		}
	})
	return a
}

// start runs node's announcer (node1 or node2) in its namespace, beaconing every 100 ms.
func (a *testAnnouncers) start(node string) {
	ctx, cancel := context.WithCancel(context.Background())
	r := announcerRun{cancel: cancel, done: make(chan error, 1)}
	go func() {
		r.done <- a.c.Do(node, func() error {
			return Run(ctx, Config{Client: a.client, NodeName: node, NodeIP: netns.NodeAddr(map[string]int{"node1": 1, "node2": 2}[node]),
				NodeGracePeriod: time.Hour, BeaconInterval: 100 * time.Millisecond, StrictARP: a.strict})
		})
	}()
	a.running[node] = r
}

// stop stops node's announcer cleanly and waits for it.
func (a *testAnnouncers) stop(node string) {
	r, ok := a.running[node]
	if !ok {
		return
	}
	delete(a.running, node)
	r.cancel()
	if err := <-r.done; err != nil {
		a.t.Errorf("announcer of %s: %v", node, err)
	}
}
