package e2e

// Addresses used here: the LoadBalancer pool 10.251.0.0/24 (as in the sandbox), small ranges of
// it for exhaustion, and 10.252.0.0/16 for pools a test creates. Only
// TestLoadBalancerReachableFromOutside sends traffic (ext has the pool on-link and ARPs); the
// others check the API (assignment, Events, validation).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/svcplane/svcplane/pkg/agent/announce"
	"github.com/svcplane/svcplane/pkg/etcd"
	"github.com/svcplane/svcplane/pkg/sandbox"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
	"github.com/svcplane/svcplane/test/testserver"
)

var lbPools = schema.GroupVersionResource{Group: "svcplane.io", Version: "v1", Resource: "loadbalancerippools"}

// lbService is a LoadBalancer Service manifest; extra is appended to its metadata (annotations)
// and spec is appended to its spec.
func lbService(name, metadata, spec string, port int) string {
	return fmt.Sprintf(`
apiVersion: v1
kind: Service
metadata:
  name: %s
%s
spec:
  type: LoadBalancer
  selector: {app: %s}
  ports: [{port: %d}]
%s
---`, name, indent(metadata), name, port, indent(spec))
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		out = append(out, "  "+line)
	}
	return strings.Join(out, "\n")
}

func applyManifest(t *testing.T, s *testserver.Server, manifest string, extra ...string) {
	t.Helper()
	out, stderr, err := s.KubectlWithInput(t, manifest, append([]string{"apply", "-f", "-"}, extra...)...)
	if err != nil {
		t.Fatalf("kubectl apply: %v\n%s%s", err, out, stderr)
	}
}

// waitExternalIP waits until `kubectl get svc` shows want in the EXTERNAL-IP column.
func waitExternalIP(t *testing.T, s *testserver.Server, name, want string) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		out, _, err := s.Kubectl(t, "get", "svc", name, "--no-headers")
		if err != nil {
			return false, nil
		}
		last = out
		fields := strings.Fields(out)
		return len(fields) >= 4 && fields[3] == want, nil
	})
	if err != nil {
		t.Fatalf("kubectl get svc %s: EXTERNAL-IP never became %s; last:\n%s", name, want, last)
	}
}

// waitEvent waits for an Event of the Service with the reason whose message contains want.
func waitEvent(t *testing.T, s *testserver.Server, name, reason, want string) {
	t.Helper()
	var seen []string
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		events, err := s.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return false, nil
		}
		seen = seen[:0]
		for _, e := range events.Items {
			seen = append(seen, e.Reason+": "+e.Message)
			if e.Reason == reason && strings.Contains(e.Message, want) && e.Source.Component == "loadbalancer-controller" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s Event on Service %s containing %q; saw %q", reason, name, want, seen)
	}
}

func ingressIPs(t *testing.T, s *testserver.Server, name string) []string {
	t.Helper()
	svc, err := s.Client.CoreV1().Services("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP)
	}
	return ips
}

