package userspace

// The IPv6 plan of these tests is the dual-stack topology's (pkg/sandbox/topology, plan.go):
// node1 runs the proxy (one Proxier per family, as pkg/proxy/app runs them), node2 the
// backends, ext the outside client, all on the node network's bridge beside their IPv4
// addresses; Service CIDR topology.ServiceCIDRV6, and LoadBalancer IP fd00:97::1, which ext
// and node2 route via node1.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
	"github.com/svcplane/svcplane/test/netns"
)

var (
	node1V6       = topology.NodeAddrV6(1)
	node2V6       = topology.NodeAddrV6(2)
	extV6         = topology.ExternalAddrV6
	serviceCIDRV6 = topology.ServiceCIDRV6
	lbV6          = netip.MustParseAddr("fd00:97::1")
)

// dualStackCluster builds a dual-stack topology of two nodes (which also turns IPv6 on for lo,
// where the proxy's local routes need it) and routes the LoadBalancer IP via node1 from node2
// and ext.
func dualStackCluster(t *testing.T) *netns.Cluster {
	t.Helper()
	c := netns.New(t, netns.Config{Nodes: 2, DualStack: true})
	for _, step := range []struct {
		member string
		args   []string
	}{
		{netns.Node(2), []string{"ip", "-6", "route", "add", lbV6.String() + "/128", "via", node1V6.String()}},
		{netns.External, []string{"ip", "-6", "route", "add", lbV6.String() + "/128", "via", node1V6.String()}},
	} {
		if out, err := c.Command(context.Background(), step.member, step.args[0], step.args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s in %s: %v: %s", strings.Join(step.args, " "), step.member, err, out)
		}
	}
	return c
}

// describeProxyHeader reads the PROXY protocol header at the start of r and describes it:
// "v1 TCP6 <src> <dst>" or "v2 0x21 <src> <dst>" (the address family and transport byte:
// 0x21 is AF_INET6 over a stream).
func describeProxyHeader(r *bufio.Reader) (string, error) {
	head, err := r.Peek(14)
	if err != nil {
		return "", err
	}
	kind := "v1 " + strings.Fields(string(head))[1]
	if head[0] == '\r' {
		kind = fmt.Sprintf("v2 %#x", head[13])
	}
	src, dst, err := parseProxyHeader(r)
	return fmt.Sprintf("%s %s %s", kind, src, dst), err
}

// v6Backends starts node2's IPv6 backends: names on 8080 (8081 refuses), 8082 and 8083; a
// UDP echo on 5353; on 8090 one that answers with the PROXY header it received.
func v6Backends(t *testing.T, c *netns.Cluster) {
	t.Helper()
	node2 := netns.Node(2)
	listen := func(port uint16) net.Listener {
		ln, err := c.Listen(node2, "tcp", netip.AddrPortFrom(node2V6, port).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	go serveName(listen(8080), "live6")
	go serveName(listen(8082), "s1")
	go serveName(listen(8083), "s2")
	pp := listen(8090)
	go func() {
		for {
			conn, err := pp.Accept()
			if err != nil {
				return
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			desc, err := describeProxyHeader(bufio.NewReader(conn))
			if err != nil {
				desc = "error: " + err.Error()
			}
			fmt.Fprintln(conn, desc)
			conn.Close()
		}
	}()
	udp, err := c.ListenPacket(node2, "udp", netip.AddrPortFrom(node2V6, 5353).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			udp.WriteTo(append([]byte("re:"), buf[:n]...), from)
		}
	}()
}

// dualStackSpecs are node1's two Proxiers: IPv4 with one Service, IPv6 with the Services
// the test exercises.
func dualStackSpecs() []helperSpec {
	b := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(node2V6, port) }
	svc6 := func(last string) netip.Addr { return netip.MustParseAddr("fd00:96::" + last) }
	return []helperSpec{
		{Family: corev1.IPv4Protocol, ServiceCIDRs: []netip.Prefix{netns.ServiceCIDR}, NodeIPs: []netip.Addr{netns.NodeAddr(1)},
			Services: []helperService{{Name: "web", Protocol: corev1.ProtocolTCP, ClusterIP: netip.MustParseAddr("10.96.0.20"), Port: 80, NodePort: 30080,
				Endpoints: []netip.AddrPort{netip.AddrPortFrom(netns.NodeAddr(2), 8080)}}}},
		{Family: corev1.IPv6Protocol, ServiceCIDRs: []netip.Prefix{serviceCIDRV6}, NodeIPs: []netip.Addr{node1V6},
			Services: []helperService{
				// The refusing endpoint comes first: every client must still land on the live one.
				{Name: "web", Protocol: corev1.ProtocolTCP, ClusterIP: svc6("20"), Port: 80, NodePort: 30080,
					LoadBalancerIPs: []netip.Addr{lbV6}, SourceRanges: []netip.Prefix{netip.PrefixFrom(extV6, 128)},
					Endpoints: []netip.AddrPort{b(8081), b(8080)}},
				{Name: "dns", Protocol: corev1.ProtocolUDP, ClusterIP: svc6("a"), Port: 53, Endpoints: []netip.AddrPort{b(5353)}},
				{Name: "pp1", Protocol: corev1.ProtocolTCP, ClusterIP: svc6("30"), Port: 80, Endpoints: []netip.AddrPort{b(8090)},
					Annotations: map[string]string{annotationProxyProtocol: "v1"}},
				{Name: "pp2", Protocol: corev1.ProtocolTCP, ClusterIP: svc6("31"), Port: 80, Endpoints: []netip.AddrPort{b(8090)},
					Annotations: map[string]string{annotationProxyProtocol: "v2"}},
				{Name: "sticky", Protocol: corev1.ProtocolTCP, ClusterIP: svc6("40"), Port: 80, StickyTimeout: time.Hour,
					Endpoints: []netip.AddrPort{b(8082), b(8083)}},
			}},
	}
}

// askLine connects from member to addr and returns the first line it answers, and the
// client's own address.
func askLine(ctx context.Context, c *netns.Cluster, member string, addr netip.AddrPort) (string, netip.AddrPort, error) {
	conn, err := c.Dial(ctx, member, "tcp", addr.String())
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), conn.LocalAddr().(*net.TCPAddr).AddrPort(), err
}

