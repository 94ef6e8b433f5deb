package e2e

// These tests drive the EndpointSlice, Endpoints and mirroring controllers through the real
// server. There is no node agent here, so a test plays its part: it creates Nodes, creates Pods
// already bound to them (spec.nodeName) and writes their status (IP, Ready) through pods/status.
// Pod IPs come from 10.244.0.0/16, one /24 per test.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	kptr "k8s.io/utils/ptr"

	"github.com/svcplane/svcplane/test/testserver"
)

const (
	epManagedBySlices    = "endpointslice-controller.k8s.io"
	epManagedByMirroring = "endpointslicemirroring-controller.k8s.io"
	epConvergeTimeout    = 30 * time.Second
)

// epCluster is a namespace on a running server plus the helpers that play the node agent.
type epCluster struct {
	t      *testing.T
	client kubernetes.Interface
	ns     string
	subnet int // third octet of this test's Pod IPs
}

func newEPCluster(t *testing.T, s *testserver.Server, ns string, subnet int) *epCluster {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", ns, err)
	}
	c := &epCluster{t: t, client: s.Client, ns: ns, subnet: subnet}
	return c
}

// ensureEPNodes creates node-a (zone-a) and node-b (zone-b) once per server.
func ensureEPNodes(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	for _, n := range []struct{ name, zone string }{{"node-a", "zone-a"}, {"node-b", "zone-b"}} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{corev1.LabelTopologyZone: n.zone}}}
		_, err := client.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating node %s: %v", n.name, err)
		}
	}
}

type epPodSpec struct {
	name      string
	labels    map[string]string
	node      string
	ports     []corev1.ContainerPort
	hostname  string
	subdomain string
}

func (c *epCluster) ip(i int) string { return fmt.Sprintf("10.244.%d.%d", c.subnet+i/250, 1+i%250) }

// createPod creates a bound Pod and gives it ip, Ready as asked.
func (c *epCluster) createPod(p epPodSpec, ip string, ready bool) *corev1.Pod {
	c.t.Helper()
	if p.node == "" {
		p.node = "node-a"
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Labels: p.labels},
		Spec: corev1.PodSpec{
			NodeName:  p.node,
			Hostname:  p.hostname,
			Subdomain: p.subdomain,
			Containers: []corev1.Container{{
				Name: "app", Image: "registry.example/app:1", Ports: p.ports,
			}},
		},
	}
	created, err := c.client.CoreV1().Pods(c.ns).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("creating pod %s: %v", p.name, err)
	}
	c.setStatus(p.name, ip, ready)
	return created
}

// setStatus writes what an agent would: Running, the Pod IP and the Ready condition.
func (c *epCluster) setStatus(name, ip string, ready bool) {
	c.t.Helper()
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{
		"phase":  "Running",
		"podIP":  ip,
		"podIPs": []map[string]string{{"ip": ip}},
		"conditions": []map[string]any{{
			"type": "Ready", "status": status, "lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
		}},
	}})
	_, err := c.client.CoreV1().Pods(c.ns).Patch(context.Background(), name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		c.t.Fatalf("setting status of pod %s: %v", name, err)
	}
}

func (c *epCluster) deletePod(name string, grace int64) {
	c.t.Helper()
	err := c.client.CoreV1().Pods(c.ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	if err != nil && !apierrors.IsNotFound(err) {
		c.t.Fatalf("deleting pod %s: %v", name, err)
	}
}

// createPods creates n Pods name-0..name-(n-1) in parallel, with IPs from index offset on.
func (c *epCluster) createPods(prefix string, n, offset int, labels map[string]string, ready bool) {
	c.t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.createPod(epPodSpec{name: fmt.Sprintf("%s-%d", prefix, i), labels: labels, node: []string{"node-a", "node-b"}[i%2]}, c.ip(offset+i), ready)
		}()
	}
	wg.Wait()
}

func (c *epCluster) createService(svc *corev1.Service) *corev1.Service {
	c.t.Helper()
	created, err := c.client.CoreV1().Services(c.ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("creating service %s: %v", svc.Name, err)
	}
	return created
}

