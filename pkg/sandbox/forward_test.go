package sandbox

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
	"github.com/svcplane/svcplane/test/netns"
)

// Addresses used: an echo server at 10.250.0.2:6443 inside the cp namespace, reached only
// through the forwarder on 127.0.0.1 of the test's own namespace.

func TestForwarderRelaysLoopbackIntoTheNamespace(t *testing.T) {
	c := netns.New(t, netns.Config{Nodes: 1})
	target := netip.AddrPortFrom(netns.ControlPlaneAddr, topology.APIServerPort).String()
	echo, err := c.Listen(netns.ControlPlane, "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			conn, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				io.Copy(conn, conn)
			}()
		}
	}()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Forward(ctx, ln, c.Namespace(netns.ControlPlane), target, nil) }()

	// Several at once: each connection gets its own relay.
	for range 3 {
		conn, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo through the forwarder = %q, %v", buf, err)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Forward returned %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Forward did not return after cancel")
	}
}

func TestForwarderExitsWhenItsNamespaceIsDeleted(t *testing.T) {
	netns.Require(t)
	topo, err := topology.Create(topology.Options{Name: "fwd-" + strconv.Itoa(os.Getpid()), Nodes: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Close() })
	ns := topo.Namespace(topology.MemberControlPlane)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := exitWithNamespace(ctx, cancel, ns, nil); err != nil {
		t.Fatal(err)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * namespaceCheckInterval):
		t.Fatal("the forwarder kept running after its namespace was deleted")
	}
}
