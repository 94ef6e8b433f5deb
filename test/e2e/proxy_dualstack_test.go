package e2e

// Dual-stack Services through either proxy mode. No agent runs here (dual-stack Pods are
// tested in pods_dualstack_test.go), so the backends are plain sockets in the ext namespace,
// named by hand-made EndpointSlices of both address types; everything else is real: a
// dual-stack `svcplane server` allocating the ClusterIPs, `svcplane proxy` in node1 (nftables
// mode: the ip and ip6 svcplane tables; userspace mode: a Proxier per family, listening on the
// ClusterIPs of its family with the family's service range routed locally), and TCP
// connections from node1 through it.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
	"github.com/svcplane/svcplane/test/netns"
	"github.com/svcplane/svcplane/test/testserver"
)

// The IPv6 plan is the dual-stack topology's (pkg/sandbox/topology, plan.go), whose nodes
// also route its IPv6 Service range, as the IPv4 one: a packet needs a route before the nat
// output hook rewrites its destination. (The userspace mode's local route for the range, in
// table local, is looked up before it.)
var (
	dsExtV6         = topology.ExternalAddrV6.String()
	dsServiceV6CIDR = topology.ServiceCIDRV6.String()
	dsServiceRange  = "10.96.0.0/16," + dsServiceV6CIDR
	dsClusterCIDRs  = topology.ClusterCIDR.String() + "," + topology.ClusterCIDRV6.String()
)

const dsBackendPort = 8080

// TestProxyDualStackServices runs one scenario against both proxy modes.
func TestProxyDualStackServices(t *testing.T) {
	for _, mode := range []string{"nftables", "userspace"} {
		t.Run(mode, func(t *testing.T) { testProxyDualStack(t, mode) })
	}
}

