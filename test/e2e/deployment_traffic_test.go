package e2e

// A Deployment behind a Service with real Pods and the real proxy (nftables, the agents'
// default): traffic spreads over the replicas, the EndpointSlice follows scaling, and a rolling
// update of 10 replicas under a steady client loses no request. Addresses are the sandbox's
// (ARCHITECTURE.md, "Test topology"): nodes 10.250.0.1N, Pods 10.244.N.x, the ClusterIP from
// 10.96.0.0/12. Every connection is made from inside node1's namespace.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// trafficShutdownDelay is how long the test server keeps serving after SIGTERM while failing
// readiness (--delay-shutdown, as agnhost netexec's). It covers the time between the Pod's
// deletion and every proxy dropping the endpoint: the EndpointSlice controller's batching, the
// slice's way to each agent and the proxy's minimum sync interval — well under a second here,
// so 5 s leaves room for a loaded CI machine.
const trafficShutdownDelay = 5

func trafficDeployment(replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": "web"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "testserver", Image: "svcplane/testserver",
					Args:  []string{fmt.Sprintf("--delay-shutdown=%d", trafficShutdownDelay)},
					Env:   []corev1.EnvVar{{Name: "VERSION", Value: "1"}},
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
					// As the tutorials do: a Pod gets traffic only once it answers.
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
						PeriodSeconds: 1, FailureThreshold: 1,
					},
				}}},
			},
		},
	}
}

// deploymentPods are the Deployment's Pods that are not being deleted, by name.
func (c *agentCluster) deploymentPods(t *testing.T) map[string]*corev1.Pod {
	t.Helper()
	list, err := c.client.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*corev1.Pod{}
	for i := range list.Items {
		if p := &list.Items[i]; p.DeletionTimestamp == nil {
			out[p.Name] = p
		}
	}
	return out
}

// sliceMatchesPods reports "" when the Service's EndpointSlices hold exactly the Deployment's
// Pods, all ready, and nothing else; otherwise what differs.
func (c *agentCluster) sliceMatchesPods(t *testing.T, replicas int) string {
	t.Helper()
	pods := c.deploymentPods(t)
	if len(pods) != replicas {
		return fmt.Sprintf("%d Pods, want %d", len(pods), replicas)
	}
	var want []string
	for _, p := range pods {
		if !isReady(p) || p.Status.PodIP == "" {
			return fmt.Sprintf("Pod %s not ready yet", p.Name)
		}
		want = append(want, p.Status.PodIP+"/ready")
	}
	slices, err := c.client.DiscoveryV1().EndpointSlices("default").List(context.Background(),
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			state := "ready"
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				state = "not-ready"
			}
			if e.Conditions.Terminating != nil && *e.Conditions.Terminating {
				state = "terminating"
			}
			got = append(got, e.Addresses[0]+"/"+state)
		}
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		return fmt.Sprintf("slices hold %v, Pods are %v", got, want)
	}
	return ""
}

func (c *agentCluster) scaleDeployment(t *testing.T, replicas int32) {
	t.Helper()
	_, err := c.client.AppsV1().Deployments("default").UpdateScale(context.Background(), "web",
		&autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: autoscalingv1.ScaleSpec{Replicas: replicas}},
		metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("scaling to %d: %v", replicas, err)
	}
}

// rolledOut reports "" when the Deployment's latest generation is fully rolled out and no Pod
// of an older template is left, not even a terminating one.
func (c *agentCluster) rolledOut(t *testing.T, replicas int32) string {
	t.Helper()
	d, err := c.client.AppsV1().Deployments("default").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := d.Status
	if s.ObservedGeneration < d.Generation || s.UpdatedReplicas != replicas || s.Replicas != replicas || s.AvailableReplicas != replicas {
		return fmt.Sprintf("generation %d observed %d, replicas %d updated %d available %d", d.Generation, s.ObservedGeneration, s.Replicas, s.UpdatedReplicas, s.AvailableReplicas)
	}
	list, err := c.client.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != int(replicas) {
		return fmt.Sprintf("%d Pods (old ones still terminating), want %d", len(list.Items), replicas)
	}
	return ""
}

// node1Client makes each request on a new connection from node1's namespace, so that every
// request goes through the proxy's choice of endpoint.
func (c *agentCluster) node1Client() *http.Client {
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return topology.Dial(ctx, topology.NamespaceName(c.name, "node1"), network, addr)
		}},
	}
}

// fetchHostname asks the test server behind addr for its name, returning failures instead of
// failing the test.
func fetchHostname(client *http.Client, addr string) (string, error) {
	resp, err := client.Get("http://" + addr + "/hostname")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

// requestLoop sends GET /hostname to addr from node1 at a steady rate (node1Client).
type requestLoop struct {
	sent, failed, skipped atomic.Int64
	mu                    sync.Mutex
	errors                map[string]int // failure text → count
	answers               map[string]int // hostname → count, since the last reset
	stop                  chan struct{}
	done                  sync.WaitGroup
}

func (c *agentCluster) startRequestLoop(addr string, perSecond int) *requestLoop {
	l := &requestLoop{errors: map[string]int{}, answers: map[string]int{}, stop: make(chan struct{})}
	client := c.node1Client()
	// A bounded number in flight: a stalled proxy shows up as failures (timeouts), not as an
	// ever-growing pile of goroutines; a full pool is counted as skipped.
	inFlight := make(chan struct{}, 64)
	l.done.Add(1)
	go func() {
		defer l.done.Done()
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			select {
			case inFlight <- struct{}{}:
			default:
				l.skipped.Add(1)
				continue
			}
			l.sent.Add(1)
			l.done.Add(1)
			go func() {
				defer l.done.Done()
				defer func() { <-inFlight }()
				l.record(fetchHostname(client, addr))
			}()
		}
	}()
	return l
}

