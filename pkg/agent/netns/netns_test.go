package netns

// Addresses: each test node gets a private network namespace (held by a pause process) with a
// bridge cbr0 10.244.7.1/24; Pods are 10.244.7.x. Nothing is configured outside those
// namespaces.

import (
	"io"
	"net"
	"net/netip"
	"os"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

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

var podCIDR = netip.MustParsePrefix("10.244.7.0/24")

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

func testNode(t *testing.T) (nodeNS string, n *Network) {
	t.Helper()
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
	n, err = New(Config{NodeNS: nodeNS, Bridge: "cbr0", PodCIDR: podCIDR, StateDir: t.TempDir()})
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
	ipA, err := n.Allocate("uid-a")
	if err != nil {
		t.Fatal(err)
	}
	ipB, _ := n.Allocate("uid-b")
	if ipA == ipB || ipA == n.Gateway() {
		t.Fatalf("addresses %s %s", ipA, ipB)
	}
	if err := n.Attach(podA, "uid-a", ipA); err != nil {
		t.Fatal(err)
	}
	if err := n.Attach(podB, "uid-b", ipB); err != nil {
		t.Fatal(err)
	}

	var ln net.Listener
	inNS(t, podA, func() {
		var err error
		if ln, err = net.Listen("tcp", ipA.String()+":8080"); err != nil {
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
	for _, from := range []struct{ name, ns, wantIP string }{{"pod b", podB, ipB.String()}, {"node", nodeNS, "10.244.7.1"}} {
		inNS(t, from.ns, func() {
			c, err := net.DialTimeout("tcp", ipA.String()+":8080", 5*time.Second)
			if err != nil {
				t.Errorf("%s → pod a: %v", from.name, err)
				return
			}
			defer c.Close()
			b, _ := io.ReadAll(c)
			if host, _, _ := net.SplitHostPort(string(b)); host != from.wantIP {
				t.Errorf("%s seen as %q, want %s", from.name, b, from.wantIP)
			}
		})
	}
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
	n := &Network{cfg: Config{PodCIDR: netip.MustParsePrefix("10.244.7.0/29"), StateDir: dir}, gateway: netip.MustParseAddr("10.244.7.1")}
	a, _ := n.Allocate("a")
	b, _ := n.Allocate("b")
	if a.String() != "10.244.7.2" || b.String() != "10.244.7.3" {
		t.Fatalf("got %s %s, want .2 .3 (.1 is the gateway)", a, b)
	}
	again, _ := n.Allocate("a")
	if again != a {
		t.Errorf("same owner got %s, then %s", a, again)
	}
	// A restarted agent reads the same directory.
	restarted := &Network{cfg: n.cfg, gateway: n.gateway}
	c, _ := restarted.Allocate("c")
	if c.String() != "10.244.7.4" {
		t.Errorf("after restart got %s, want 10.244.7.4", c)
	}
	restarted.Release("a")
	d, _ := restarted.Allocate("d")
	if d == a {
		t.Errorf("freed %s reused at once", a)
	}
	// .5 and .6 remain, then the scan wraps around to the freed .2; .7 is broadcast.
	e, _ := restarted.Allocate("e")
	f, err := restarted.Allocate("f")
	if err != nil || e.String() != "10.244.7.6" || f.String() != "10.244.7.2" {
		t.Errorf("got %s %s %v, want .6 then the freed .2", e, f, err)
	}
	if _, err := restarted.Allocate("g"); err == nil {
		t.Error("allocation from a full CIDR succeeded")
	}
}
