package e2e

// Addresses: the sandbox's (see ARCHITECTURE.md): nodes 10.250.0.1N, the outside client
// 10.250.0.200, Pods 10.244.N.0/24, ClusterIPs from 10.96.0.0/12. Every connection below is
// made from inside a sandbox namespace.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// dialOnce opens a TCP connection to addr from member's namespace.
func (c *agentCluster) dialOnce(member, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return topology.Dial(ctx, topology.NamespaceName(c.name, member), "tcp", addr)
}

// hostnameVia asks the test server behind addr for its name, from member.
func (c *agentCluster) hostnameVia(t *testing.T, member, addr string) string {
	t.Helper()
	return strings.TrimSpace(c.get(t, member, "GET", "http://"+addr+"/hostname"))
}

// eventually retries fn for up to d.
func eventually(t *testing.T, d time.Duration, what string, fn func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err = fn(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

// TestProxyServesServicesFromNodesAndOutside runs one suite against both proxy modes.
func TestProxyServesServicesFromNodesAndOutside(t *testing.T) {
	for _, mode := range []string{"nftables", "userspace"} {
		t.Run(mode, func(t *testing.T) { testProxyMode(t, mode) })
	}
}

func testProxyMode(t *testing.T, mode string) {
	c := upWithAgentsAndProxy(t, 2, mode)
	ctx := context.Background()
	svc, err := c.client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"web-1", "web-2", "web-3"}
	for _, n := range names {
		c.create(t, testServerPod(n))
	}
	for _, n := range names {
		c.waitPod(t, n, "Ready", isReady)
	}
	clusterAddr := net.JoinHostPort(svc.Spec.ClusterIP, "80")
	nodePort := strconv.Itoa(int(svc.Spec.Ports[0].NodePort))

	t.Run("ClusterIP from a node spreads across the 3 backends", func(t *testing.T) {
		seen := map[string]int{}
		eventually(t, 10*time.Second, "all three backends answering", func() error {
			for i := 0; i < 60; i++ {
				seen[c.hostnameVia(t, "node1", clusterAddr)]++
			}
			if len(seen) < 3 {
				return fmt.Errorf("only %v answered", seen)
			}
			return nil
		})
		for _, n := range names {
			if seen[n] == 0 {
				t.Errorf("%s never answered: %v", n, seen)
			}
		}
	})

	t.Run("NodePort from outside on every node", func(t *testing.T) {
		for n := 1; n <= 2; n++ {
			addr := net.JoinHostPort(topology.NodeAddr(n).String(), nodePort)
			eventually(t, 10*time.Second, "NodePort on node"+strconv.Itoa(n), func() error {
				if got := c.hostnameVia(t, topology.MemberExternal, addr); !strings.HasPrefix(got, "web-") {
					return fmt.Errorf("%s answered %q", addr, got)
				}
				return nil
			})
		}
	})

	t.Run("a Service without endpoints rejects at once", func(t *testing.T) {
		empty, err := c.client.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "empty"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "nothing"},
				Ports: []corev1.ServicePort{{Port: 80}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort(empty.Spec.ClusterIP, "80")
		eventually(t, 10*time.Second, "connection refused", func() error {
			start := time.Now()
			conn, err := c.dialOnce("node1", addr)
			if err == nil {
				conn.Close()
				return errors.New("connected")
			}
			// The kernel path refuses the SYN (TCP reset before the handshake completes); the
			// userspace proxy owns a listener for the Service and resets the accepted connection.
			if !errors.Is(err, syscall.ECONNREFUSED) && !(mode == "userspace" && errors.Is(err, syscall.ECONNRESET)) {
				return err
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				return fmt.Errorf("refused only after %v", d)
			}
			return nil
		})
	})

	t.Run("a backend that turns unready stops getting traffic within a second", func(t *testing.T) {
		// Fail web-1's readiness probe on purpose (pkg/netexec: POST /healthz?fail=true).
		p, err := c.client.CoreV1().Pods("default").Get(ctx, "web-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c.get(t, p.Spec.NodeName, "POST", "http://"+net.JoinHostPort(p.Status.PodIP, "8080")+"/healthz?fail=true")
		c.waitPod(t, "web-1", "not Ready", func(p *corev1.Pod) bool { return !isReady(p) })
		unready := time.Now()
		eventually(t, 5*time.Second, "web-1 out of rotation", func() error {
			for i := 0; i < 30; i++ {
				if got := c.hostnameVia(t, "node1", clusterAddr); got == "web-1" {
					return errors.New("web-1 still answering")
				}
			}
			return nil
		})
		// The Pod status change, the EndpointSlice update and the sync all fit in this.
		if d := time.Since(unready); d > 2*time.Second {
			t.Errorf("web-1 left rotation %v after turning unready", d)
		}
	})
}
