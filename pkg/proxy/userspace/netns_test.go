package userspace

// Addresses used here (ARCHITECTURE.md, "Test topology"), all inside namespaces this test
// creates: node1 10.250.0.11 runs the proxy, node2 10.250.0.12 the backends, ext 10.250.0.200
// the outside client; Service CIDR 10.96.0.0/12 (web 10.96.0.20, dns 10.96.0.10, nothing at
// 10.96.0.99).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/svcplane/svcplane/pkg/proxy"
	"github.com/svcplane/svcplane/test/netns"
)

// helperEnv, when set, turns the test binary into a proxy process: it creates one Proxier per
// spec in the variable's value (a JSON list, one spec per IP family, all created before the
// first sync as pkg/proxy/app does), programs each with local routes on, prints "ready", and
// stops when its standard input closes. Tests start it inside a node namespace, never in the
// host's.
const helperEnv = "SVCPLANE_USERSPACE_HELPER"

// helperHostNSEnv carries the starting test's namespace, where the helper refuses to run.
const helperHostNSEnv = "SVCPLANE_USERSPACE_HELPER_HOSTNS"

func helperEnviron(spec string) []string {
	host, _ := os.Readlink("/proc/self/ns/net")
	return append(os.Environ(), helperEnv+"="+spec, helperHostNSEnv+"="+host)
}

type helperSpec struct {
	Family       corev1.IPFamily
	ServiceCIDRs []netip.Prefix
	NodeIPs      []netip.Addr
	Services     []helperService
	// LeaveRoutes exits without Close, leaving the local routes behind as a proxy killed
	// with SIGKILL would.
	LeaveRoutes bool
}

type helperService struct {
	Name            string
	Protocol        corev1.Protocol
	ClusterIP       netip.Addr
	Port            int32
	NodePort        int32
	LoadBalancerIPs []netip.Addr
	SourceRanges    []netip.Prefix
	StickyTimeout   time.Duration
	Endpoints       []netip.AddrPort
	Annotations     map[string]string
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		if err := runHelper(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runHelper(raw string) error {
	// A guard against a mistaken start in the test's own (the host's) namespace, where local
	// routes for the Service CIDR would hijack real traffic: the test names its namespace.
	self, err := os.Readlink("/proc/self/ns/net")
	if host := os.Getenv(helperHostNSEnv); err != nil || host == "" || self == host {
		return fmt.Errorf("refusing to run the proxy helper outside a test network namespace (in %s, test in %q, %v)", self, host, err)
	}
	var specs []helperSpec
	if err := json.Unmarshal([]byte(raw), &specs); err != nil {
		return err
	}
	proxiers := make([]*Proxier, len(specs))
	closeAll := func() error {
		var errs []error
		for i, p := range proxiers {
			if p != nil && !specs[i].LeaveRoutes {
				errs = append(errs, p.Close())
			}
		}
		return errors.Join(errs...)
	}
	for i, spec := range specs {
		p, err := New(Options{Family: spec.Family, NodeIPs: spec.NodeIPs, ServiceCIDRs: spec.ServiceCIDRs,
			ManageLocalRoutes: true, DialTimeout: 100 * time.Millisecond})
		if err != nil {
			closeAll()
			return fmt.Errorf("%s proxier: %w", spec.Family, err)
		}
		proxiers[i] = p
	}
	for i, spec := range specs {
		snap := &proxy.Snapshot{Services: proxy.ServicePortMap{}, Endpoints: proxy.EndpointsMap{}, Changed: sets.New[proxy.ServicePortName](), Synced: true}
		for _, s := range spec.Services {
			name := proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "default", Name: s.Name}, Protocol: s.Protocol}
			snap.Services[name] = &proxy.ServicePort{Name: name, Protocol: s.Protocol, ClusterIP: s.ClusterIP, Port: s.Port, NodePort: s.NodePort,
				LoadBalancerIPs: s.LoadBalancerIPs, LoadBalancerSourceRanges: s.SourceRanges, StickyTimeout: s.StickyTimeout, Annotations: s.Annotations}
			for _, e := range s.Endpoints {
				snap.Endpoints[name] = append(snap.Endpoints[name], &proxy.Endpoint{IP: e.Addr(), Port: int32(e.Port()), Ready: true, Serving: true})
			}
		}
		if err := proxiers[i].Sync(snap, true); err != nil {
			closeAll()
			return fmt.Errorf("%s proxier: %w", spec.Family, err)
		}
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return closeAll()
}

// startProxy runs the helper with one Proxier per spec in member's namespace and stops it when
// the test ends.
func startProxy(t *testing.T, c *netns.Cluster, member string, specs ...helperSpec) (stop func()) {
	t.Helper()
	stop, err := runProxy(t, c, member, specs...)
	if err != nil {
		t.Fatal(err)
	}
	return stop
}

// runProxy is startProxy returning the helper's failure to start instead of failing t.
func runProxy(t *testing.T, c *netns.Cluster, member string, specs ...helperSpec) (stop func(), err error) {
	t.Helper()
	raw, err := json.Marshal(specs)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := c.Command(context.Background(), member, exe, "-test.run=^$")
	cmd.Env = helperEnviron(string(raw))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("proxy helper: %v\n%s", err, stderr.String())
		}
	}
	t.Cleanup(stop)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		stdin.Close()
		cmd.Wait()
		stopped = true
		return nil, fmt.Errorf("proxy helper did not start: %q %v\n%s", line, err, stderr.String())
	}
	return stop, nil
}

// serveName answers each connection on ln with name and closes it.
func serveName(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintln(c, name)
		c.Close()
	}
}

