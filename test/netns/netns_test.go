package netns_test

// Addresses used here (see ARCHITECTURE.md, "Test topology"): the node network 10.250.0.0/24,
// pod CIDRs 10.244.N.0/24, and two addresses that must have no route anywhere in a sandbox:
// 192.0.2.1 (TEST-NET-1, also this CI host's own uplink) and 8.8.8.8 (public).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/svcplane/svcplane/pkg/sandbox/hostguard"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
	"github.com/svcplane/svcplane/test/netns"
)

func TestNodeReachesOtherNodesPodBridge(t *testing.T) {
	c := netns.New(t, netns.Config{Nodes: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if err := c.Ping(ctx, netns.Node(1), netns.PodGateway(2)); err != nil {
		t.Fatal(err)
	}
	target := netip.AddrPortFrom(netns.PodGateway(2), 8080).String()
	echoTCP(t, c, netns.Node(2), netns.Node(1), target)
	echoUDP(t, c, netns.Node(2), netns.Node(1), target)
}

func TestExternalClientReachesNodes(t *testing.T) {
	c := netns.New(t, netns.Config{Nodes: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for n := 1; n <= 2; n++ {
		if err := c.Ping(ctx, netns.External, netns.NodeAddr(n)); err != nil {
			t.Fatal(err)
		}
	}
	echoTCP(t, c, netns.Node(2), netns.External, netip.AddrPortFrom(netns.NodeAddr(2), 30080).String())
	if err := c.Ping(ctx, netns.ControlPlane, netns.PodGateway(1)); err != nil {
		t.Errorf("control plane should reach pod networks: %v", err)
	}
}

func TestNothingRoutesOffMachine(t *testing.T) {
	c := netns.New(t, netns.Config{Nodes: 2})
	for _, member := range c.Members() {
		for _, dst := range []string{"192.0.2.1", "8.8.8.8", "1.1.1.1"} {
			routes, err := c.RouteGet(member, netip.MustParseAddr(dst))
			if !errors.Is(err, syscall.ENETUNREACH) {
				t.Errorf("%s: route lookup for %s gave %v, %v; want ENETUNREACH", member, dst, routes, err)
			}
		}
	}
	// A dial fails locally, without a packet leaving the namespace.
	_, err := c.Dial(context.Background(), netns.External, "tcp", "8.8.8.8:53")
	if !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("dial 8.8.8.8 from ext: got %v, want ENETUNREACH", err)
	}
}

func TestRoutesFollowTheAddressPlan(t *testing.T) {
	c := netns.New(t, netns.Config{Nodes: 3})
	cases := []struct {
		member string
		dst    string
		via    netip.Addr // zero: directly connected
	}{
		{netns.Node(1), "10.244.2.7", netns.NodeAddr(2)},
		{netns.Node(1), "10.244.3.7", netns.NodeAddr(3)},
		{netns.Node(3), "10.244.1.7", netns.NodeAddr(1)},
		{netns.Node(1), "10.96.0.10", netns.BridgeAddr},
		{netns.Node(2), "10.251.0.5", netns.BridgeAddr},
		{netns.ControlPlane, "10.244.3.7", netns.NodeAddr(3)},
		// The LoadBalancer pool is on-link for the outside client: it ARPs, nodes announce.
		{netns.External, "10.251.0.5", netip.Addr{}},
		{netns.External, "10.250.0.13", netip.Addr{}},
	}
	for _, tc := range cases {
		routes, err := c.RouteGet(tc.member, netip.MustParseAddr(tc.dst))
		if err != nil {
			t.Errorf("%s → %s: %v", tc.member, tc.dst, err)
			continue
		}
		gw, _ := netip.AddrFromSlice(routes[0].Gw)
		if gw.Unmap() != tc.via {
			t.Errorf("%s → %s: via %v, want %v", tc.member, tc.dst, gw, tc.via)
		}
	}
	if _, err := c.RouteGet(netns.External, netip.MustParseAddr("10.244.1.7")); err == nil {
		t.Errorf("ext should have no route to pod networks")
	}
}

func TestSysctlsAreSetOnlyInsideNamespaces(t *testing.T) {
	c := netns.New(t, netns.Config{Nodes: 1})
	want := map[string]string{netns.Node(1): "1", netns.ControlPlane: "0", netns.External: "0", netns.Network: "0"}
	for member, v := range want {
		if got := strings.TrimSpace(c.Run(t, member, "cat", "/proc/sys/net/ipv4/ip_forward")); got != v {
			t.Errorf("%s: ip_forward = %s, want %s", member, got, v)
		}
	}
	// The host's own value is checked by the cleanup New registered (hostguard).
}

func TestTwoClustersSideBySideAreIsolated(t *testing.T) {
	a := netns.New(t, netns.Config{Nodes: 2})
	b := netns.New(t, netns.Config{Nodes: 2})
	if a.Name() == b.Name() {
		t.Fatalf("both clusters are named %q", a.Name())
	}
	target := netip.AddrPortFrom(netns.NodeAddr(2), 9000).String()
	ln, err := a.Listen(netns.Node(2), "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Same address, other cluster: b's node2 has no listener, so the connection is refused.
	if conn, err := b.Dial(ctx, netns.Node(1), "tcp", target); err == nil {
		conn.Close()
		t.Fatalf("cluster %s reached a listener of cluster %s", b.Name(), a.Name())
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial in the other cluster: %v, want connection refused", err)
	}
	conn, err := a.Dial(ctx, netns.Node(1), "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

// TestUpDownLeavesNothingBehind also checks the speed bar: a 3-node topology up in well under
// 5 s and down in under 2 s.
func TestUpDownLeavesNothingBehind(t *testing.T) {
	netns.Require(t)
	name := fmt.Sprintf("cycle%d", os.Getpid())
	// Other test processes (another package's tests, run in parallel by `go test ./...`) may
	// add and remove their own topologies meanwhile; everything else must stay as it is.
	notOtherTopologies := func(ns string) bool {
		return !strings.HasPrefix(ns, topology.NamespacePrefix) || strings.HasPrefix(ns, topology.NamespaceName(name, ""))
	}
	beforeNS := slices.DeleteFunc(ipLines(t, "netns", "list"), func(ns string) bool { return !notOtherTopologies(ns) })
	beforeLinks := ipLines(t, "-o", "link", "show")
	beforeRoutes := ipLines(t, "route", "show", "table", "all")
	beforeHost, err := hostguard.Take(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	const cycles = 20
	var upTotal, downTotal, upMax, downMax time.Duration
	for i := range cycles {
		start := time.Now()
		topo, err := topology.Create(topology.Options{Name: name, Nodes: 3})
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		up := time.Since(start)
		start = time.Now()
		if err := topo.Close(); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		down := time.Since(start)
		upTotal, downTotal = upTotal+up, downTotal+down
		upMax, downMax = max(upMax, up), max(downMax, down)
	}
	t.Logf("3-node topology over %d cycles: up avg %v max %v; down avg %v max %v",
		cycles, upTotal/cycles, upMax, downTotal/cycles, downMax)
	if upMax > 5*time.Second || downMax > 2*time.Second {
		t.Errorf("too slow: up max %v (bar 5s), down max %v (bar 2s)", upMax, downMax)
	}

	afterNS := slices.DeleteFunc(ipLines(t, "netns", "list"), func(ns string) bool { return !notOtherTopologies(ns) })
	if !slices.Equal(netnsNames(afterNS), netnsNames(beforeNS)) {
		t.Errorf("ip netns list changed:\nbefore %q\nafter  %q", beforeNS, afterNS)
	}
	if got := linkNames(ipLines(t, "-o", "link", "show")); !slices.Equal(got, linkNames(beforeLinks)) {
		t.Errorf("root links changed:\nbefore %q\nafter  %q", linkNames(beforeLinks), got)
	}
	if got := ipLines(t, "route", "show", "table", "all"); !slices.Equal(got, beforeRoutes) {
		t.Errorf("root routes changed:\nbefore %q\nafter  %q", beforeRoutes, got)
	}
	// The same and more (rules, IPv6 routes, nft ruleset, forwarding sysctls) through the
	// guard the sandbox itself uses.
	afterHost, err := hostguard.Take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := hostguard.Unchanged(beforeHost, afterHost, topology.IgnoreNamespaces); err != nil {
		t.Error(err)
	}
	if _, ok := afterHost.Sections["nftables"]; !ok {
		t.Error("the host guard recorded no nftables ruleset")
	}
	for _, note := range afterHost.Notes {
		t.Log("host guard: " + note)
	}
}

func TestStaleTopologyOfADeadOwnerIsRemoved(t *testing.T) {
	netns.Require(t)
	topo, err := topology.Create(topology.Options{Name: "stale-test", Nodes: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topology.Remove("stale-test") })
	// A process left running inside, as a killed test might leave a server behind.
	sleeper := topo.Command(context.Background(), netns.Node(1), "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()
	waitUntilInNamespace(t, sleeper.Process.Pid, topo.Namespace(netns.Node(1)))
	// Dropping the lock without tearing down is what a SIGKILLed owner leaves.
	topo.Detach()

	removed, err := topology.CleanupStale()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, "stale-test") {
		t.Fatalf("CleanupStale removed %q, want stale-test among them", removed)
	}
	for _, ns := range ipLines(t, "netns", "list") {
		if strings.HasPrefix(ns, "svp-stale-test-") {
			t.Errorf("namespace %s survived cleanup", ns)
		}
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Error("the process left inside the stale sandbox was not killed")
	}
}

func TestTopologyInUseIsNotTouchedByCleanup(t *testing.T) {
	c := netns.New(t, netns.Config{Nodes: 1})
	removed, err := topology.CleanupStale()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(removed, c.Name()) {
		t.Fatalf("CleanupStale removed %s while it was in use", c.Name())
	}
	if _, err := topology.Create(topology.Options{Name: c.Name(), Nodes: 1}); err == nil {
		t.Fatalf("a second Create of %s succeeded while the first owns it", c.Name())
	}
	if err := c.Ping(context.Background(), netns.External, netns.NodeAddr(1)); err != nil {
		t.Fatal(err)
	}
}

// waitUntilInNamespace waits for `ip netns exec` to have moved pid into ns.
func waitUntilInNamespace(t *testing.T, pid int, ns string) {
	t.Helper()
	want, err := os.Stat("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && os.SameFile(got, want) {
			return
		}
	}
	t.Fatalf("pid %d never entered %s", pid, ns)
}

func echoTCP(t *testing.T, c *netns.Cluster, server, client, address string) {
	t.Helper()
	ln, err := c.Listen(server, "tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		io.Copy(conn, conn)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, client, "tcp", address)
	if err != nil {
		t.Fatalf("tcp %s → %s %s: %v", client, server, address, err)
	}
	defer conn.Close()
	roundTrip(t, conn, "tcp "+client+" → "+address)
}

func echoUDP(t *testing.T, c *netns.Cluster, server, client, address string) {
	t.Helper()
	pc, err := c.ListenPacket(server, "udp", address)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 1500)
		n, from, err := pc.ReadFrom(buf)
		if err == nil {
			pc.WriteTo(buf[:n], from)
		}
	}()
	conn, err := c.Dial(context.Background(), client, "udp", address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip(t, conn, "udp "+client+" → "+address)
}

func roundTrip(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatalf("%s: write: %v", what, err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("%s: echo = %q, %v", what, buf, err)
	}
}

func ipLines(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("ip", args...).Output()
	if err != nil {
		t.Fatalf("ip %s: %v", strings.Join(args, " "), err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	return lines
}

// netnsNames drops the "(id: N)" that `ip netns list` adds once a namespace has a peer id.
func netnsNames(lines []string) []string {
	var names []string
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

func linkNames(lines []string) []string {
	var names []string
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return names
}
