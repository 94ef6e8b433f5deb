package netns

// Addresses: each test node gets a private network namespace (held by a pause process) with a
// bridge cbr0 10.244.7.1/24 (and, dual-stack, fd00:244:0:7::1/64, which New adds itself); Pods
// are 10.244.7.x and fd00:244:0:7::x. Nothing is configured outside those namespaces.

import (
	"io"
	"net"
	"net/netip"
	"os"
	goruntime "runtime"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/svcplane/svcplane/pkg/agent/runtime"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "pod-init" {
		if err := runtime.InitMain(os.Args[2:]); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(127)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var (
	podCIDR   = netip.MustParsePrefix("10.244.7.0/24")
	podCIDRv6 = netip.MustParsePrefix("fd00:244:0:7::/64")
)

// holder starts a process in a fresh network namespace and returns the namespace's path.
func holder(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	r := &runtime.Runtime{Init: []string{os.Args[0], "pod-init"}}
	p, err := r.Start(runtime.Spec{NewNetNS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runtime.Stop(p, time.Second) })
	return p.NetNSPath()
}

func testNode(t *testing.T, cidrs ...netip.Prefix) (nodeNS string, n *Network) {
	t.Helper()
	if len(cidrs) == 0 {
		cidrs = []netip.Prefix{podCIDR}
	}
	nodeNS = holder(t)
	h, err := handleAt(nodeNS)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cbr0", Flags: net.FlagUp}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP{10, 244, 7, 1}, Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	n, err = New(Config{NodeNS: nodeNS, Bridge: "cbr0", PodCIDRs: cidrs, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return nodeNS, n
}

// inNS runs fn on a thread inside the namespace at path.
func inNS(t *testing.T, path string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		goruntime.LockOSThread()
		// The thread is left locked, so Go discards it instead of reusing it elsewhere.
		ns, err := vnetns.GetFromPath(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer ns.Close()
		if err := vnetns.Set(ns); err != nil {
			t.Error(err)
			return
		}
		fn()
	}()
	<-done
}

func TestPodsOnOneBridgeReachEachOtherAndTheGateway(t *testing.T) {
	nodeNS, n := testNode(t)
	if n.Gateway() != netip.MustParseAddr("10.244.7.1") {
		t.Fatalf("gateway %s", n.Gateway())
	}
	podA, podB := holder(t), holder(t)
	ipsA, err := n.Allocate("uid-a")
	if err != nil {
		t.Fatal(err)
	}
	ipsB, _ := n.Allocate("uid-b")
	if len(ipsA) != 1 || len(ipsB) != 1 {
		t.Fatalf("IPv4-only node gave %v and %v; want one address each", ipsA, ipsB)
	}
	ipA, ipB := ipsA[0], ipsB[0]
	if ipA == ipB || ipA == n.Gateway() {
		t.Fatalf("addresses %s %s", ipA, ipB)
	}
	if err := n.Attach(podA, "uid-a", ipsA); err != nil {
		t.Fatal(err)
	}
	if err := n.Attach(podB, "uid-b", ipsB); err != nil {
		t.Fatal(err)
	}

	// Pod a sees pod b by its own address, and the node by its bridge address (the source the
	// node picks for the pod network).
	expectSeenAs(t, podA, netip.AddrPortFrom(ipA, 8080), map[string]netip.Addr{
		"pod b": ipB, "node": netip.MustParseAddr("10.244.7.1")}, map[string]string{"pod b": podB, "node": nodeNS})
	// The Pod's default route points at the bridge.
	inNS(t, podB, func() {
		routes, err := netlink.RouteGet(net.IP{10, 250, 0, 2})
		if err != nil || len(routes) == 0 || !routes[0].Gw.Equal(net.IP{10, 244, 7, 1}) {
			t.Errorf("route to 10.250.0.2 from a Pod: %v %v", routes, err)
		}
	})

	if err := n.Detach("uid-a"); err != nil {
		t.Fatal(err)
	}
	h, _ := handleAt(nodeNS)
	defer h.Close()
	if _, err := h.LinkByName(HostVeth("uid-a")); err == nil {
		t.Error("veth of pod a survived Detach")
	}
}

func TestAllocationsSurviveRestartAndAreNotReusedAtOnce(t *testing.T) {
	dir := t.TempDir()
	cidr := netip.MustParsePrefix("10.244.7.0/29")
	n := &Network{cfg: Config{PodCIDRs: []netip.Prefix{cidr}, StateDir: dir},
		pools: []*pool{{cidr: cidr, gateway: netip.MustParseAddr("10.244.7.1"), dir: dir}}}
	one := func(n *Network, owner string) (netip.Addr, error) {
		ips, err := n.Allocate(owner)
		if err != nil {
			return netip.Addr{}, err
		}
		return ips[0], nil
	}
	a, _ := one(n, "a")
	b, _ := one(n, "b")
	if a.String() != "10.244.7.2" || b.String() != "10.244.7.3" {
		t.Fatalf("got %s %s, want .2 .3 (.1 is the gateway)", a, b)
	}
	again, _ := one(n, "a")
	if again != a {
		t.Errorf("same owner got %s, then %s", a, again)
	}
	// A restarted agent reads the same directory.
	restarted := &Network{cfg: n.cfg, pools: []*pool{{cidr: cidr, gateway: n.Gateway(), dir: dir}}}
	c, _ := one(restarted, "c")
	if c.String() != "10.244.7.4" {
		t.Errorf("after restart got %s, want 10.244.7.4", c)
	}
	restarted.Release("a")
	d, _ := one(restarted, "d")
	if d == a {
		t.Errorf("freed %s reused at once", a)
	}
	// .5 and .6 remain, then the scan wraps around to the freed .2; .7 is broadcast.
	e, _ := one(restarted, "e")
	f, err := one(restarted, "f")
	if err != nil || e.String() != "10.244.7.6" || f.String() != "10.244.7.2" {
		t.Errorf("got %s %s %v, want .6 then the freed .2", e, f, err)
	}
	if _, err := restarted.Allocate("g"); err == nil {
		t.Error("allocation from a full CIDR succeeded")
	}
}

func TestDualStackPodsGetAnAddressPerFamilyAndTalkOverIPv6(t *testing.T) {
	nodeNS, n := testNode(t, podCIDR, podCIDRv6)
	gw6 := netip.MustParseAddr("fd00:244:0:7::1")
	if got := n.Gateways(); len(got) != 2 || got[0] != netip.MustParseAddr("10.244.7.1") || got[1] != gw6 {
		t.Fatalf("gateways %v; want 10.244.7.1 and the IPv6 CIDR's first address %s", got, gw6)
	}
	// New gave the bridge its IPv6 gateway, usable at once (not tentative).
	h, _ := handleAt(nodeNS)
	defer h.Close()
	br, _ := h.LinkByName("cbr0")
	addrs, _ := h.AddrList(br, netlink.FAMILY_V6)
	found := false
	for _, a := range addrs {
		if a.IP.Equal(gw6.AsSlice()) {
			found = a.Flags&unix.IFA_F_TENTATIVE == 0
		}
	}
	if !found {
		t.Fatalf("cbr0 has no usable %s: %v", gw6, addrs)
	}
	// A second agent start finds the address instead of adding it again.
	if again, err := New(Config{NodeNS: nodeNS, Bridge: "cbr0", PodCIDRs: []netip.Prefix{podCIDR, podCIDRv6}, StateDir: t.TempDir()}); err != nil || again.Gateways()[1] != gw6 {
		t.Fatalf("restarted agent: %v", err)
	}

	podA, podB := holder(t), holder(t)
	ipsA, err := n.Allocate("uid-a")
	if err != nil {
		t.Fatal(err)
	}
	ipsB, _ := n.Allocate("uid-b")
	if len(ipsA) != 2 || !ipsA[0].Is4() || !podCIDRv6.Contains(ipsA[1]) || ipsA[1] == gw6 || ipsA[1] == ipsB[1] {
		t.Fatalf("addresses %v and %v; want IPv4 then IPv6, distinct, not the gateway", ipsA, ipsB)
	}
	if err := n.Attach(podA, "uid-a", ipsA); err != nil {
		t.Fatal(err)
	}
	if err := n.Attach(podB, "uid-b", ipsB); err != nil {
		t.Fatal(err)
	}
	expectSeenAs(t, podA, netip.AddrPortFrom(ipsA[1], 8080), map[string]netip.Addr{
		"pod b": ipsB[1], "node": gw6}, map[string]string{"pod b": podB, "node": nodeNS})
	// The Pod's IPv6 default route points at the bridge too.
	inNS(t, podB, func() {
		routes, err := netlink.RouteGet(net.ParseIP("fd00:250::2"))
		if err != nil || len(routes) == 0 || !routes[0].Gw.Equal(gw6.AsSlice()) {
			t.Errorf("route to fd00:250::2 from a Pod: %v %v", routes, err)
		}
	})

	if err := n.Release("uid-a"); err != nil {
		t.Fatal(err)
	}
	for ip, owner := range n.Allocations() {
		if owner == "uid-a" {
			t.Errorf("%s still allocated to the released pod", ip)
		}
	}
}

func TestDualStackAllocationFollowsPodCIDROrderAndIsAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	v4, v6 := netip.MustParsePrefix("10.244.7.0/29"), netip.MustParsePrefix("fd00:244:0:7::/126")
	// IPv6 primary: addresses come IPv6 first. The /126 has one address for Pods: ::1 is the
	// gateway and ::3, the last, is left out as IPv4's broadcast address is.
	n := &Network{cfg: Config{PodCIDRs: []netip.Prefix{v6, v4}, StateDir: dir}, pools: []*pool{
		{cidr: v6, gateway: netip.MustParseAddr("fd00:244:0:7::1"), dir: dir + "/ipv6"},
		{cidr: v4, gateway: netip.MustParseAddr("10.244.7.1"), dir: dir},
	}}
	os.MkdirAll(dir+"/ipv6", 0o700)
	a, err := n.Allocate("a")
	if err != nil || len(a) != 2 || a[0].String() != "fd00:244:0:7::2" || a[1].String() != "10.244.7.2" {
		t.Fatalf("got %v, %v; want [fd00:244:0:7::2 10.244.7.2]", a, err)
	}
	if _, err := n.Allocate("b"); err == nil {
		t.Fatal("allocation succeeded with the IPv6 pod CIDR full")
	}
	for ip, owner := range n.Allocations() {
		if owner == "b" {
			t.Errorf("%s kept for a Pod whose IPv6 allocation failed", ip)
		}
	}
	n.Release("a")
	if got := n.Allocations(); len(got) != 0 {
		t.Errorf("after release: %v", got)
	}
}