// TestLoadBalancerServicesGetAddresses: a user applies LoadBalancer Services and sees their
// addresses in `kubectl get svc`, requested ones honoured, clashes explained by Events.
func TestLoadBalancerServicesGetAddresses(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Args: []string{"--lb-pool", "10.251.0.0/24"}})

	// The pool --lb-pool keeps, counted by the controller a moment after it is created.
	var out string
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		out, _, _ = s.Kubectl(t, "get", "loadbalancerippools")
		return strings.Contains(strings.Join(strings.Fields(out), " "), "default 10.251.0.0/24 0 254"), nil
	})
	if err != nil {
		t.Fatalf("kubectl get loadbalancerippools never showed the counted default pool:\n%s", out)
	}
	mustContain(t, "kubectl get loadbalancerippools", strings.Join(strings.Fields(out), " "), "NAME ADDRESSES ASSIGNED AVAILABLE AGE")

	applyManifest(t, s,
		lbService("web", "", "", 80)+
			lbService("fixed", "annotations: {svcplane.io/load-balancer-ips: 10.251.0.77}", "", 80)+
			lbService("legacy", "", "loadBalancerIP: 10.251.0.78", 80)+
			lbService("clash", "annotations: {svcplane.io/load-balancer-ips: 10.251.0.77}", "", 8080)+
			lbService("foreign", "", "loadBalancerClass: example.com/other", 80)+
			lbService("explicit", "", "loadBalancerClass: svcplane.io/lb", 80))

	// The first free address of the /24 (the network address is kept back).
	waitExternalIP(t, s, "web", "10.251.0.1")
	waitExternalIP(t, s, "fixed", "10.251.0.77")
	waitExternalIP(t, s, "legacy", "10.251.0.78")
	waitExternalIP(t, s, "explicit", "10.251.0.2")
	waitEvent(t, s, "web", "IPAllocated", "Assigned IP 10.251.0.1 from pool default")

	// A requested address in use stays pending, and describe says why.
	waitEvent(t, s, "clash", "AllocationFailed", "requested IP 10.251.0.77 is already in use by default/fixed")
	out, _, _ = s.Kubectl(t, "describe", "svc", "clash")
	mustContain(t, "kubectl describe svc clash", out, "AllocationFailed", "already in use by default/fixed")
	waitExternalIP(t, s, "clash", "<pending>")

	// Another class's Service is not ours: no address, no Event.
	time.Sleep(300 * time.Millisecond)
	waitExternalIP(t, s, "foreign", "<pending>")
	events, _ := s.Client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=foreign"})
	for _, e := range events.Items {
		if e.Source.Component == "loadbalancer-controller" {
			t.Errorf("the foreign-class Service got an Event from us: %s %s", e.Reason, e.Message)
		}
	}

	// The pool counts what is held.
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		out, _, _ = s.Kubectl(t, "get", "lbpool", "default", "--no-headers")
		return strings.Join(strings.Fields(out)[:4], " ") == "default 10.251.0.0/24 4 250", nil
	})
	if err != nil {
		t.Errorf("kubectl get lbpool default = %q, want 4 assigned and 250 available", out)
	}

	// Changing the type releases the address, which the next Service gets.
	if _, _, err := s.Kubectl(t, "patch", "svc", "web", "-p", `{"spec":{"type":"ClusterIP"}}`); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, s, "web", "IPReleased", "10.251.0.1")
	waitExternalIP(t, s, "web", "<none>")
	if ips := ingressIPs(t, s, "web"); len(ips) != 0 {
		t.Errorf("a ClusterIP Service kept load-balancer addresses %v", ips)
	}
	applyManifest(t, s, lbService("next", "", "", 80))
	waitExternalIP(t, s, "next", "10.251.0.1")

	// Deleting the holder of a requested address hands it to the Service waiting for it.
	if _, _, err := s.Kubectl(t, "delete", "svc", "fixed"); err != nil {
		t.Fatal(err)
	}
	waitExternalIP(t, s, "clash", "10.251.0.77")
}

// TestLoadBalancerSharedIP: Services share an address only with the same sharing key and
// distinct ports.
func TestLoadBalancerSharedIP(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Args: []string{"--lb-pool", "10.251.0.0/24"}})
	shared := func(key string) string {
		return fmt.Sprintf("annotations: {svcplane.io/allow-shared-ip: %s, svcplane.io/load-balancer-ips: 10.251.0.90}", key)
	}
	applyManifest(t, s, lbService("dns-tcp", shared("dns"), "", 53))
	waitExternalIP(t, s, "dns-tcp", "10.251.0.90")
	applyManifest(t, s, lbService("dns-web", shared("dns"), "", 80)+
		lbService("same-port", shared("dns"), "", 53)+
		lbService("other-key", shared("web"), "", 443))
	waitExternalIP(t, s, "dns-web", "10.251.0.90")
	waitEvent(t, s, "same-port", "AllocationFailed", "10.251.0.90 is already in use by default/dns-tcp")
	waitEvent(t, s, "other-key", "AllocationFailed", "10.251.0.90 is already in use by default/dns-")

	// A Service with the key and no request joins the shared address when its ports allow.
	applyManifest(t, s, lbService("joiner", "annotations: {svcplane.io/allow-shared-ip: dns}", "", 8443))
	waitExternalIP(t, s, "joiner", "10.251.0.90")
}

