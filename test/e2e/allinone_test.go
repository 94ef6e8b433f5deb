package e2e

// `svcplane server --agent`, the single-host cluster, inside node1 of a one-node topology
// (test/netns: node1 at 10.250.0.11, a route to the Service range 10.96.0.0/12). The
// topology's pod bridge is deleted first, so the agent has to make its own, as on a fresh host.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
	"github.com/svcplane/svcplane/test/netns"
	"github.com/svcplane/svcplane/test/testserver"
)

func TestServerWithAgentIsASingleHostCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server with its agent in a namespace; skipped with -short")
	}
	c := netns.New(t, netns.Config{Nodes: 1})
	host := netns.Node(1)
	c.Run(t, host, "ip", "link", "del", topology.PodBridgeName)
	addr := netns.NodeAddr(1).String()
	dataDir := t.TempDir()
	client := startAllInOne(t, c, host, dataDir, "--bind-address", addr, "--node-name", "aio")
	ctx := context.Background()

	var node *corev1.Node
	eventually(t, 30*time.Second, "Node aio Ready with a pod CIDR", func() error {
		n, err := client.CoreV1().Nodes().Get(ctx, "aio", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !nodeIsReady(n) || n.Spec.PodCIDR == "" {
			return fmt.Errorf("podCIDR %q, conditions %v", n.Spec.PodCIDR, n.Status.Conditions)
		}
		node = n
		return nil
	})
	if len(node.Status.Addresses) == 0 || node.Status.Addresses[0].Address != addr {
		t.Errorf("Node addresses %v, want the advertise address %s first", node.Status.Addresses, addr)
	}
	// The agent makes the bridge once the Node has its pod CIDR.
	gateway := netip.MustParsePrefix(node.Spec.PodCIDR).Addr().Next().String() + "/24"
	eventually(t, 10*time.Second, "an up pod bridge with "+gateway, func() error {
		out, err := c.Command(ctx, host, "ip", "-4", "-o", "addr", "show", "dev", topology.PodBridgeName, "up").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "inet "+gateway) {
			return fmt.Errorf("ip addr: %v: %q", err, out)
		}
		return nil
	})

	labels := map[string]string{"app": "web"}
	replicas := int32(2)
	if _, err := client.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "testserver", Image: "svcplane/testserver",
					ReadinessProbe: &corev1.Probe{PeriodSeconds: 1,
						ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}}}}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("the host reaches the Service's ClusterIP", func(t *testing.T) {
		url := "http://" + svc.Spec.ClusterIP + "/hostname"
		eventually(t, 60*time.Second, "curl "+url+" on the host", func() error {
			out, err := c.Command(ctx, host, "curl", "-s", "-m", "2", url).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "web-") {
				return fmt.Errorf("curl: %v: %q", err, out)
			}
			return nil
		})
	})

	t.Run("a Pod finds the Service through the cluster DNS and reaches it", func(t *testing.T) {
		pod, err := client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "client"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "debian", Command: []string{"/bin/sh", "-c",
				"for i in 1 2 3; do curl -s -m 5 http://web/hostname; echo; done; sleep 3600"}}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		logPath := filepath.Join(dataDir, "agent", "pods", string(pod.UID), "c.log")
		var out string
		eventually(t, 40*time.Second, "three answers in the client Pod's log", func() error {
			b, _ := os.ReadFile(logPath)
			if out = string(b); strings.Count(out, "\n") < 3 {
				return fmt.Errorf("log so far: %q", out)
			}
			return nil
		})
		for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n")[:3] {
			if !strings.HasPrefix(line, "web-") {
				t.Errorf("http://web/hostname from a Pod answered %q, want a web Pod", line)
			}
		}
	})
}

// startAllInOne runs `svcplane server --agent` in member and returns an admin client whose
// connections are opened inside member. Everything the server starts, its Pods included,
// inherits a marker file, by which the Pods (which run outside member's namespace and outlive
// the agent) are killed when the test ends.
func startAllInOne(t *testing.T, c *netns.Cluster, member, dataDir string, args ...string) kubernetes.Interface {
	t.Helper()
	marker, err := os.CreateTemp(t.TempDir(), "allinone-marker")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pids, _ := topology.Holders(marker.Name())
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	logPath := filepath.Join(t.TempDir(), "server.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := c.Command(context.Background(), member, testserver.Binary(t),
		append([]string{"server", "--agent", "--data-dir", dataDir}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = []*os.File{marker}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting svcplane server --agent: %v", err)
	}
	marker.Close()
	stopOnCleanup(t, cmd, "svcplane server --agent", logPath)

	return readyClientInside(t, c, member, filepath.Join(dataDir, "admin.kubeconfig"), "")
}

func nodeIsReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