func (l *requestLoop) record(hostname string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failed.Add(1)
		// Group by the innermost cause ("connection refused", "EOF", a timeout): the
		// prefixes name per-request ports.
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		l.errors[msg]++
		return
	}
	l.answers[hostname]++
}

// resetAnswers forgets which Pods answered so far.
func (l *requestLoop) resetAnswers() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.answers = map[string]int{}
}

func (l *requestLoop) finish() (answers, errors map[string]int) {
	close(l.stop)
	l.done.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.answers, l.errors
}

func TestDeploymentTrafficFollowsScaleAndRollout(t *testing.T) {
	c := upWithAgents(t, 2)
	ctx := context.Background()
	svc, err := c.client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.AppsV1().Deployments("default").Create(ctx, trafficDeployment(3), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clusterAddr := net.JoinHostPort(svc.Spec.ClusterIP, "80")
	waitWorkload(t, 60*time.Second, "3 ready Pods in the EndpointSlice", func() string { return c.sliceMatchesPods(t, 3) })

	t.Run("connections to the ClusterIP spread over the 3 Pods", func(t *testing.T) {
		pods := c.deploymentPods(t)
		client := c.node1Client()
		seen := map[string]int{}
		// The slice is complete in the API; node1's proxy may be a sync behind it.
		eventually(t, 10*time.Second, "all three Pods answering", func() error {
			for i := 0; i < 60; i++ {
				name, err := fetchHostname(client, clusterAddr)
				if err != nil {
					return err
				}
				seen[name]++
			}
			if len(seen) < 3 {
				return fmt.Errorf("only %v answered", seen)
			}
			return nil
		})
		for name := range seen {
			if pods[name] == nil {
				t.Errorf("%q answered, which is none of the Deployment's Pods: %v", name, seen)
			}
		}
	})

	t.Run("the EndpointSlice follows scaling to 5 and to 1", func(t *testing.T) {
		for _, n := range []int32{5, 1} {
			c.scaleDeployment(t, n)
			waitWorkload(t, 60*time.Second, fmt.Sprintf("EndpointSlice after scaling to %d", n), func() string { return c.sliceMatchesPods(t, int(n)) })
		}
		// Only the remaining Pod answers, once its terminating peers are gone from the slice.
		var only string
		for name := range c.deploymentPods(t) {
			only = name
		}
		client := c.node1Client()
		eventually(t, 30*time.Second, "only "+only+" answering", func() error {
			for i := 0; i < 20; i++ {
				if got, err := fetchHostname(client, clusterAddr); err != nil || got != only {
					return fmt.Errorf("%q answered (error %v)", got, err)
				}
			}
			return nil
		})
	})

	t.Run("a rolling update of 10 replicas loses no request", func(t *testing.T) {
		const replicas, rate = 10, 200
		c.scaleDeployment(t, replicas)
		waitWorkload(t, 90*time.Second, "10 ready Pods in the EndpointSlice", func() string { return c.sliceMatchesPods(t, replicas) })
		before := c.deploymentPods(t)

		loop := c.startRequestLoop(clusterAddr, rate)
		time.Sleep(time.Second) // a baseline: failures before the rollout are not the rollout's
		start := time.Now()
		patch := `{"spec":{"template":{"spec":{"containers":[{"name":"testserver","env":[{"name":"VERSION","value":"2"}]}]}}}}`
		if _, err := c.client.AppsV1().Deployments("default").Patch(ctx, "web", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		waitWorkload(t, 120*time.Second, "rollout to the new template", func() string { return c.rolledOut(t, replicas) })
		took := time.Since(start)
		// After the rollout only new Pods may answer.
		loop.resetAnswers()
		time.Sleep(time.Second)
		answers, errs := loop.finish()

		sent, failed, skipped := loop.sent.Load(), loop.failed.Load(), loop.skipped.Load()
		t.Logf("rollout took %v; %d requests sent (%.0f/s), %d failed, %d not sent (client saturated)",
			took.Round(time.Millisecond), sent, float64(sent)/(took.Seconds()+2), failed, skipped)
		if failed > 0 {
			t.Errorf("%d of %d requests failed during the rollout: %v", failed, sent, errs)
		}
		if skipped > sent/20 {
			t.Errorf("the client could send only %d of %d requests: the rate was not held", sent, sent+skipped)
		}
		for name, n := range answers {
			if before[name] != nil {
				t.Errorf("old Pod %s still answered %d requests after the rollout", name, n)
			}
		}
		if len(answers) < replicas/2 {
			t.Errorf("after the rollout only %d Pods answered: %v", len(answers), answers)
		}
	})
}