func (c *epCluster) updateService(name string, change func(*corev1.Service)) {
	c.t.Helper()
	svc, err := c.client.CoreV1().Services(c.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	change(svc)
	if _, err := c.client.CoreV1().Services(c.ns).Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
		c.t.Fatalf("updating service %s: %v", name, err)
	}
}

func epService(name string, selector map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"team": "web"}},
		// Single-stack IPv4 spelled out: a Service without families would get slices of both
		// address types, as upstream does for Services from API servers that predate families.
		Spec: corev1.ServiceSpec{Selector: selector, Ports: ports, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}},
	}
}

// slices returns the slices of a Service that managedBy wrote.
func (c *epCluster) slices(service, managedBy string) []discoveryv1.EndpointSlice {
	c.t.Helper()
	list, err := c.client.DiscoveryV1().EndpointSlices(c.ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + service + "," + discoveryv1.LabelManagedBy + "=" + managedBy,
	})
	if err != nil {
		c.t.Fatalf("listing slices of %s: %v", service, err)
	}
	return list.Items
}

// epView is what a test asserts about one endpoint, flattened for readable diffs.
type epView struct {
	IP, Node, Zone, Pod, Hostname string
	Ready, Serving, Terminating   bool
}

func (v epView) String() string {
	return fmt.Sprintf("%s(pod=%s node=%s zone=%s host=%s ready=%v serving=%v terminating=%v)",
		v.IP, v.Pod, v.Node, v.Zone, v.Hostname, v.Ready, v.Serving, v.Terminating)
}

func epViews(slices []discoveryv1.EndpointSlice) map[string]epView {
	out := map[string]epView{}
	for _, s := range slices {
		for _, e := range s.Endpoints {
			v := epView{IP: strings.Join(e.Addresses, ","), Node: kptr.Deref(e.NodeName, ""), Zone: kptr.Deref(e.Zone, ""),
				Hostname: kptr.Deref(e.Hostname, ""), Ready: kptr.Deref(e.Conditions.Ready, false),
				Serving: kptr.Deref(e.Conditions.Serving, false), Terminating: kptr.Deref(e.Conditions.Terminating, false)}
			if e.TargetRef != nil {
				v.Pod = e.TargetRef.Name
			}
			out[v.IP] = v
		}
	}
	return out
}