// TestLoadBalancerPoolExhaustion: with every address taken a Service stays pending with an Event
// naming the pool, and gets the first address that frees.
func TestLoadBalancerPoolExhaustion(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Args: []string{"--lb-pool", "10.251.0.10-10.251.0.11"}})
	applyManifest(t, s, lbService("a", "", "", 80)+lbService("b", "", "", 80))
	waitExternalIP(t, s, "a", "10.251.0.10")
	waitExternalIP(t, s, "b", "10.251.0.11")
	applyManifest(t, s, lbService("c", "", "", 80))
	waitEvent(t, s, "c", "AllocationFailed", `no available IPs in pool "default" for IPv4`)
	waitExternalIP(t, s, "c", "<pending>")

	start := time.Now()
	if _, _, err := s.Kubectl(t, "delete", "svc", "a"); err != nil {
		t.Fatal(err)
	}
	waitExternalIP(t, s, "c", "10.251.0.10")
	t.Logf("a pending Service got the freed address %v after the delete", time.Since(start).Round(time.Millisecond))

	// Growing the pool serves the next pending Service at once.
	applyManifest(t, s, lbService("d", "", "", 80))
	waitEvent(t, s, "d", "AllocationFailed", "no available IPs")
	if _, _, err := s.Kubectl(t, "patch", "lbpool", "default", "--type=merge", "-p", `{"spec":{"addresses":["10.251.0.10-10.251.0.12"]}}`); err != nil {
		t.Fatal(err)
	}
	waitExternalIP(t, s, "d", "10.251.0.12")
}

