package e2e

// Addresses (ARCHITECTURE.md, "Test topology"): API server 10.250.0.2:6443 in cp; node N at
// 10.250.0.1N with pod bridge cbr0 10.244.N.1/24; Pods 10.244.N.x; Services 10.96.0.0/12.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcplane/svcplane/pkg/envvars"
	"github.com/svcplane/svcplane/pkg/sandbox"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
	"github.com/svcplane/svcplane/test/netns"
	"github.com/svcplane/svcplane/test/testserver"
)

type agentCluster struct {
	name   string
	state  *sandbox.State
	client kubernetes.Interface
}

// podLog waits until done holds for the output of Pod p's container "c", which runs on node
// n, and returns that output; after timeout it fails t, naming what it waited for.
func (c *agentCluster) podLog(t *testing.T, n int, p *corev1.Pod, timeout time.Duration, what string, done func(out string) bool) string {
	t.Helper()
	path := podLogPath(c.name, n, p)
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if done(string(b)) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not in %v of Pod %s's output:\n%s", what, timeout, p.Name, b)
		}
	}
}

// podLogPath is where the agent of node n in sandbox name keeps the output of Pod p's
// container "c".
func podLogPath(name string, n int, p *corev1.Pod) string {
	return filepath.Join(sandbox.AgentDataDir(sandbox.StateDir(name), n), "pods", string(p.UID), "c.log")
}

// lineCount is a podLog condition: at least n lines.
func lineCount(n int) func(string) bool {
	return func(out string) bool { return strings.Count(out, "\n") >= n }
}

// upWithAgents brings up a sandbox with agents and takes it down when t ends.
var sandboxes atomic.Int32

func upWithAgents(t *testing.T, nodes int) *agentCluster {
	t.Helper()
	return upWithAgentsAndProxy(t, nodes, "")
}

// upWithAgentsAndProxy is upWithAgents with the agents' --proxy-mode ("" is their default).
func upWithAgentsAndProxy(t *testing.T, nodes int, proxyMode string) *agentCluster {
	t.Helper()
	return upSandbox(t, sandbox.UpOptions{Nodes: nodes, ProxyMode: proxyMode})
}