func TestIPv6ServicesWorkBesideIPv4InsideANodeNamespace(t *testing.T) {
	c := dualStackCluster(t)
	node1, node2 := netns.Node(1), netns.Node(2)
	v6Backends(t, c)
	live4, err := c.Listen(node2, "tcp", netip.AddrPortFrom(netns.NodeAddr(2), 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	defer live4.Close()
	go serveName(live4, "live4")
	stop := startProxy(t, c, node1, dualStackSpecs()...)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ask := func(member string, addr netip.AddrPort) (string, error) {
		line, _, err := askLine(ctx, c, member, addr)
		return line, err
	}
	web6 := netip.MustParseAddrPort("[fd00:96::20]:80")
	for i := range 4 {
		if got, err := ask(node1, web6); got != "live6" {
			t.Errorf("IPv6 ClusterIP from the node, connection %d: got %q, %v; want live6", i, got, err)
		}
	}
	if got, err := ask(node1, netip.MustParseAddrPort("10.96.0.20:80")); got != "live4" {
		t.Errorf("IPv4 ClusterIP beside the IPv6 Proxier: got %q, %v; want live4", got, err)
	}
	if got, err := ask(netns.External, netip.AddrPortFrom(node1V6, 30080)); got != "live6" {
		t.Errorf("NodePort on the node's IPv6 address from outside: got %q, %v", got, err)
	}
	if got, err := ask(netns.External, netip.AddrPortFrom(netns.NodeAddr(1), 30080)); got != "live4" {
		t.Errorf("NodePort on the node's IPv4 address from outside: got %q, %v", got, err)
	}
	lb := netip.AddrPortFrom(lbV6, 80)
	if got, err := ask(netns.External, lb); got != "live6" {
		t.Errorf("IPv6 LoadBalancer IP from ext, inside loadBalancerSourceRanges: got %q, %v", got, err)
	}
	if got, err := ask(node2, lb); got != "" || err == nil {
		t.Errorf("IPv6 LoadBalancer IP from node2, outside loadBalancerSourceRanges: got %q, %v; want the connection closed unanswered", got, err)
	}
	// The whole IPv6 Service CIDR is local: an address without a Service is refused at once.
	if _, err := ask(node1, netip.MustParseAddrPort("[fd00:96::99]:80")); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("unused IPv6 Service IP: got %v, want connection refused", err)
	}

	t.Run("UDP", func(t *testing.T) {
		dns := netip.MustParseAddrPort("[fd00:96::a]:53")
		udp, err := c.ListenPacket(node1, "udp", "[::]:0")
		if err != nil {
			t.Fatal(err)
		}
		defer udp.Close()
		buf := make([]byte, 64)
		for _, q := range []string{"q1", "q2"} {
			udp.WriteTo([]byte(q), net.UDPAddrFromAddrPort(dns))
			udp.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := udp.ReadFrom(buf)
			var fromAddr netip.AddrPort
			if err == nil {
				fromAddr = from.(*net.UDPAddr).AddrPort()
			}
			if err != nil || string(buf[:n]) != "re:"+q || fromAddr != dns {
				t.Errorf("UDP to the IPv6 ClusterIP: got %q from %v, %v; want re:%s from %s", buf[:n], from, err, q, dns)
			}
		}
	})
	t.Run("PROXY protocol", func(t *testing.T) {
		for _, tc := range []struct{ addr, kind string }{{"[fd00:96::30]:80", "v1 TCP6"}, {"[fd00:96::31]:80", "v2 0x21"}} {
			addr := netip.MustParseAddrPort(tc.addr)
			got, client, err := askLine(ctx, c, node1, addr)
			if want := fmt.Sprintf("%s %s %s", tc.kind, client, addr); got != want {
				t.Errorf("%s: backend saw %q, %v; want %q", tc.addr, got, err, want)
			}
		}
	})
	t.Run("ClientIP affinity", func(t *testing.T) {
		sticky := netip.MustParseAddrPort("[fd00:96::40]:80")
		first, err := ask(node1, sticky)
		if first != "s1" && first != "s2" {
			t.Fatalf("got %q, %v", first, err)
		}
		for i := range 6 {
			if got, err := ask(node1, sticky); got != first {
				t.Errorf("connection %d: got %q, %v; want %q like the first", i, got, err, first)
			}
		}
	})

	localRoutes := func(family string) string {
		return c.Run(t, node1, "ip", family, "route", "show", "table", "local", "proto", fmt.Sprint(int(routeProtocol)))
	}
	v4, v6 := localRoutes("-4"), localRoutes("-6")
	if !strings.Contains(v4, "local 10.96.0.0/12 dev lo") || !strings.Contains(v6, "local fd00:96::/112 dev lo") ||
		!strings.Contains(v6, "local fd00:97::1 dev lo") {
		t.Errorf("local routes of the proxy: IPv4 %q, IPv6 %q; want both Service CIDRs and the LoadBalancer IP", v4, v6)
	}

	// A restart after a crash (the routes left behind): each Proxier adopts and keeps its own
	// family's routes, and neither removes the other's.
	stop()
	crashed := dualStackSpecs()
	for i := range crashed {
		crashed[i].LeaveRoutes = true
	}
	startProxy(t, c, node1, crashed...)()
	if left := localRoutes("-6"); !strings.Contains(left, "fd00:96::/112") {
		t.Fatalf("the crashed helper left no IPv6 routes to adopt: %q", left)
	}
	stop = startProxy(t, c, node1, dualStackSpecs()...)
	if got, err := ask(node1, web6); got != "live6" {
		t.Errorf("IPv6 ClusterIP after a restart: got %q, %v", got, err)
	}
	if got, err := ask(node1, netip.MustParseAddrPort("10.96.0.20:80")); got != "live4" {
		t.Errorf("IPv4 ClusterIP after a restart: got %q, %v", got, err)
	}
	stop()
	if v4, v6 := localRoutes("-4"), localRoutes("-6"); strings.TrimSpace(v4+v6) != "" {
		t.Errorf("routes left after the proxy stopped: %q %q", v4, v6)
	}
}

// IPv6 Service IPs need IPv6 on lo: without it the IPv6 Proxier must refuse to start, naming
// the setting, rather than fail every sync (pkg/proxy/app then serves IPv4 alone, or stops
// when IPv6 was required).
func TestIPv6ProxierNamesIPv6DisabledOnLo(t *testing.T) {
	c := netns.New(t, netns.Config{Nodes: 1})
	node1 := netns.Node(1)
	c.Run(t, node1, "sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=1")
	_, err := runProxy(t, c, node1, helperSpec{Family: corev1.IPv6Protocol, ServiceCIDRs: []netip.Prefix{serviceCIDRV6}, NodeIPs: []netip.Addr{node1V6}})
	if err == nil || !strings.Contains(err.Error(), "net.ipv6.conf.lo.disable_ipv6=1") {
		t.Errorf("got %v, want a refusal naming net.ipv6.conf.lo.disable_ipv6=1", err)
	}
}