func testProxyDualStack(t *testing.T, mode string) {
	if testing.Short() {
		t.Skip("runs svcplane server and proxy in network namespaces; skipped with -short")
	}
	if _, err := exec.LookPath("nft"); err != nil && mode == "nftables" {
		t.Skip("needs the nft command to list the ip6 table")
	}
	c := netns.New(t, netns.Config{Nodes: 1, DualStack: true})
	node, ext := netns.Node(1), netns.External
	for _, addr := range []string{net.JoinHostPort(dsExtV6, strconv.Itoa(dsBackendPort)), net.JoinHostPort(netns.ExternalAddr.String(), strconv.Itoa(dsBackendPort))} {
		serveName(t, c, ext, addr)
	}

	client, kubeconfig := startDualStackServer(t, c)
	startDualStackProxy(t, c, node, kubeconfig, mode)
	ctx := context.Background()
	extV4 := netns.ExternalAddr.String()

	dual := createDSService(t, client, "dual", corev1.IPFamilyPolicyRequireDualStack)
	createDSSlice(t, client, "dual", discoveryv1.AddressTypeIPv6, dsExtV6)
	createDSSlice(t, client, "dual", discoveryv1.AddressTypeIPv4, extV4)
	// A dual-stack Service whose only endpoints are IPv4 ones.
	noV6 := createDSService(t, client, "no-v6-endpoints", corev1.IPFamilyPolicyRequireDualStack)
	createDSSlice(t, client, "no-v6-endpoints", discoveryv1.AddressTypeIPv4, extV4)
	if len(dual.Spec.ClusterIPs) != 2 || len(noV6.Spec.ClusterIPs) != 2 {
		t.Fatalf("want two ClusterIPs per RequireDualStack Service, got %v and %v", dual.Spec.ClusterIPs, noV6.Spec.ClusterIPs)
	}
	dualV4, dualV6 := dual.Spec.ClusterIPs[0], dual.Spec.ClusterIPs[1]

	t.Run("IPv6 ClusterIP reaches the IPv6 endpoint", func(t *testing.T) {
		eventually(t, 15*time.Second, "reading the backend's name through ["+dualV6+"]:80", func() error {
			return expectAnswer(c, node, net.JoinHostPort(dualV6, "80"), "ext "+net.JoinHostPort(dsExtV6, strconv.Itoa(dsBackendPort)))
		})
	})
	t.Run("IPv4 ClusterIP of the same Service still works", func(t *testing.T) {
		eventually(t, 10*time.Second, "reading the backend's name through "+dualV4+":80", func() error {
			return expectAnswer(c, node, net.JoinHostPort(dualV4, "80"), "ext "+net.JoinHostPort(extV4, strconv.Itoa(dsBackendPort)))
		})
	})
	t.Run("IPv6 ClusterIP without IPv6 endpoints is refused", func(t *testing.T) {
		addr := net.JoinHostPort(noV6.Spec.ClusterIPs[1], "80")
		eventually(t, 10*time.Second, "a TCP reset from "+addr, func() error { return expectRejected(c, node, addr, mode) })
		// Its IPv4 side has an endpoint and answers.
		eventually(t, 10*time.Second, "the IPv4 side of the same Service", func() error {
			return expectAnswer(c, node, net.JoinHostPort(noV6.Spec.ClusterIPs[0], "80"), "ext "+net.JoinHostPort(extV4, strconv.Itoa(dsBackendPort)))
		})
	})
	t.Run("the IPv6 ClusterIPs are served by the IPv6 side", func(t *testing.T) {
		if mode == "userspace" {
			// The IPv6 Proxier routes the IPv6 service range locally and listens on its
			// ClusterIPs (the Service without IPv6 endpoints too: it resets what it accepts).
			routes := c.Run(t, node, "ip", "-6", "route", "show", "table", "local")
			if !strings.Contains(routes, "local "+dsServiceV6CIDR+" dev lo") {
				t.Errorf("no local route for %s in %s:\n%s", dsServiceV6CIDR, node, routes)
			}
			listening := c.Run(t, node, "ss", "-6Hltn")
			for _, ip := range []string{dualV6, noV6.Spec.ClusterIPs[1]} {
				if !strings.Contains(listening, "["+ip+"]:80") {
					t.Errorf("nothing listens on [%s]:80 in %s:\n%s", ip, node, listening)
				}
			}
			return
		}
		out := c.Run(t, node, "nft", "list", "table", "ip6", "svcplane")
		for _, ip := range []string{dualV6, noV6.Spec.ClusterIPs[1]} {
			if !strings.Contains(out, ip) {
				t.Errorf("nft list table ip6 svcplane in %s does not mention %s:\n%s", node, ip, out)
			}
		}
		if v4 := c.Run(t, node, "nft", "list", "table", "ip", "svcplane"); strings.Contains(v4, dualV6) || !strings.Contains(v4, dualV4) {
			t.Errorf("the ip table must hold the IPv4 ClusterIP %s and no IPv6 one:\n%s", dualV4, v4)
		}
	})
	t.Run("a SingleStack Service made dual-stack gains a working IPv6 ClusterIP, and loses it back", func(t *testing.T) {
		single := createDSService(t, client, "upgraded", corev1.IPFamilyPolicySingleStack)
		createDSSlice(t, client, "upgraded", discoveryv1.AddressTypeIPv4, extV4)
		createDSSlice(t, client, "upgraded", discoveryv1.AddressTypeIPv6, dsExtV6)
		eventually(t, 10*time.Second, "the IPv4 ClusterIP of the single-stack Service", func() error {
			return expectAnswer(c, node, net.JoinHostPort(single.Spec.ClusterIP, "80"), "ext "+net.JoinHostPort(extV4, strconv.Itoa(dsBackendPort)))
		})
		patch := `{"spec":{"ipFamilyPolicy":"PreferDualStack"}}`
		up, err := client.CoreV1().Services("default").Patch(ctx, "upgraded", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(up.Spec.ClusterIPs) != 2 {
			t.Fatalf("PreferDualStack on a dual-stack server: want two ClusterIPs, got %v", up.Spec.ClusterIPs)
		}
		upV6 := up.Spec.ClusterIPs[1]
		eventually(t, 10*time.Second, "the new IPv6 ClusterIP "+upV6, func() error {
			return expectAnswer(c, node, net.JoinHostPort(upV6, "80"), "ext "+net.JoinHostPort(dsExtV6, strconv.Itoa(dsBackendPort)))
		})

		// And back: SingleStack drops the IPv6 ClusterIP, and the ip6 table forgets it.
		patch = `{"spec":{"ipFamilyPolicy":"SingleStack","clusterIPs":["` + up.Spec.ClusterIPs[0] + `"]}}`
		if _, err := client.CoreV1().Services("default").Patch(ctx, "upgraded", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the IPv6 side dropping "+upV6, func() error {
			if mode == "userspace" {
				// No listener left: the local route makes the address refuse at once.
				return expectRefused(c, node, net.JoinHostPort(upV6, "80"))
			}
			if out := c.Run(t, node, "nft", "list", "table", "ip6", "svcplane"); strings.Contains(out, upV6) {
				return fmt.Errorf("ip6 svcplane still holds %s", upV6)
			}
			return nil
		})
		if err := expectAnswer(c, node, net.JoinHostPort(up.Spec.ClusterIPs[0], "80"), "ext "+net.JoinHostPort(extV4, strconv.Itoa(dsBackendPort))); err != nil {
			t.Errorf("the IPv4 ClusterIP must keep working: %v", err)
		}
	})
	t.Run("removing the IPv6 endpoints makes the IPv6 ClusterIP refuse", func(t *testing.T) {
		if err := client.DiscoveryV1().EndpointSlices("default").Delete(ctx, "dual-ipv6", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "a TCP reset from ["+dualV6+"]:80", func() error {
			return expectRejected(c, node, net.JoinHostPort(dualV6, "80"), mode)
		})
		if err := expectAnswer(c, node, net.JoinHostPort(dualV4, "80"), "ext "+net.JoinHostPort(extV4, strconv.Itoa(dsBackendPort))); err != nil {
			t.Errorf("the IPv4 side must not be affected: %v", err)
		}
	})
}

