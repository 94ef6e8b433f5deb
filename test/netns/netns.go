// Package netns gives tests a whole svcplane cluster topology in network namespaces:
//
//	c := netns.New(t, netns.Config{Nodes: 2})
//	ln, _ := c.Listen("node2", "tcp", "10.244.2.1:8080")
//	conn, _ := c.Dial(ctx, "node1", "tcp", "10.244.2.1:8080")
//
// New skips the test unless it runs as root and can create namespaces, removes leftovers of
// killed runs, builds a topology under a name unique to this process, and registers a cleanup
// that tears it down and fails the test if the host's own network configuration changed.
// Addresses and member names are those of package topology (re-exported below).
package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/svcplane/svcplane/pkg/sandbox/hostguard"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// The address plan, for tests to name addresses without importing topology.
var (
	NodeNetwork      = topology.NodeNetwork
	BridgeAddr       = topology.BridgeAddr
	ControlPlaneAddr = topology.ControlPlaneAddr
	ExternalAddr     = topology.ExternalAddr
	ClusterCIDR      = topology.ClusterCIDR
	ServiceCIDR      = topology.ServiceCIDR
	ClusterDNSAddr   = topology.ClusterDNSAddr
	LoadBalancerPool = topology.LoadBalancerPool
)

// Member names accepted by every Cluster method.
const (
	Network      = topology.MemberNetwork
	ControlPlane = topology.MemberControlPlane
	External     = topology.MemberExternal
)

// Node is node n's member name ("node1"); NodeAddr, PodCIDR and PodGateway its addresses.
func Node(n int) string                            { return topology.NodeMember(n) }
func NodeAddr(n int) netip.Addr                    { return topology.NodeAddr(n) }
func PodCIDR(n int) netip.Prefix                   { return topology.PodCIDR(n) }
func PodGateway(n int) netip.Addr                  { return topology.PodGateway(n) }
func MemberAddr(member string) (netip.Addr, error) { return topology.MemberAddr(member) }

// Config describes the cluster a test needs.
type Config struct {
	// Nodes is the number of node namespaces; 0 means 2.
	Nodes int
	// DualStack adds the topology's IPv6 plan (pkg/sandbox/topology, plan.go: node N at
	// NodeAddrV6(N), ext at ExternalAddrV6, the IPv6 Service range routed on nodes). The test
	// is skipped on a kernel without IPv6.
	DualStack bool
}

// Cluster is a built topology owned by one test. All methods of topology.Topology are
// available: Namespace, Members, Do, Dial, Listen, ListenPacket, Command, RouteGet.
type Cluster struct {
	*topology.Topology
}

var (
	sequence     atomic.Int64
	staleCleanup sync.Once
)

// Require skips t unless this process can create network namespaces (root, and a kernel and
// mount setup that allow it).
func Require(t testing.TB) {
	t.Helper()
	if reason := unsupported(); reason != "" {
		t.Skip(reason)
	}
}

var (
	probeOnce   sync.Once
	probeResult string
)

// unsupported probes once per process with a throwaway `ip netns add`.
func unsupported() string {
	probeOnce.Do(func() {
		if os.Geteuid() != 0 {
			probeResult = "needs root to create network namespaces"
			return
		}
		if _, err := exec.LookPath("ip"); err != nil {
			probeResult = "needs the ip command (iproute2)"
			return
		}
		probe := fmt.Sprintf("%sprobe%d", topology.NamespacePrefix, os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
			probeResult = fmt.Sprintf("cannot create network namespaces (ip netns add: %v: %s)", err, strings.TrimSpace(string(out)))
			return
		}
		exec.Command("ip", "netns", "delete", probe).Run()
	})
	return probeResult
}

// New builds a cluster for t and tears it down when t ends, whether it passed or not.
func New(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	Require(t)
	if _, err := os.Stat("/proc/net/if_inet6"); cfg.DualStack && err != nil {
		t.Skipf("a dual-stack topology needs IPv6 in the kernel: %v", err)
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = 2
	}
	staleCleanup.Do(func() {
		if removed, err := topology.CleanupStale(); err != nil {
			t.Logf("removing leftovers of earlier runs: %v", err)
		} else if len(removed) > 0 {
			t.Logf("removed leftovers of earlier runs: %s", strings.Join(removed, ", "))
		}
	})
	before, err := hostguard.Take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The pid keeps names unique across test processes running side by side; a dead
	// process's names are freed by CleanupStale.
	name := fmt.Sprintf("t%d-%d", os.Getpid(), sequence.Add(1))
	topo, err := topology.Create(topology.Options{Name: name, Nodes: cfg.Nodes, DualStack: cfg.DualStack})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Error(err)
		}
		for _, m := range topo.Members() {
			if topology.NamespaceExists(topo.Namespace(m)) {
				t.Errorf("namespace %s survived teardown", topo.Namespace(m))
			}
		}
		after, err := hostguard.Take(context.Background())
		if err != nil {
			t.Error(err)
			return
		}
		// Other tests' topologies come and go meanwhile; Close has removed ours.
		if err := hostguard.Unchanged(before, after, topology.IgnoreNamespaces); err != nil {
			t.Error(err)
		}
	})
	return &Cluster{Topology: topo}
}

// Run runs a command inside member's namespace and returns its combined output, failing t if
// the command fails.
func (c *Cluster) Run(t testing.TB, member, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.Command(ctx, member, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %s %s: %v\n%s", member, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Ping sends ICMP echo requests from member's namespace to dst until one is answered or ctx
// ends. It needs no ping binary.
func (c *Cluster) Ping(ctx context.Context, member string, dst netip.Addr) error {
	conn, err := c.ListenPacket(member, "ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("opening an ICMP socket in %s: %w", member, err)
	}
	defer conn.Close()
	id := uint16(os.Getpid())
	target := &net.IPAddr{IP: dst.AsSlice()}
	buf := make([]byte, 1500)
	for seq := uint16(1); ; seq++ {
		if _, err := conn.WriteTo(echoRequest(id, seq), target); err != nil {
			return fmt.Errorf("ping %s from %s: %w", dst, member, err)
		}
		deadline := time.Now().Add(200 * time.Millisecond)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		conn.SetReadDeadline(deadline)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				break // timed out: send the next request
			}
			if isEchoReply(buf[:n], id, seq) && from.(*net.IPAddr).IP.Equal(target.IP) {
				return nil
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("ping %s from %s: no reply: %w", dst, member, ctx.Err())
		}
	}
}

func echoRequest(id, seq uint16) []byte {
	msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 's', 'v', 'p'}
	sum := checksum(msg)
	msg[2], msg[3] = byte(sum>>8), byte(sum)
	return msg
}

// isEchoReply checks an ICMP message (Go strips the IPv4 header on ip4 sockets).
func isEchoReply(msg []byte, id, seq uint16) bool {
	return len(msg) >= 8 && msg[0] == 0 && msg[1] == 0 &&
		uint16(msg[4])<<8|uint16(msg[5]) == id && uint16(msg[6])<<8|uint16(msg[7]) == seq
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