// TestLoadBalancerIPPoolValidation: bad pools answer 422 with the field and what to fix, and
// pools work with kubectl apply, server-side apply and selectors.
func TestLoadBalancerIPPoolValidation(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Args: []string{"--lb-pool", "10.251.0.0/24"}})
	dyn, err := dynamic.NewForConfig(s.RestConfig)
	if err != nil {
		t.Fatal(err)
	}
	pool := func(name string, addresses ...string) string {
		return fmt.Sprintf(`
apiVersion: svcplane.io/v1
kind: LoadBalancerIPPool
metadata: {name: %s}
spec:
  addresses: [%s]`, name, strings.Join(addresses, ", "))
	}
	for _, tc := range []struct {
		name, manifest, field, message string
	}{
		{"not a CIDR", pool("bad", `"10.252.0.0/33"`), "spec.addresses[0]", "must be a CIDR (e.g. 10.251.0.0/24) or a range"},
		{"host bits", pool("bad", `"10.252.0.1/24"`), "spec.addresses[0]", "must not have host bits set; did you mean 10.252.0.0/24?"},
		{"reversed range", pool("bad", `"10.252.0.9-10.252.0.1"`), "spec.addresses[0]", "first address must not be after its last"},
		{"mixed families", pool("bad", `"10.252.0.1-fd00::1"`), "spec.addresses[0]", "same IP family"},
		{"overlap inside", pool("bad", `"10.252.0.0/24"`, `"10.252.0.7-10.252.0.9"`), "spec.addresses[1]", "overlaps spec.addresses[0] (10.252.0.0/24)"},
		{"overlap with another pool", pool("bad", `"10.251.0.128/25"`), "spec.addresses[0]", `overlaps 10.251.0.0/24 of LoadBalancerIPPool "default"`},
		{"empty", pool("bad"), "spec.addresses", "Required value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := decodeManifest(t, tc.manifest)
			_, err := dyn.Resource(lbPools).Create(context.Background(), obj, metav1.CreateOptions{})
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want 422 Invalid, got %v", err)
			}
			causes := err.(apierrors.APIStatus).Status().Details.Causes
			if len(causes) != 1 || causes[0].Field != tc.field || !strings.Contains(causes[0].Message, tc.message) {
				t.Fatalf("causes = %+v, want %s: …%s…", causes, tc.field, tc.message)
			}
			_, stderr, err := s.KubectlWithInput(t, tc.manifest, "apply", "-f", "-")
			if err == nil || !strings.Contains(stderr, tc.field) {
				t.Errorf("kubectl apply: %v %s; want it refused naming %s", err, stderr, tc.field)
			}
		})
	}
	if _, err := dyn.Resource(lbPools).Get(context.Background(), "bad", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a refused pool was stored: %v", err)
	}

	// Client-side and server-side apply of a valid pool; a pool selecting Services by label
	// serves only those.
	team := pool("team", `"10.252.1.0/28"`, `"fd00:252::10-fd00:252::20"`) + `
  serviceSelector: {matchLabels: {team: blue}}`
	applyManifest(t, s, team)
	applyManifest(t, s, team, "--server-side")
	applyManifest(t, s, `
apiVersion: v1
kind: Service
metadata: {name: blue, labels: {team: blue}, annotations: {svcplane.io/load-balancer-ips: 10.252.1.5}}
spec:
  type: LoadBalancer
  ports: [{port: 80}]
---`+lbService("red", "annotations: {svcplane.io/load-balancer-ips: 10.252.1.6}", "", 80), "--server-side")
	waitExternalIP(t, s, "blue", "10.252.1.5")
	waitEvent(t, s, "red", "AllocationFailed", "requested IP 10.252.1.6 is not in any LoadBalancerIPPool that selects this Service")

	// The counts of a mixed-family pool: 14 IPv4 addresses of the /28 and the 17 of the range.
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := dyn.Resource(lbPools).Get(ctx, "team", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		assigned, _, _ := unstructuredInt(got.Object, "status", "assigned")
		available, _, _ := unstructuredInt(got.Object, "status", "available")
		return assigned == 1 && available == 30, nil
	})
	if err != nil {
		t.Errorf("pool team's status never counted 1 assigned and 30 available")
	}
}

func unstructuredInt(obj map[string]any, fields ...string) (int64, bool, error) {
	var cur any = obj
	for _, f := range fields {
		m, ok := cur.(map[string]any)
		if !ok {
			return 0, false, nil
		}
		cur = m[f]
	}
	switch v := cur.(type) {
	case int64:
		return v, true, nil
	case float64:
		return int64(v), true, nil
	}
	return 0, false, nil
}

// TestLoadBalancerRestartKeepsAssignments: after a restart (graceful, then a crash) every Service
// keeps its address, and a freed one is handed out again.
func TestLoadBalancerRestartKeepsAssignments(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Args: []string{"--lb-pool", "10.251.0.0/24"}})
	var manifest string
	for i := range 6 {
		manifest += lbService(fmt.Sprintf("s%d", i), "", "", 80)
	}
	applyManifest(t, s, manifest)
	before := map[string][]string{}
	for i := range 6 {
		name := fmt.Sprintf("s%d", i)
		err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return len(ingressIPs(t, s, name)) == 1, nil
		})
		if err != nil {
			t.Fatalf("Service %s got no address", name)
		}
		before[name] = ingressIPs(t, s, name)
	}
	// Free the lowest address, so that a reshuffle at start would be visible.
	var lowest string
	for name, ips := range before {
		if ips[0] == "10.251.0.1" {
			lowest = name
		}
	}
	if _, _, err := s.Kubectl(t, "delete", "svc", lowest); err != nil {
		t.Fatal(err)
	}
	delete(before, lowest)

	for _, restart := range []struct {
		name string
		do   func()
	}{
		{"graceful", func() { s.Restart(t) }},
		{"crash", func() { s.Kill(t); s.Restart(t) }},
	} {
		restart.do()
		time.Sleep(500 * time.Millisecond) // the controller's first pass
		for name, want := range before {
			if got := ingressIPs(t, s, name); !slices.Equal(got, want) {
				t.Errorf("after a %s restart %s has %v, had %v", restart.name, name, got, want)
			}
		}
	}
	applyManifest(t, s, lbService("late", "", "", 80))
	waitExternalIP(t, s, "late", "10.251.0.1")
	for name := range before {
		events, _ := s.Client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		for _, e := range events.Items {
			if e.Reason == "IPReleased" {
				t.Errorf("%s released an address across restarts: %s", name, e.Message)
			}
		}
	}
}