// upSandbox brings up a sandbox with agents as opts says (its Name, Agent and Executable are
// filled in here) and takes it down when t ends.
func upSandbox(t *testing.T, opts sandbox.UpOptions) *agentCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("runs a sandbox with node agents; skipped with -short")
	}
	netns.Require(t)
	nodes := opts.Nodes
	// One sandbox per call: a name is locked until its creator exits.
	name := fmt.Sprintf("agt%d-%d", os.Getpid(), sandboxes.Add(1))
	opts.Name, opts.Agent, opts.Executable = name, true, testserver.Binary(t)
	t.Cleanup(func() {
		if t.Failed() {
			for n := 1; n <= nodes; n++ {
				b, _ := os.ReadFile(filepath.Join(sandbox.StateDir(name), "agent-node"+strconv.Itoa(n)+".log"))
				t.Logf("agent-node%d.log:\n%s", n, lastLines(string(b), 30))
			}
		}
		if err := sandbox.Down(context.Background(), name, nil); err != nil {
			t.Errorf("sandbox down: %v", err)
		}
		// Pods run outside the sandbox's namespaces and outlive their agent; down must
		// still leave none behind.
		if pids, err := topology.LockHolders(name); err != nil || len(pids) > 0 {
			t.Errorf("processes of the sandbox left after down: %v (%v)", pids, err)
		}
	})
	st, err := sandbox.Up(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", st.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	return &agentCluster{name: name, state: st, client: kubernetes.NewForConfigOrDie(cfg)}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func testServerPod(name string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "srv", Image: "svcplane/testserver",
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
				PeriodSeconds: 1, FailureThreshold: 1,
			},
		}}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func (c *agentCluster) create(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if _, err := c.client.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitPod polls until cond holds for the Pod, returning it.
func (c *agentCluster) waitPod(t *testing.T, name, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		p, err := c.client.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			last = p
			if cond(p) {
				return p
			}
		}
	}
	t.Fatalf("pod %s: timed out waiting for %s; last status %+v", name, what, last.Status)
	return nil
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// get fetches a URL from inside member's namespace.
func (c *agentCluster) get(t *testing.T, member, method, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return topology.Dial(ctx, topology.NamespaceName(c.name, member), network, addr)
	}}}
	req, _ := http.NewRequestWithContext(ctx, method, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s from %s: %v", method, url, member, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestAgentRunsPodsThatReachEachOtherAcrossNodes(t *testing.T) {
	c := upWithAgents(t, 2)
	ctx := context.Background()

	// A Service created before the Pods: its variables must be in their environment.
	svc, err := c.client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-svc"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
			{Name: "echo-udp", Port: 7, Protocol: corev1.ProtocolUDP},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web-1", "web-2", "web-3"} {
		c.create(t, testServerPod(name))
	}
	ips := map[string]string{}
	nodes := map[string]string{}
	for _, name := range []string{"web-1", "web-2", "web-3"} {
		p := c.waitPod(t, name, "Ready", isReady)
		ips[name], nodes[name] = p.Status.PodIP, p.Spec.NodeName
	}
	if nodes["web-1"] == nodes["web-2"] && nodes["web-2"] == nodes["web-3"] {
		t.Fatalf("all Pods on %s; the scheduler should spread them", nodes["web-1"])
	}

	t.Run("pods reach each other across nodes", func(t *testing.T) {
		// A Pod whose command fetches every test server and prints what it got.
		var script strings.Builder
		for _, name := range []string{"web-1", "web-2", "web-3"} {
			fmt.Fprintf(&script, "curl -s -m 5 http://%s:8080/hostname; echo; curl -s -m 5 http://%s:8080/clientip; echo; ", ips[name], ips[name])
		}
		script.WriteString("sleep 3600")
		c.create(t, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "client"},
			Spec: corev1.PodSpec{NodeSelector: map[string]string{"kubernetes.io/hostname": "node1"},
				Containers: []corev1.Container{{Name: "c", Image: "debian", Command: []string{"/bin/sh", "-c", script.String()}}}},
		})
		p := c.waitPod(t, "client", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
		out := c.podLog(t, 1, p, 15*time.Second, "three /hostname and /clientip answers", lineCount(6))
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 6 {
			t.Fatalf("client output:\n%s", out)
		}
		for i, name := range []string{"web-1", "web-2", "web-3"} {
			if lines[2*i] != name {
				t.Errorf("%s answered /hostname with %q", name, lines[2*i])
			}
			// Pod-to-Pod traffic is not masqueraded: the server sees the client Pod's own IP.
			if !strings.HasPrefix(lines[2*i+1], p.Status.PodIP+":") {
				t.Errorf("%s saw the client as %q, want %s:<port>", name, lines[2*i+1], p.Status.PodIP)
			}
		}
	})

	t.Run("service env vars match upstream's format", func(t *testing.T) {
		kube, err := c.client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{}
		for _, v := range envvars.FromServices([]*corev1.Service{kube, svc}) {
			want[v.Name] = v.Value
		}
		// Spelled out once, so a change of format in both envvars and here is a conscious one.
		ip := svc.Spec.ClusterIP
		literal := map[string]string{
			"WEB_SVC_SERVICE_HOST": ip, "WEB_SVC_SERVICE_PORT": "80", "WEB_SVC_SERVICE_PORT_HTTP": "80",
			"WEB_SVC_SERVICE_PORT_ECHO_UDP": "7", "WEB_SVC_PORT": "tcp://" + ip + ":80",
			"WEB_SVC_PORT_80_TCP": "tcp://" + ip + ":80", "WEB_SVC_PORT_80_TCP_PROTO": "tcp",
			"WEB_SVC_PORT_80_TCP_PORT": "80", "WEB_SVC_PORT_80_TCP_ADDR": ip,
			"WEB_SVC_PORT_7_UDP": "udp://" + ip + ":7", "WEB_SVC_PORT_7_UDP_PROTO": "udp",
			"WEB_SVC_PORT_7_UDP_PORT": "7", "WEB_SVC_PORT_7_UDP_ADDR": ip,
		}
		for k, v := range literal {
			if want[k] != v {
				t.Errorf("envvars gives %s=%q, upstream's format is %q", k, want[k], v)
			}
		}
		got := map[string]string{}
		for _, line := range strings.Split(c.get(t, nodes["web-1"], "GET", "http://"+ips["web-1"]+":8080/env"), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && (strings.HasPrefix(k, "WEB_SVC_") || strings.HasPrefix(k, "KUBERNETES_")) {
				got[k] = v
			}
		}
		if fmt.Sprint(sortedPairs(got)) != fmt.Sprint(sortedPairs(want)) {
			t.Errorf("pod environment:\n%v\nwant:\n%v", sortedPairs(got), sortedPairs(want))
		}
	})

	t.Run("readiness flips when the probe fails", func(t *testing.T) {
		url := "http://" + ips["web-2"] + ":8080/healthz"
		c.get(t, nodes["web-2"], "POST", url+"?fail=true")
		c.waitPod(t, "web-2", "not Ready", func(p *corev1.Pod) bool { return !isReady(p) })
		c.get(t, nodes["web-2"], "POST", url+"?fail=false")
		p := c.waitPod(t, "web-2", "Ready again", isReady)
		if p.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Errorf("readiness failure restarted the container")
		}
	})

	t.Run("agent restart keeps pods running", func(t *testing.T) {
		before := map[string]string{}
		for _, name := range []string{"web-1", "web-2", "web-3"} {
			p, _ := c.client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			before[name] = p.Status.ContainerStatuses[0].ContainerID
		}
		for i, proc := range c.state.Processes {
			if proc.Role != "agent" {
				continue
			}
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", proc.PID))
			if err != nil {
				t.Fatal(err)
			}
			// /proc shows the agent's own argv (ip netns exec execs it); it must be started in
			// the node's namespace again, never in the host's.
			args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
			syscall.Kill(proc.PID, syscall.SIGKILL)
			time.Sleep(200 * time.Millisecond)
			cmd := topology.Command(context.Background(), topology.NamespaceName(c.name, proc.Member), args[0], args[1:]...)
			logFile, _ := os.OpenFile(proc.Log, os.O_WRONLY|os.O_APPEND, 0)
			cmd.Stdout, cmd.Stderr = logFile, logFile
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			logFile.Close()
			go cmd.Wait()
			// The sandbox's down kills whatever runs in the node namespace, this agent too.
			c.state.Processes[i].PID = cmd.Process.Pid
		}
		time.Sleep(2 * time.Second)
		for _, name := range []string{"web-1", "web-2", "web-3"} {
			p := c.waitPod(t, name, "Ready", isReady)
			cs := p.Status.ContainerStatuses[0]
			if cs.ContainerID != before[name] || cs.RestartCount != 0 {
				t.Errorf("%s: container %s (restarts %d), was %s: the restarted agent restarted it", name, cs.ContainerID, cs.RestartCount, before[name])
			}
			if got := c.get(t, nodes[name], "GET", "http://"+ips[name]+":8080/hostname"); got != name {
				t.Errorf("%s answers %q after the agent restart", name, got)
			}
		}
		// The restarted agent still manages them: a new Pod starts, readiness still works.
		c.create(t, testServerPod("web-4"))
		c.waitPod(t, "web-4", "Ready", isReady)
	})

	t.Run("graceful deletion stops the process before the object goes", func(t *testing.T) {
		grace := int64(10)
		c.create(t, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "slow-stop"},
			Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &grace, NodeSelector: map[string]string{"kubernetes.io/hostname": "node2"},
				Containers: []corev1.Container{{Name: "c", Image: "debian", Command: []string{"/bin/sh", "-c",
					`trap 'echo got SIGTERM; sleep 1; echo exiting; exit 0' TERM; echo started; while :; do sleep 0.1; done`}}}},
		})
		p := c.waitPod(t, "slow-stop", "Ready", isReady)
		// Ready means the process runs, not that the shell has installed its trap yet: a
		// SIGTERM before that would end it at once, as on any kubelet.
		c.podLog(t, 2, p, 10*time.Second, "'started'", func(out string) bool { return strings.Contains(out, "started") })
		logPath := podLogPath(c.name, 2, p)
		// svcplane logs finds the Pod's node through the API and prints its container's output.
		out, err := exec.Command(testserver.Binary(t), "logs", "--sandbox", c.name, "slow-stop").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "started") {
			t.Errorf("svcplane logs slow-stop: %v\n%s", err, out)
		}
		start := time.Now()
		if err := c.client.CoreV1().Pods("default").Delete(ctx, "slow-stop", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		marked := c.waitPod(t, "slow-stop", "deletionTimestamp", func(p *corev1.Pod) bool { return p.DeletionTimestamp != nil })
		if *marked.DeletionGracePeriodSeconds != grace {
			t.Errorf("grace %d, want %d", *marked.DeletionGracePeriodSeconds, grace)
		}
		var logAtGone string
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			b, _ := os.ReadFile(logPath)
			logAtGone = string(b)
			_, err := c.client.CoreV1().Pods("default").Get(ctx, "slow-stop", metav1.GetOptions{})
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("pod still in the API 20s after deletion")
			}
		}
		took := time.Since(start)
		// The log file goes with the Pod; what it held just before shows the order.
		if logAtGone != "" && !strings.Contains(logAtGone, "exiting") {
			t.Errorf("the Pod left the API before its process finished; log:\n%s", logAtGone)
		}
		if took < time.Second || took > 8*time.Second {
			t.Errorf("deletion took %v: want the 1s the process needs after SIGTERM, far less than the %ds grace", took, grace)
		}
	})

	t.Run("unsupported image fails with a clear reason", func(t *testing.T) {
		c.create(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nginx"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "nginx", Image: "nginx:1.27"}}}})
		p := c.waitPod(t, "nginx", "Failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
		if w := p.Status.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "ErrImageUnsupported" {
			t.Errorf("container state %+v, want waiting ErrImageUnsupported", p.Status.ContainerStatuses[0].State)
		}
	})
}

func sortedPairs(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