// epEventually polls check until it returns "" (success) or the timeout passes, then fails with
// check's last complaint.
func epEventually(t *testing.T, timeout time.Duration, check func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged after %v: %s", timeout, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitEndpoints waits until the Service's controller-made slices hold exactly want (by IP).
func (c *epCluster) waitEndpoints(service string, want map[string]epView) {
	c.t.Helper()
	epEventually(c.t, epConvergeTimeout, func() string {
		got := epViews(c.slices(service, epManagedBySlices))
		if fmt.Sprint(sortedEPViews(got)) != fmt.Sprint(sortedEPViews(want)) {
			return fmt.Sprintf("slices of %s:\n got  %v\n want %v", service, sortedEPViews(got), sortedEPViews(want))
		}
		return ""
	})
}

func sortedEPViews(m map[string]epView) []string {
	var out []string
	for _, v := range m {
		out = append(out, v.String())
	}
	sort.Strings(out)
	return out
}

// endpointsView flattens an Endpoints object to "ip:port" lists of ready and not-ready addresses.
func (c *epCluster) endpointsView(name string) (ready, notReady []string, annotations map[string]string, err error) {
	ep, err := c.client.CoreV1().Endpoints(c.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, nil, err
	}
	for _, s := range ep.Subsets {
		for _, p := range s.Ports {
			for _, a := range s.Addresses {
				ready = append(ready, fmt.Sprintf("%s:%d", a.IP, p.Port))
			}
			for _, a := range s.NotReadyAddresses {
				notReady = append(notReady, fmt.Sprintf("%s:%d", a.IP, p.Port))
			}
		}
	}
	sort.Strings(ready)
	sort.Strings(notReady)
	return ready, notReady, ep.Annotations, nil
}

func (c *epCluster) waitLegacyEndpoints(name string, wantReady, wantNotReady []string) {
	c.t.Helper()
	sort.Strings(wantReady)
	sort.Strings(wantNotReady)
	epEventually(c.t, epConvergeTimeout, func() string {
		ready, notReady, _, err := c.endpointsView(name)
		if err != nil {
			return err.Error()
		}
		if !slices.Equal(ready, wantReady) || !slices.Equal(notReady, wantNotReady) {
			return fmt.Sprintf("Endpoints %s: ready %v notReady %v, want ready %v notReady %v", name, ready, notReady, wantReady, wantNotReady)
		}
		return ""
	})
}

func readyAt(ip, pod, node string) epView {
	return epView{IP: ip, Pod: pod, Node: node, Zone: "zone-" + node[len(node)-1:], Ready: true, Serving: true}
}

func TestEndpointControllers(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	ensureEPNodes(t, s.Client)
	web := map[string]string{"app": "web"}

	t.Run("scaling Pods up and down changes the endpoints", func(t *testing.T) {
		c := newEPCluster(t, s, "scale", 1)
		c.createService(epService("web", web))
		c.createPods("web", 3, 0, web, true)
		want := map[string]epView{}
		for i := range 3 {
			node := []string{"node-a", "node-b"}[i%2]
			want[c.ip(i)] = readyAt(c.ip(i), fmt.Sprintf("web-%d", i), node)
		}
		c.waitEndpoints("web", want)
		c.waitLegacyEndpoints("web", []string{c.ip(0) + ":8080", c.ip(1) + ":8080", c.ip(2) + ":8080"}, nil)

		c.createPods("more", 2, 10, web, true)
		want[c.ip(10)] = readyAt(c.ip(10), "more-0", "node-a")
		want[c.ip(11)] = readyAt(c.ip(11), "more-1", "node-b")
		c.waitEndpoints("web", want)

		for _, name := range []string{"web-0", "web-1", "more-1"} {
			c.deletePod(name, 0)
		}
		delete(want, c.ip(0))
		delete(want, c.ip(1))
		delete(want, c.ip(11))
		c.waitEndpoints("web", want)
		c.waitLegacyEndpoints("web", []string{c.ip(2) + ":8080", c.ip(10) + ":8080"}, nil)

		// Each slice names its Service as controlling owner, so deleting the Service removes it.
		got := c.slices("web", epManagedBySlices)
		svc, _ := c.client.CoreV1().Services(c.ns).Get(context.Background(), "web", metav1.GetOptions{})
		for _, sl := range got {
			if len(sl.OwnerReferences) != 1 || sl.OwnerReferences[0].UID != svc.UID || !kptr.Deref(sl.OwnerReferences[0].Controller, false) {
				t.Errorf("slice %s owner references = %+v, want the Service as controller", sl.Name, sl.OwnerReferences)
			}
			if sl.Labels["team"] != "web" {
				t.Errorf("slice %s labels = %v, want the Service's labels copied", sl.Name, sl.Labels)
			}
		}
		if err := c.client.CoreV1().Services(c.ns).Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		epEventually(t, epConvergeTimeout, func() string {
			if n := len(c.slices("web", epManagedBySlices)); n > 0 {
				return fmt.Sprintf("%d slices left after the Service was deleted", n)
			}
			if _, err := c.client.CoreV1().Endpoints(c.ns).Get(context.Background(), "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Sprintf("Endpoints still there after the Service was deleted (err=%v)", err)
			}
			return ""
		})
	})

	t.Run("readiness flips move an endpoint between ready and not ready", func(t *testing.T) {
		c := newEPCluster(t, s, "readiness", 2)
		c.createService(epService("web", web))
		c.createPod(epPodSpec{name: "a", labels: web}, c.ip(0), false)
		c.createPod(epPodSpec{name: "b", labels: web, node: "node-b"}, c.ip(1), true)
		notReady := epView{IP: c.ip(0), Pod: "a", Node: "node-a", Zone: "zone-a"}
		c.waitEndpoints("web", map[string]epView{c.ip(0): notReady, c.ip(1): readyAt(c.ip(1), "b", "node-b")})
		c.waitLegacyEndpoints("web", []string{c.ip(1) + ":8080"}, []string{c.ip(0) + ":8080"})

		c.setStatus("a", c.ip(0), true)
		c.setStatus("b", c.ip(1), false)
		c.waitEndpoints("web", map[string]epView{
			c.ip(0): readyAt(c.ip(0), "a", "node-a"),
			c.ip(1): {IP: c.ip(1), Pod: "b", Node: "node-b", Zone: "zone-b"},
		})
		c.waitLegacyEndpoints("web", []string{c.ip(0) + ":8080"}, []string{c.ip(1) + ":8080"})
	})

	t.Run("a deleted Pod is a terminating endpoint until it is gone", func(t *testing.T) {
		c := newEPCluster(t, s, "terminating", 3)
		c.createService(epService("web", web))
		c.createPod(epPodSpec{name: "a", labels: web}, c.ip(0), true)
		c.createPod(epPodSpec{name: "b", labels: web}, c.ip(1), true)
		c.waitEndpoints("web", map[string]epView{c.ip(0): readyAt(c.ip(0), "a", "node-a"), c.ip(1): readyAt(c.ip(1), "b", "node-a")})

		c.deletePod("a", 300) // bound to a node: marked for deletion, stays for its grace period
		terminating := epView{IP: c.ip(0), Pod: "a", Node: "node-a", Zone: "zone-a", Serving: true, Terminating: true}
		c.waitEndpoints("web", map[string]epView{c.ip(0): terminating, c.ip(1): readyAt(c.ip(1), "b", "node-a")})
		// Legacy Endpoints drop terminating Pods altogether.
		c.waitLegacyEndpoints("web", []string{c.ip(1) + ":8080"}, nil)

		c.deletePod("a", 0)
		c.waitEndpoints("web", map[string]epView{c.ip(1): readyAt(c.ip(1), "b", "node-a")})
	})

	t.Run("a Node's zone reaches the endpoints of its Pods, also for a Node that comes late", func(t *testing.T) {
		c := newEPCluster(t, s, "zones", 7)
		c.createService(epService("web", web))
		c.createPod(epPodSpec{name: "late", labels: web, node: "node-late"}, c.ip(0), true)
		c.createPod(epPodSpec{name: "early", labels: web}, c.ip(1), true)
		// Upstream leaves out Pods whose Node is unknown (unless not-ready addresses are published).
		c.waitEndpoints("web", map[string]epView{c.ip(1): readyAt(c.ip(1), "early", "node-a")})

		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-late", Labels: map[string]string{corev1.LabelTopologyZone: "zone-c"}}}
		if _, err := c.client.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		late := epView{IP: c.ip(0), Pod: "late", Node: "node-late", Zone: "zone-c", Ready: true, Serving: true}
		c.waitEndpoints("web", map[string]epView{c.ip(0): late, c.ip(1): readyAt(c.ip(1), "early", "node-a")})

		node, _ = c.client.CoreV1().Nodes().Get(context.Background(), "node-late", metav1.GetOptions{})
		node.Labels[corev1.LabelTopologyZone] = "zone-d"
		if _, err := c.client.CoreV1().Nodes().Update(context.Background(), node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		late.Zone = "zone-d"
		c.waitEndpoints("web", map[string]epView{c.ip(0): late, c.ip(1): readyAt(c.ip(1), "early", "node-a")})
	})

	t.Run("changing a Service's selector and ports rewrites its endpoints", func(t *testing.T) {
		c := newEPCluster(t, s, "selector", 4)
		api := map[string]string{"app": "api"}
		c.createService(epService("svc", web))
		c.createPod(epPodSpec{name: "web", labels: web}, c.ip(0), true)
		c.createPod(epPodSpec{name: "api", labels: api}, c.ip(1), true)
		c.waitEndpoints("svc", map[string]epView{c.ip(0): readyAt(c.ip(0), "web", "node-a")})

		c.updateService("svc", func(s *corev1.Service) { s.Spec.Selector = api })
		c.waitEndpoints("svc", map[string]epView{c.ip(1): readyAt(c.ip(1), "api", "node-a")})
		c.waitLegacyEndpoints("svc", []string{c.ip(1) + ":8080"}, nil)

		c.updateService("svc", func(s *corev1.Service) {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "metrics", Port: 9100, TargetPort: intstr.FromInt32(9100), Protocol: corev1.ProtocolTCP})
		})
		epEventually(t, epConvergeTimeout, func() string {
			got := c.slices("svc", epManagedBySlices)
			if len(got) != 1 || len(got[0].Ports) != 2 {
				return fmt.Sprintf("want one slice with two ports, got %d slices: %+v", len(got), got)
			}
			return ""
		})
		c.waitLegacyEndpoints("svc", []string{c.ip(1) + ":8080", c.ip(1) + ":9100"}, nil)

		// Without a selector the Service's endpoints are someone else's: ours go away.
		c.updateService("svc", func(s *corev1.Service) { s.Spec.Selector = nil })
		epEventually(t, epConvergeTimeout, func() string {
			if n := len(c.slices("svc", epManagedBySlices)); n != 0 {
				return fmt.Sprintf("%d controller slices left for a selectorless Service", n)
			}
			return ""
		})
	})

	t.Run("a named targetPort resolves per Pod", func(t *testing.T) {
		c := newEPCluster(t, s, "named", 5)
		c.createService(epService("web", web, corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}))
		for i, port := range []int32{8080, 8080, 9090} {
			c.createPod(epPodSpec{name: fmt.Sprintf("p%d", i), labels: web, ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port, Protocol: corev1.ProtocolTCP}}}, c.ip(i), true)
		}
		c.createPod(epPodSpec{name: "noport", labels: web}, c.ip(3), true)
		epEventually(t, epConvergeTimeout, func() string {
			byPort := map[int32][]string{}
			for _, sl := range c.slices("web", epManagedBySlices) {
				if len(sl.Ports) != 1 {
					continue
				}
				for _, e := range sl.Endpoints {
					byPort[*sl.Ports[0].Port] = append(byPort[*sl.Ports[0].Port], e.Addresses[0])
				}
			}
			sort.Strings(byPort[8080])
			want := fmt.Sprint(map[int32][]string{8080: {c.ip(0), c.ip(1)}, 9090: {c.ip(2)}})
			if fmt.Sprint(byPort) != want {
				return fmt.Sprintf("endpoints by port = %v, want %v", byPort, want)
			}
			return ""
		})
		c.waitLegacyEndpoints("web", []string{c.ip(0) + ":8080", c.ip(1) + ":8080", c.ip(2) + ":9090"}, nil)
	})

	t.Run("a headless Service publishes hostnames and, if asked, not-ready Pods", func(t *testing.T) {
		c := newEPCluster(t, s, "headless", 6)
		db := map[string]string{"app": "db"}
		svc := epService("db", db)
		svc.Spec.ClusterIP = corev1.ClusterIPNone
		svc.Spec.ClusterIPs = []string{corev1.ClusterIPNone}
		svc.Spec.PublishNotReadyAddresses = true
		c.createService(svc)
		c.createPod(epPodSpec{name: "db-0", labels: db, hostname: "db-0", subdomain: "db"}, c.ip(0), false)
		c.createPod(epPodSpec{name: "db-1", labels: db, hostname: "db-1", subdomain: "other"}, c.ip(1), true)
		c.waitEndpoints("db", map[string]epView{
			c.ip(0): {IP: c.ip(0), Pod: "db-0", Node: "node-a", Zone: "zone-a", Hostname: "db-0", Ready: true},
			c.ip(1): readyAt(c.ip(1), "db-1", "node-a"),
		})
		c.waitLegacyEndpoints("db", []string{c.ip(0) + ":8080", c.ip(1) + ":8080"}, nil)
	})

	t.Run("250 Pods fill three slices and one change rewrites one slice", func(t *testing.T) {
		c := newEPCluster(t, s, "many", 10)
		c.createService(epService("web", web))
		c.createPods("web", 250, 0, web, true)
		epEventually(t, epConvergeTimeout, func() string {
			got := c.slices("web", epManagedBySlices)
			var sizes []int
			for _, sl := range got {
				sizes = append(sizes, len(sl.Endpoints))
			}
			sort.Ints(sizes)
			// How the 250 are split depends on how the creations were batched into syncs
			// ([50 100 100] when one sync sees them all, [75 75 100] after 75 then 175, as
			// upstream's reconciler fills): three slices of at most 100 each is the rule.
			if len(sizes) != 3 || sizes[2] > 100 {
				return fmt.Sprintf("slice sizes %v, want three of at most 100", sizes)
			}
			if n := len(epViews(got)); n != 250 {
				return fmt.Sprintf("%d distinct endpoints, want 250", n)
			}
			return ""
		})
		before := sliceRVs(c.slices("web", epManagedBySlices))
		c.setStatus("web-7", c.ip(7), false)
		epEventually(t, epConvergeTimeout, func() string {
			if v := epViews(c.slices("web", epManagedBySlices))[c.ip(7)]; v.Ready {
				return "web-7 still ready"
			}
			return ""
		})
		if changed := changedObjects(before, sliceRVs(c.slices("web", epManagedBySlices))); len(changed) != 1 {
			t.Errorf("one Pod's readiness flip rewrote slices %v, want exactly one", changed)
		}
		epEventually(t, epConvergeTimeout, func() string {
			ready, notReady, _, err := c.endpointsView("web")
			if err != nil || len(ready) != 249 || len(notReady) != 1 {
				return fmt.Sprintf("Endpoints has %d ready and %d not ready addresses (err=%v), want 249 and 1", len(ready), len(notReady), err)
			}
			return ""
		})
	})

	t.Run("more than 1000 Pods truncate the Endpoints and say so", func(t *testing.T) {
		c := newEPCluster(t, s, "capacity", 20)
		c.createService(epService("web", web))
		c.createPods("web", 1001, 0, web, true)
		epEventually(t, 2*epConvergeTimeout, func() string {
			ready, _, annotations, err := c.endpointsView("web")
			if err != nil || len(ready) != 1000 || annotations[corev1.EndpointsOverCapacity] != "truncated" {
				return fmt.Sprintf("Endpoints has %d addresses and annotations %v (err=%v), want 1000 and over-capacity", len(ready), annotations, err)
			}
			if n := len(epViews(c.slices("web", epManagedBySlices))); n != 1001 {
				return fmt.Sprintf("slices hold %d endpoints, want all 1001", n)
			}
			return ""
		})
		c.deletePod("web-0", 0)
		epEventually(t, epConvergeTimeout, func() string {
			ready, _, annotations, err := c.endpointsView("web")
			if _, marked := annotations[corev1.EndpointsOverCapacity]; err != nil || len(ready) != 1000 || marked {
				return fmt.Sprintf("Endpoints has %d addresses and annotations %v (err=%v), want 1000 and no over-capacity", len(ready), annotations, err)
			}
			return ""
		})
	})

	t.Run("hand-written Endpoints of a selectorless Service are mirrored", func(t *testing.T) {
		c := newEPCluster(t, s, "mirror", 30)
		c.createService(epService("external", nil))
		ep := &corev1.Endpoints{
			ObjectMeta: metav1.ObjectMeta{Name: "external", Labels: map[string]string{"origin": "manual"}},
			Subsets: []corev1.EndpointSubset{{
				Addresses:         []corev1.EndpointAddress{{IP: "192.0.2.10"}, {IP: "192.0.2.11", Hostname: "b"}},
				NotReadyAddresses: []corev1.EndpointAddress{{IP: "192.0.2.12"}},
				Ports:             []corev1.EndpointPort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}},
			}, {
				Addresses: []corev1.EndpointAddress{{IP: "2001:db8::1"}},
				Ports:     []corev1.EndpointPort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}},
			}},
		}
		if _, err := c.client.CoreV1().Endpoints(c.ns).Create(context.Background(), ep, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		mirrored := func(wantIPv4 string) func() string {
			return func() string {
				got := c.slices("external", epManagedByMirroring)
				var summary []string
				for _, sl := range got {
					var eps []string
					for _, e := range sl.Endpoints {
						eps = append(eps, fmt.Sprintf("%s/%v/%s", e.Addresses[0], kptr.Deref(e.Conditions.Ready, false), kptr.Deref(e.Hostname, "")))
					}
					sort.Strings(eps)
					if sl.Labels["origin"] != "manual" {
						return fmt.Sprintf("slice %s lost the Endpoints' labels: %v", sl.Name, sl.Labels)
					}
					summary = append(summary, fmt.Sprintf("%s:%d:%v", sl.AddressType, *sl.Ports[0].Port, eps))
				}
				sort.Strings(summary)
				want := fmt.Sprint([]string{"IPv4:8080:" + wantIPv4, "IPv6:8080:[2001:db8::1/true/]"})
				if fmt.Sprint(summary) != want {
					return fmt.Sprintf("mirrored slices %v, want %v", summary, want)
				}
				return ""
			}
		}
		epEventually(t, epConvergeTimeout, mirrored("[192.0.2.10/true/ 192.0.2.11/true/b 192.0.2.12/false/]"))

		ep, _ = c.client.CoreV1().Endpoints(c.ns).Get(context.Background(), "external", metav1.GetOptions{})
		ep.Subsets[0].NotReadyAddresses = nil
		if _, err := c.client.CoreV1().Endpoints(c.ns).Update(context.Background(), ep, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		epEventually(t, epConvergeTimeout, mirrored("[192.0.2.10/true/ 192.0.2.11/true/b]"))
		if got, _ := c.client.CoreV1().Endpoints(c.ns).Get(context.Background(), "external", metav1.GetOptions{}); got.Labels[discoveryv1.LabelSkipMirror] != "" {
			t.Errorf("the Endpoints controller touched hand-written Endpoints: labels %v", got.Labels)
		}

		// Endpoints marked skip-mirror are not mirrored, as the API server's own are not.
		ep, _ = c.client.CoreV1().Endpoints(c.ns).Get(context.Background(), "external", metav1.GetOptions{})
		ep.Labels[discoveryv1.LabelSkipMirror] = "true"
		if _, err := c.client.CoreV1().Endpoints(c.ns).Update(context.Background(), ep, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		epEventually(t, epConvergeTimeout, func() string {
			if n := len(c.slices("external", epManagedByMirroring)); n != 0 {
				return fmt.Sprintf("%d mirrored slices left for skip-mirror Endpoints", n)
			}
			return ""
		})
	})

	t.Run("slices managed by someone else are left alone", func(t *testing.T) {
		c := newEPCluster(t, s, "foreign", 40)
		c.createService(epService("web", web))
		foreign := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "web-custom", Labels: map[string]string{
				discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "someone-else"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"192.0.2.99"}}},
		}
		created, err := c.client.DiscoveryV1().EndpointSlices(c.ns).Create(context.Background(), foreign, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c.createPod(epPodSpec{name: "a", labels: web}, c.ip(0), true)
		c.waitEndpoints("web", map[string]epView{c.ip(0): readyAt(c.ip(0), "a", "node-a")})
		time.Sleep(1500 * time.Millisecond) // past the controllers' reaction to foreign slice changes
		got, err := c.client.DiscoveryV1().EndpointSlices(c.ns).Get(context.Background(), "web-custom", metav1.GetOptions{})
		if err != nil || got.ResourceVersion != created.ResourceVersion {
			t.Errorf("foreign slice changed or gone: err=%v resourceVersion %s -> %v", err, created.ResourceVersion, got)
		}
	})

	t.Run("controller sync durations are on /metrics", func(t *testing.T) {
		body, err := s.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{
			`svcplane_controller_sync_duration_seconds_count{controller="endpointslice",result="success"}`,
			`svcplane_controller_sync_duration_seconds_count{controller="endpoints",result="success"}`,
			`svcplane_controller_sync_duration_seconds_count{controller="endpointslicemirroring",result="success"}`,
			`endpoint_slice_controller_changes`,
		} {
			if !strings.Contains(string(body), name) {
				t.Errorf("/metrics lacks %s", name)
			}
		}
	})
}