// TestLoadBalancerTwoServersNeverShareAnAddress: two API servers on one etcd both run the
// controller (their loopback addresses are never published in the kubernetes Endpoints, so both
// act: the worst case). Services created through both at once end with distinct addresses.
func TestLoadBalancerTwoServersNeverShareAnAddress(t *testing.T) {
	dir, err := os.MkdirTemp("", "svcp-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := etcd.Start(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	args := []string{"--etcd-servers", store.Endpoint, "--lb-pool", "10.251.0.0/24"}
	servers := []*testserver.Server{testserver.Start(t, testserver.Options{Args: args}), testserver.Start(t, testserver.Options{Args: args})}

	const n = 24
	errs := make(chan error, n)
	for i := range n {
		go func() {
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("lb%02d", i)},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "x"},
					Ports: []corev1.ServicePort{{Port: 80}}},
			}
			_, err := servers[i%2].Client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Settled: every Service has one address, no two the same, unchanged for a second.
	var last, stableSince = "", time.Now()
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := servers[0].Client.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		seen := map[string]string{}
		var state []string
		for _, svc := range list.Items {
			if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
				continue
			}
			if len(svc.Status.LoadBalancer.Ingress) != 1 {
				return false, nil
			}
			ip := svc.Status.LoadBalancer.Ingress[0].IP
			if other, dup := seen[ip]; dup {
				t.Logf("%s and %s both hold %s (settling)", other, svc.Name, ip)
				return false, nil
			}
			seen[ip] = svc.Name
			state = append(state, svc.Name+"="+ip)
		}
		if now := strings.Join(state, ","); now != last {
			last, stableSince = now, time.Now()
		}
		return len(seen) == n && time.Since(stableSince) > time.Second, nil
	})
	if err != nil {
		t.Fatalf("the two controllers never settled on distinct addresses; last state %s", last)
	}
}

