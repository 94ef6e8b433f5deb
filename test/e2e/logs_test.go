package e2e

// `kubectl logs` against a sandbox: the API server streams a container's output from the
// agent of the Pod's node (pods/log, pkg/agent/logserver).

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcplane/svcplane/pkg/sandbox"
)

func TestKubectlLogsReadsAndFollowsAContainerOnAnyNode(t *testing.T) {
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("kubectl not installed (.ci/run installs it)")
	}
	c := upSandbox(t, sandbox.UpOptions{Nodes: 2, ProxyMode: "none"})
	kubectl := func(args ...string) *exec.Cmd {
		return exec.Command("kubectl", append([]string{"--kubeconfig", c.state.Kubeconfig}, args...)...)
	}
	// One Pod per node; each prints three lines at once, then one a second.
	script := `for i in 1 2 3; do echo "$NODE line $i"; done; i=4; while :; do sleep 1; echo "$NODE line $i"; i=$((i+1)); done`
	for _, node := range []string{"node1", "node2"} {
		if _, err := c.client.CoreV1().Pods("default").Create(context.Background(), &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "talker-" + node},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "debian",
				Command: []string{"/bin/sh", "-c", script},
				Env:     []corev1.EnvVar{{Name: "NODE", Value: node}}}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, node := range []string{"node1", "node2"} {
		pod := "talker-" + node
		c.waitPod(t, pod, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
		eventually(t, 20*time.Second, "kubectl logs "+pod, func() error {
			out, err := kubectl("logs", pod).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), node+" line 1\n"+node+" line 2\n"+node+" line 3\n") {
				return fmt.Errorf("%v: %q", err, out)
			}
			return nil
		})
		out, err := kubectl("logs", pod, "--tail=1").CombinedOutput()
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); err != nil || len(lines) != 1 || !strings.HasPrefix(lines[0], node+" line ") {
			t.Errorf("kubectl logs %s --tail=1: %v: %q, want its last line only", pod, err, out)
		}
	}

	t.Run("a wrong container name is a clear error", func(t *testing.T) {
		out, err := kubectl("logs", "talker-node1", "-c", "sidecar").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "container sidecar is not valid for pod talker-node1") {
			t.Errorf("kubectl logs -c sidecar: %v: %q", err, out)
		}
	})

	t.Run("-f streams lines as they are printed", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "kubectl", "--kubeconfig", c.state.Kubeconfig, "logs", "-f", "--tail=1", "talker-node2")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); cmd.Wait() }()
		// The last line printed so far, then the next ones, printed after the request.
		lines := bufio.NewScanner(stdout)
		var got []string
		for len(got) < 3 && lines.Scan() {
			got = append(got, lines.Text())
		}
		if len(got) < 3 {
			t.Fatalf("kubectl logs -f gave %q before it ended (%v)", got, lines.Err())
		}
		var first, last int
		fmt.Sscanf(got[0], "node2 line %d", &first)
		fmt.Sscanf(got[2], "node2 line %d", &last)
		if first < 3 || last != first+2 {
			t.Errorf("kubectl logs -f gave %q, want the last line printed before it (3rd or later) and the next two", got)
		}
	})
}