// serveName answers every connection to addr, in member's namespace, with "ext <addr>".
func serveName(t *testing.T, c *netns.Cluster, member, addr string) {
	t.Helper()
	ln, err := c.Listen(member, "tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, member, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(conn, "ext %s\n", addr)
			conn.Close()
		}
	}()
}

// expectAnswer connects from member to addr and checks the first line the backend sends.
func expectAnswer(c *netns.Cluster, member, addr, want string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, member, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading from %s: %w", addr, err)
	}
	if got := strings.TrimSpace(line); got != want {
		return fmt.Errorf("%s answered %q, want %q", addr, got, want)
	}
	return nil
}

// expectRefused checks that a connection from member to addr is reset at once (the proxy's
// reject for a Service without endpoints), not left to time out.
func expectRefused(c *netns.Cluster, member, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, member, "tcp", addr)
	if err == nil {
		conn.Close()
		return fmt.Errorf("%s accepted a connection", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: want connection refused, got %w", addr, err)
	}
	return nil
}

// expectRejected checks that a connection from member to a Service without endpoints at addr
// fails at once: refused in nftables mode (expectRefused); the userspace proxy owns a
// listener for the Service, so the handshake completes and the accepted connection is reset.
func expectRejected(c *netns.Cluster, member, addr, mode string) error {
	if mode != "userspace" {
		return expectRefused(c, member, addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, member, "tcp", addr)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	n, err := conn.Read(make([]byte, 64))
	if !errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%s: want a reset, read %d bytes, %v", addr, n, err)
	}
	return nil
}

// startDualStackServer runs `svcplane server` in cp with a ClusterIP range of each family and
// returns a client (dialing into cp from here) and the admin kubeconfig.
func startDualStackServer(t *testing.T, c *netns.Cluster) (kubernetes.Interface, string) {
	t.Helper()
	dataDir := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "server.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	addr := netns.ControlPlaneAddr.String()
	cmd := c.Command(context.Background(), netns.ControlPlane, testserver.Binary(t), "server",
		"--data-dir", dataDir, "--bind-address", addr, "--advertise-address", addr,
		"--secure-port", strconv.Itoa(topology.APIServerPort),
		"--service-cluster-ip-range", dsServiceRange)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting svcplane server in cp: %v", err)
	}
	stopOnCleanup(t, cmd, "svcplane server", logPath)

	kubeconfig := filepath.Join(dataDir, "admin.kubeconfig")
	client := readyClientInside(t, c, netns.ControlPlane, kubeconfig, "https://"+net.JoinHostPort(addr, strconv.Itoa(topology.APIServerPort)))
	// The default namespace is created by the server after it turns ready.
	eventually(t, 30*time.Second, "the default namespace", func() error {
		_, err := client.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{})
		return err
	})
	return client, kubeconfig
}