// TestLoadBalancerReachableFromOutside: in the sandbox (which passes --lb-pool 10.251.0.0/24),
// the outside client reaches a LoadBalancer Service at its assigned address. ext has no route
// via a node, only the pool on-link: it ARPs, and the one node announcing the address answers
// (checked: exactly one answer per address). Logs the time from create to the first answer.
// Then loadBalancerSourceRanges let ext in, shut it out (its NodePort still open), and let it in
// again.
func TestLoadBalancerReachableFromOutside(t *testing.T) {
	c := upWithAgents(t, 2)
	ctx := context.Background()
	for _, name := range []string{"web-1", "web-2"} {
		c.create(t, testServerPod(name))
	}
	for _, name := range []string{"web-1", "web-2"} {
		c.waitPod(t, name, "ready", isReady)
	}
	var latencies []time.Duration
	for i := range 5 {
		start := time.Now()
		svc, err := c.client.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("lb%d", i)},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var ip string
		for deadline := time.Now().Add(10 * time.Second); ip == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			got, err := c.client.CoreV1().Services("default").Get(ctx, svc.Name, metav1.GetOptions{})
			if err == nil && len(got.Status.LoadBalancer.Ingress) > 0 {
				ip = got.Status.LoadBalancer.Ingress[0].IP
			}
		}
		if want := fmt.Sprintf("10.251.0.%d", i+1); ip != want {
			t.Fatalf("Service %s got load-balancer address %q, want %s", svc.Name, ip, want)
		}
		var answered string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if answered = hostnameFromOutside(c, ip); strings.HasPrefix(answered, "web-") {
				break
			}
		}
		if !strings.HasPrefix(answered, "web-") {
			t.Fatalf("ext never reached %s at %s; last answer %q", svc.Name, ip, answered)
		}
		latencies = append(latencies, time.Since(start))
	}
	for i := range 5 {
		ip := netip.MustParseAddr(fmt.Sprintf("10.251.0.%d", i+1))
		var answers []net.HardwareAddr
		err := topology.Do(topology.NamespaceName(c.name, topology.MemberExternal), func() error {
			var err error
			answers, err = announce.Query(ctx, topology.UplinkName, topology.ExternalAddr, ip, 300*time.Millisecond)
			return err
		})
		if err != nil {
			t.Fatalf("ARP query for %s from ext: %v", ip, err)
		}
		if len(answers) != 1 {
			t.Errorf("ARP for %s from ext: %d answers %v, want exactly one node", ip, len(answers), answers)
		}
	}
	slices.Sort(latencies)
	t.Logf("create → first answer from ext: median %v, all %v", latencies[len(latencies)/2].Round(time.Millisecond), latencies)

	// loadBalancerSourceRanges: ext (10.250.0.200) is let in by a range naming it and shut
	// out by one that does not; the NodePort stays open to it, as upstream.
	setRanges := func(ranges ...string) *corev1.Service {
		t.Helper()
		svc, err := c.client.CoreV1().Services("default").Get(ctx, "lb0", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Spec.LoadBalancerSourceRanges = ranges
		if svc, err = c.client.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return svc
	}
	// reachable polls until ext's answers match want, then checks they keep matching.
	reachable := func(what, addr string, want bool) {
		t.Helper()
		ok := func() bool { return strings.HasPrefix(hostnameFromOutsideAt(c, addr), "web-") == want }
		deadline := time.Now().Add(10 * time.Second)
		for !ok() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		for range 5 {
			if !ok() {
				t.Fatalf("%s: ext reaching %s: want reachable=%v", what, addr, want)
			}
		}
	}
	setRanges(topology.ExternalAddr.String() + "/32")
	reachable("allowed range", "10.251.0.1:80", true)
	svc := setRanges("10.250.0.201/32")
	reachable("denied range", "10.251.0.1:80", false)
	nodePort := fmt.Sprintf("%s:%d", topology.NodeAddr(1), svc.Spec.Ports[0].NodePort)
	reachable("denied range, NodePort", nodePort, true)
	setRanges()
	reachable("ranges removed", "10.251.0.1:80", true)
}

// hostnameFromOutside asks the test server behind ip:80 for its name from ext; "" when it does
// not answer (yet). The dial gives up after 100 ms: a SYN sent before the proxy knows the address
// is dropped and would only be retransmitted after a second, which would measure TCP's
// back-off rather than how soon the address works.
func hostnameFromOutside(c *agentCluster, ip string) string {
	return hostnameFromOutsideAt(c, net.JoinHostPort(ip, "80"))
}