func sliceRVs(slices []discoveryv1.EndpointSlice) map[string]string {
	out := map[string]string{}
	for _, s := range slices {
		out[s.Name] = s.ResourceVersion
	}
	return out
}

func changedObjects(before, after map[string]string) []string {
	var out []string
	for name, rv := range after {
		if before[name] != rv {
			out = append(out, name)
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			out = append(out, name+" (deleted)")
		}
	}
	sort.Strings(out)
	return out
}

// TestEndpointControllersRestartWritesNothing restarts the server (and with it the controllers,
// whose caches and trackers start empty) and checks that no slice or Endpoints object is written
// again merely because the controllers resynced.
func TestEndpointControllersRestartWritesNothing(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	ensureEPNodes(t, s.Client)
	c := newEPCluster(t, s, "restart", 50)
	web := map[string]string{"app": "web"}
	c.createService(epService("web", web))
	c.createPods("web", 250, 0, web, true)
	// A second later, so the last-change-trigger-time annotations written now differ from what a
	// restarted controller, knowing no history, would compute: rewriting them would be caught.
	time.Sleep(1100 * time.Millisecond)
	c.setStatus("web-3", c.ip(3), false)
	c.createService(epService("canary", map[string]string{"app": "canary"}))
	c.createService(epService("manual", nil))
	_, err := c.client.CoreV1().Endpoints(c.ns).Create(context.Background(), &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "manual"},
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "192.0.2.1"}},
			Ports: []corev1.EndpointPort{{Port: 80, Protocol: corev1.ProtocolTCP}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	epEventually(t, epConvergeTimeout, func() string {
		if n := len(epViews(c.slices("web", epManagedBySlices))); n != 250 {
			return fmt.Sprintf("%d endpoints in slices, want 250", n)
		}
		if n := len(c.slices("manual", epManagedByMirroring)); n != 1 {
			return fmt.Sprintf("%d mirrored slices, want 1", n)
		}
		if ready, notReady, _, err := c.endpointsView("web"); err != nil || len(ready) != 249 || len(notReady) != 1 {
			return fmt.Sprintf("Endpoints: %d ready, %d not ready (err=%v)", len(ready), len(notReady), err)
		}
		return ""
	})
	time.Sleep(2 * time.Second) // let any trailing write land before taking the snapshot

	snapshot := func() map[string]string {
		out := map[string]string{}
		sl, err := c.client.DiscoveryV1().EndpointSlices(c.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range sl.Items {
			out["slice/"+x.Name] = x.ResourceVersion
		}
		eps, err := c.client.CoreV1().Endpoints(c.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range eps.Items {
			out["endpoints/"+x.Name] = x.ResourceVersion
		}
		return out
	}
	before := snapshot()
	s.Restart(t)
	c.client = s.Client

	// A change made after the restart proves the controllers run and have worked through the
	// resync that started them; only the canary's objects may change.
	c.createPod(epPodSpec{name: "canary", labels: map[string]string{"app": "canary"}}, c.ip(300), true)
	epEventually(t, epConvergeTimeout, func() string {
		if n := len(epViews(c.slices("canary", epManagedBySlices))); n != 1 {
			return "canary not reflected yet"
		}
		return ""
	})
	time.Sleep(2 * time.Second)
	var spurious []string
	for _, name := range changedObjects(before, snapshot()) {
		if !strings.Contains(name, "canary") {
			spurious = append(spurious, name)
		}
	}
	if len(spurious) > 0 {
		t.Errorf("restart rewrote %v", spurious)
	}
}