func TestServiceIPsWorkInsideANodeNamespace(t *testing.T) {
	c := netns.New(t, netns.Config{Nodes: 2})
	node1, node2 := netns.Node(1), netns.Node(2)
	backendIP := netns.NodeAddr(2)

	live, err := c.Listen(node2, "tcp", netip.AddrPortFrom(backendIP, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	go serveName(live, "live")
	udpBackend, err := c.ListenPacket(node2, "udp", netip.AddrPortFrom(backendIP, 5353).String())
	if err != nil {
		t.Fatal(err)
	}
	defer udpBackend.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := udpBackend.ReadFrom(buf)
			if err != nil {
				return
			}
			udpBackend.WriteTo(append([]byte("re:"), buf[:n]...), from)
		}
	}()

	web := netip.MustParseAddrPort("10.96.0.20:80")
	dns := netip.MustParseAddrPort("10.96.0.10:53")
	stop := startProxy(t, c, node1, helperSpec{
		ServiceCIDRs: []netip.Prefix{netns.ServiceCIDR},
		NodeIPs:      []netip.Addr{netns.NodeAddr(1)},
		Services: []helperService{
			{Name: "web", Protocol: corev1.ProtocolTCP, ClusterIP: web.Addr(), Port: 80, NodePort: 30080,
				// The dead endpoint comes first: every client must still land on the live one.
				Endpoints: []netip.AddrPort{netip.AddrPortFrom(backendIP, 8081), netip.AddrPortFrom(backendIP, 8080)}},
			{Name: "dns", Protocol: corev1.ProtocolUDP, ClusterIP: dns.Addr(), Port: 53,
				Endpoints: []netip.AddrPort{netip.AddrPortFrom(backendIP, 5353)}},
		},
	})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ask := func(member string, addr netip.AddrPort) (string, error) {
		conn, err := c.Dial(ctx, member, "tcp", addr.String())
		if err != nil {
			return "", err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(line), err
	}
	for i := range 4 {
		if got, err := ask(node1, web); got != "live" {
			t.Errorf("ClusterIP from the node, connection %d: got %q, %v", i, got, err)
		}
	}
	if got, err := ask(netns.External, netip.AddrPortFrom(netns.NodeAddr(1), 30080)); got != "live" {
		t.Errorf("NodePort from outside: got %q, %v", got, err)
	}
	// The whole Service CIDR is local: an address without a Service is refused at once.
	if _, err := ask(node1, netip.MustParseAddrPort("10.96.0.99:80")); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("unused Service IP: got %v, want connection refused", err)
	}

	udp, err := c.ListenPacket(node1, "udp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udp.WriteTo([]byte("q"), net.UDPAddrFromAddrPort(dns))
	udp.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, from, err := udp.ReadFrom(buf)
	var fromAddr netip.AddrPort
	if err == nil {
		a := from.(*net.UDPAddr).AddrPort()
		fromAddr = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	}
	if err != nil || string(buf[:n]) != "re:q" || fromAddr != dns {
		t.Errorf("UDP ClusterIP: got %q from %v, %v; want re:q from %s", buf[:n], from, err, dns)
	}

	routes := c.Run(t, node1, "ip", "route", "show", "table", "local", "proto", fmt.Sprint(int(routeProtocol)))
	if !strings.Contains(routes, "local 10.96.0.0/12 dev lo") {
		t.Errorf("local routes of the proxy: %q, want the Service CIDR", routes)
	}
	stop()
	if routes := c.Run(t, node1, "ip", "route", "show", "table", "local", "proto", fmt.Sprint(int(routeProtocol))); strings.TrimSpace(routes) != "" {
		t.Errorf("routes left after the proxy stopped: %q", routes)
	}
}

// The helper must never act outside a namespace; this pins the guard.
func TestHelperRefusesTheHostNamespace(t *testing.T) {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = helperEnviron(`[{"ServiceCIDRs":["10.96.0.0/12"]}]`)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing") {
		t.Errorf("got %v, %s; want a refusal", err, out)
	}
}

// TestMeasureLocalServiceIPMechanisms times the ways of making 10,000 Service IPs local in a
// node namespace; README.md records the figures. It runs only when SVCPLANE_MEASURE=1.
func TestMeasureLocalServiceIPMechanisms(t *testing.T) {
	if os.Getenv("SVCPLANE_MEASURE") != "1" {
		t.Skip("set SVCPLANE_MEASURE=1 to measure")
	}
	c := netns.New(t, netns.Config{Nodes: 1})
	node := netns.Node(1)
	const n = 10000
	batch := func(t *testing.T, format string) time.Duration {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, format+"\n", 10, 96+i/65536, (i/256)%256, i%256)
		}
		path := t.TempDir() + "/batch"
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c.Run(t, node, "ip", "-batch", path)
		return time.Since(start)
	}
	addrs := batch(t, "address add %d.%d.%d.%d/32 dev lo")
	delAddrs := batch(t, "address del %d.%d.%d.%d/32 dev lo")
	routes := batch(t, "route add local %d.%d.%d.%d/32 dev lo table local")
	delRoutes := batch(t, "route del local %d.%d.%d.%d/32 dev lo table local")
	start := time.Now()
	c.Run(t, node, "ip", "route", "add", "local", "10.96.0.0/12", "dev", "lo", "table", "local")
	one := time.Since(start)
	t.Logf("%d addresses on lo: add %v, delete %v; %d local /32 routes: add %v, delete %v; one local /12 route: %v",
		n, addrs, delAddrs, n, routes, delRoutes, one)
}