// hostnameFromOutsideAt is hostnameFromOutside for any address and port.
func hostnameFromOutsideAt(c *agentCluster, addr string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	conn, err := topology.Dial(ctx, topology.NamespaceName(c.name, topology.MemberExternal), "tcp", addr)
	if err != nil {
		return ""
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := fmt.Fprintf(conn, "GET /hostname HTTP/1.0\r\nHost: %s\r\n\r\n", addr); err != nil {
		return ""
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(body))
}

// TestLoadBalancerFailsOverWhenTheAnnouncingAgentStops: ext reaches a LoadBalancer Service
// through the one node announcing its address; that node's agent stops (SIGTERM, then after a
// restart SIGKILL) and ext reaches the address again through the other node within the issue's
// 2 s, its neighbour cache moved by the new node's gratuitous ARP; the restarted agent takes
// its address back. In the userspace proxy mode the stopped node can serve nothing any more
// (its proxy ran in the agent), and the mode makes Service addresses local to every node, so
// the check that exactly one node answers ARP covers the kernel's own answers too.
func TestLoadBalancerFailsOverWhenTheAnnouncingAgentStops(t *testing.T) {
	for _, mode := range []string{"userspace", "nftables"} {
		t.Run(mode, func(t *testing.T) { testFailOver(t, mode) })
	}
}

// failOverDeadline is the bar: another node announces within 2 s.
const failOverDeadline = 2 * time.Second

func testFailOver(t *testing.T, proxyMode string) {
	c := upWithAgentsAndProxy(t, 2, proxyMode)
	ctx := context.Background()
	for _, name := range []string{"web-1", "web-2"} {
		c.create(t, testServerPod(name))
	}
	for _, name := range []string{"web-1", "web-2"} {
		c.waitPod(t, name, "ready", isReady)
	}
	if _, err := c.client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "lb"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("10.251.0.1")
	reached := func() bool { return strings.HasPrefix(hostnameFromOutside(c, ip.String()), "web-") }
	waitFor(t, 20*time.Second, "ext reaches "+ip.String(), reached)

	macs := map[string]string{}
	nodeOfMAC := map[string]string{}
	for n := 1; n <= 2; n++ {
		member := topology.NodeMember(n)
		macs[member] = uplinkMAC(t, c, member)
		nodeOfMAC[macs[member]] = member
	}
	// announcer is the one node answering ext's ARP for ip.
	announcer := func() string {
		t.Helper()
		var answers []net.HardwareAddr
		err := topology.Do(topology.NamespaceName(c.name, topology.MemberExternal), func() error {
			var err error
			answers, err = announce.Query(ctx, topology.UplinkName, topology.ExternalAddr, ip, 300*time.Millisecond)
			return err
		})
		if err != nil {
			t.Fatalf("ARP query for %s from ext: %v", ip, err)
		}
		if len(answers) != 1 {
			t.Fatalf("ARP for %s from ext: answers %v, want exactly one node (node MACs %v)", ip, answers, macs)
		}
		return nodeOfMAC[answers[0].String()]
	}

	// The node every agent chooses once both announce; until the later one has started, the
	// other one holds the address.
	svc, err := c.client.CoreV1().Services("default").Get(ctx, "lb", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	owner := announce.Assignments(announce.State{Services: []*corev1.Service{svc}, ReadyNodes: []string{"node1", "node2"}})[ip]
	waitFor(t, 10*time.Second, owner+", the chosen node, announces "+ip.String(), func() bool {
		return extNeighbour(t, c, ip) == macs[owner] && reached()
	})
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if got := announcer(); got != owner {
			t.Fatalf("%s answers ARP for %s, want the chosen %s", got, ip, owner)
		}
		other := map[string]string{"node1": "node2", "node2": "node1"}[owner]
		if n := extNeighbour(t, c, ip); n != macs[owner] {
			t.Fatalf("ext caches %s for %s, want the announcing %s's %s", n, ip, owner, macs[owner])
		}
		args := agentArgv(t, c, owner)
		load := loadAverage()
		stopped := time.Now()
		signalAgent(t, c, owner, sig)
		// Back when ext's cache names the other node (its gratuitous ARP) and a connection
		// through it works; probes are retried within the deadline.
		var moved time.Duration
		for time.Since(stopped) < 5*time.Second {
			if extNeighbour(t, c, ip) == macs[other] && reached() {
				moved = time.Since(stopped)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if moved == 0 {
			t.Fatalf("%s to %s's agent: ext still caches %q for %s and reached=%v 5 s later; want %s's %s",
				signalName[sig], owner, extNeighbour(t, c, ip), ip, reached(), other, macs[other])
		}
		t.Logf("%s mode, %s to the announcing %s's agent: ext reaches %s through %s %v later (load %s)",
			proxyMode, signalName[sig], owner, ip, other, moved.Round(time.Millisecond), load)
		if moved > failOverDeadline {
			t.Errorf("fail-over after %s took %v, want under %v", signalName[sig], moved.Round(time.Millisecond), failOverDeadline)
		}
		if got := announcer(); got != other {
			t.Errorf("after %s to %s: %s answers ARP, want %s", signalName[sig], owner, got, other)
		}
		keepsWorking(t, c, ip, 2*time.Second)

		// The restarted agent wins its address back (the choice is deterministic) once it
		// has listened for its peers; ext follows it.
		restarted := time.Now()
		restartAgent(t, c, owner, args)
		waitFor(t, 30*time.Second, owner+" announces again after its restart", func() bool {
			return extNeighbour(t, c, ip) == macs[owner] && reached()
		})
		t.Logf("%s restarted: it announces %s again %v after its start", owner, ip, time.Since(restarted).Round(time.Millisecond))
		if got := announcer(); got != owner {
			t.Errorf("after the restart %s answers ARP, want %s", got, owner)
		}
		keepsWorking(t, c, ip, time.Second)
	}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", within, what)
		}
	}
}

// keepsWorking checks that ext keeps reaching ip for d; each probe may be retried 4 times, so
// that a SYN lost to a loaded machine does not count as an outage.
func keepsWorking(t *testing.T, c *agentCluster, ip netip.Addr, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		ok := false
		for range 5 {
			if ok = strings.HasPrefix(hostnameFromOutside(c, ip.String()), "web-"); ok {
				break
			}
		}
		if !ok {
			t.Fatalf("ext stopped reaching %s", ip)
		}
	}
}