// readyClientInside waits until the server of the admin kubeconfig at path answers /readyz,
// and returns a client for it. This test process stays in the host namespace; the client's
// connections are opened inside member, where the server listens. host, when set, overrides
// the kubeconfig's server URL.
func readyClientInside(t *testing.T, c *netns.Cluster, member, kubeconfig, host string) kubernetes.Interface {
	t.Helper()
	var client kubernetes.Interface
	eventually(t, 90*time.Second, "the server of "+kubeconfig+" ready", func() error {
		if client == nil {
			cfg, err := clientcmd.BuildConfigFromFlags(host, kubeconfig)
			if err != nil {
				return err
			}
			cfg.Dial = func(ctx context.Context, network, address string) (net.Conn, error) {
				return c.Dial(ctx, member, network, address)
			}
			cfg.WarningHandler = rest.NoWarnings{}
			if client, err = kubernetes.NewForConfig(cfg); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil || string(body) != "ok" {
			return fmt.Errorf("/readyz: %v %s", err, body)
		}
		return nil
	})
	return client
}

// startDualStackProxy runs `svcplane proxy` in mode in member with a cluster CIDR of each
// family, which makes IPv6 required: the proxy exits rather than serve IPv4 alone.
func startDualStackProxy(t *testing.T, c *netns.Cluster, member, kubeconfig, mode string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "proxy.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := c.Command(context.Background(), member, testserver.Binary(t), "proxy",
		"--kubeconfig", kubeconfig,
		"--server", "https://"+net.JoinHostPort(netns.ControlPlaneAddr.String(), strconv.Itoa(topology.APIServerPort)),
		"--node-name", member, "--netns", c.Namespace(member), "--proxy-mode", mode,
		"--cluster-cidr", dsClusterCIDRs, "--service-cidr", dsServiceRange, "--healthz-bind-address", "")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting svcplane proxy in %s: %v", member, err)
	}
	stopOnCleanup(t, cmd, "svcplane proxy", logPath)
}

// stopOnCleanup stops cmd (SIGTERM, then SIGKILL after 10 s) when t ends, and shows its log's
// tail if t failed. `ip netns exec` execs the program, so cmd.Process is the program itself.
func stopOnCleanup(t *testing.T, cmd *exec.Cmd, what, logPath string) {
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s:\n%s", what, lastLines(string(b), 40))
		}
	})
}

// createDSService creates a selector-less Service (its endpoints are hand-made) with port 80
// → 8080 and the given family policy.
func createDSService(t *testing.T, client kubernetes.Interface, name string, policy corev1.IPFamilyPolicy) *corev1.Service {
	t.Helper()
	svc, err := client.CoreV1().Services("default").Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{IPFamilyPolicy: &policy,
			Ports: []corev1.ServicePort{{Name: "tcp", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(dsBackendPort)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating Service %s: %v", name, err)
	}
	return svc
}

// createDSSlice creates the EndpointSlice "<svc>-<ipv4|ipv6>" of svc with one ready endpoint.
func createDSSlice(t *testing.T, client kubernetes.Interface, svc string, family discoveryv1.AddressType, addr string) {
	t.Helper()
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-" + strings.ToLower(string(family)), Labels: map[string]string{
			discoveryv1.LabelServiceName: svc,
			discoveryv1.LabelManagedBy:   "e2e-test",
		}},
		AddressType: family,
		Ports:       []discoveryv1.EndpointPort{tcpPort("tcp", dsBackendPort)},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
	}
	if _, err := client.DiscoveryV1().EndpointSlices("default").Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating EndpointSlice %s: %v", s.Name, err)
	}
}