// expectSeenAs serves at addr in namespace ns, answering each connection with its peer's
// address, and checks that a connection from each namespace in from is seen with the address
// want gives for it.
func expectSeenAs(t *testing.T, ns string, addr netip.AddrPort, want map[string]netip.Addr, from map[string]string) {
	t.Helper()
	var ln net.Listener
	inNS(t, ns, func() {
		var err error
		if ln, err = net.Listen("tcp", addr.String()); err != nil {
			t.Error(err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, c.RemoteAddr().String())
			c.Close()
		}
	}()
	for name, fromNS := range from {
		inNS(t, fromNS, func() {
			c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
			if err != nil {
				t.Errorf("%s → %s: %v", name, addr, err)
				return
			}
			defer c.Close()
			b, _ := io.ReadAll(c)
			if got, err := netip.ParseAddrPort(string(b)); err != nil || got.Addr().Unmap() != want[name] {
				t.Errorf("%s seen as %q, want %s", name, b, want[name])
			}
		})
	}
}

// TestMissingBridgeIsCreatedWithEachCIDRsGateway: on a node without the pod bridge (a host
// running `svcplane server --agent`), New makes it, up, with the first address of each pod
// CIDR, and Pods attached to it reach each other through it.
func TestMissingBridgeIsCreatedWithEachCIDRsGateway(t *testing.T) {
	nodeNS := holder(t)
	n, err := New(Config{NodeNS: nodeNS, Bridge: "cbr0", PodCIDRs: []netip.Prefix{podCIDR, podCIDRv6}, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Addr{netip.MustParseAddr("10.244.7.1"), netip.MustParseAddr("fd00:244:0:7::1")}; !slices.Equal(n.Gateways(), want) {
		t.Errorf("gateways %v, want %v", n.Gateways(), want)
	}
	h, err := handleAt(nodeNS)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br, err := h.LinkByName("cbr0")
	if err != nil {
		t.Fatal(err)
	}
	if br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("cbr0 is a %s with flags %v, want a bridge that is up", br.Type(), br.Attrs().Flags)
	}
	podA, podB := holder(t), holder(t)
	ipsA, _ := n.Allocate("uid-a")
	ipsB, _ := n.Allocate("uid-b")
	if err := n.Attach(podA, "uid-a", ipsA); err != nil {
		t.Fatal(err)
	}
	if err := n.Attach(podB, "uid-b", ipsB); err != nil {
		t.Fatal(err)
	}
	expectSeenAs(t, podA, netip.AddrPortFrom(ipsA[0], 8080), map[string]netip.Addr{"pod b": ipsB[0]}, map[string]string{"pod b": podB})

	// A second agent start finds the bridge it made and keeps its addresses.
	again, err := New(Config{NodeNS: nodeNS, Bridge: "cbr0", PodCIDRs: []netip.Prefix{podCIDR, podCIDRv6}, StateDir: t.TempDir()})
	if err != nil || !slices.Equal(again.Gateways(), n.Gateways()) {
		t.Errorf("second New: gateways %v, %v; want %v", again.Gateways(), err, n.Gateways())
	}
}