func uplinkMAC(t *testing.T, c *agentCluster, member string) string {
	t.Helper()
	var mac string
	err := topology.Do(topology.NamespaceName(c.name, member), func() error {
		iface, err := net.InterfaceByName(topology.UplinkName)
		if err == nil {
			mac = iface.HardwareAddr.String()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// extNeighbour is the MAC ext's kernel has cached for ip ("" when none).
func extNeighbour(t *testing.T, c *agentCluster, ip netip.Addr) string {
	t.Helper()
	var mac string
	err := topology.Do(topology.NamespaceName(c.name, topology.MemberExternal), func() error {
		neighs, err := netlink.NeighList(0, netlink.FAMILY_V4)
		for _, n := range neighs {
			if n.IP.Equal(ip.AsSlice()) && n.HardwareAddr != nil && n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
				mac = n.HardwareAddr.String()
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

func agentProcess(t *testing.T, c *agentCluster, member string) *sandbox.Process {
	t.Helper()
	for i, p := range c.state.Processes {
		if p.Role == "agent" && p.Member == member {
			return &c.state.Processes[i]
		}
	}
	t.Fatalf("no agent process recorded for %s", member)
	return nil
}

// agentArgv is the running agent's command line (/proc shows the agent's own argv: `ip netns
// exec` execs it).
func agentArgv(t *testing.T, c *agentCluster, member string) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", agentProcess(t, c, member).PID))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// signalAgent sends sig to member's agent alone (its Pods keep running, as on a kubelet
// restart) and waits until it has exited.
func signalAgent(t *testing.T, c *agentCluster, member string, sig syscall.Signal) {
	t.Helper()
	pid := agentProcess(t, c, member).PID
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatal(err)
	}
	// Whoever started it (sandbox.Up or restartAgent) waits for it, so it is reaped.
	waitFor(t, 10*time.Second, fmt.Sprintf("%s's agent (pid %d) exits", member, pid), func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
}

// restartAgent starts member's agent again with args, inside the node's namespace (never the
// host's), logging where the first one did; the sandbox's down kills it with the namespace.
func restartAgent(t *testing.T, c *agentCluster, member string, args []string) {
	t.Helper()
	proc := agentProcess(t, c, member)
	cmd := topology.Command(context.Background(), topology.NamespaceName(c.name, member), args[0], args[1:]...)
	logFile, err := os.OpenFile(proc.Log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	proc.PID = cmd.Process.Pid
}

// loadAverage is the 1-minute load average, logged next to timings.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

var signalName = map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGKILL: "SIGKILL"}
