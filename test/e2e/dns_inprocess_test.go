package e2e

// Addresses used here: the DNS server and the fake upstream listen on 127.0.0.1 ports only; the
// Service gets a ClusterIP from 10.96.0.0/12 and the endpoint 10.244.7.7 is only published.

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcplane/svcplane/test/testserver"
)

// TestDNSEmbeddedReadsTheServersStorageInProcess: the DNS server inside `svcplane server`
// answers for new Services and endpoints while no watch of Services, EndpointSlices or Pods is
// open on the API — it lists and watches the server's watch caches in-process — as the API
// server's own /metrics show (apiserver_longrunning_requests counts the open watches).
func TestDNSEmbeddedReadsTheServersStorageInProcess(t *testing.T) {
	// Verified pod records make the DNS server watch Pods too.
	c := startDNSCluster(t, "--dns-pod-records", "verified")
	client := c.srv.Client
	mustCreate(t, client.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: dnsTestNS}})

	svc := mustCreate(t, client.CoreV1().Services(dnsTestNS).Create, service("inproc", nil))
	c.eventually(t, "new Service", "inproc.dnstest.svc.cluster.local", "A", func(r digResult) bool {
		return slices.Equal(r.answer, []string{"A " + svc.Spec.ClusterIP})
	})
	mustCreate(t, client.CoreV1().Services(dnsTestNS).Create, service("inproc-hl", func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }))
	mustCreate(t, client.DiscoveryV1().EndpointSlices(dnsTestNS).Create,
		endpointSlice("inproc-hl-1", "inproc-hl", discoveryv1.AddressTypeIPv4, nil, testEndpoint{addr: "10.244.7.7", ready: true}))
	c.eventually(t, "new endpoint", "inproc-hl.dnstest.svc.cluster.local", "A", func(r digResult) bool {
		return slices.Equal(r.answer, []string{"A 10.244.7.7"})
	})
	// NXDOMAIN (not SERVFAIL) means every kind, Pods included, has been listed.
	if got := dig(t, c.port, "missing.dnstest.svc.cluster.local", "A"); got.status != "NXDOMAIN" {
		t.Fatalf("missing name: %+v", got)
	}

	watches := openWatches(t, c.srv)
	for _, resource := range []string{"services", "endpointslices", "pods"} {
		if n := watches[resource]; n != 0 {
			t.Errorf("%d watch(es) of %s open on the API, want 0: the DNS server should read them in-process", n, resource)
		}
	}
	// Admission's namespace informer watches over the loopback client; the DNS server does not.
	if n := watches["namespaces"]; n > 1 {
		t.Errorf("%d watches of namespaces open on the API, want at most admission's one", n)
	}
}

// openWatches reads apiserver_longrunning_requests from the server's /metrics: the WATCH
// requests open now, per resource.
func openWatches(t *testing.T, srv *testserver.Server) map[string]int {
	t.Helper()
	body, err := srv.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "apiserver_longrunning_requests{") || !strings.Contains(line, `verb="WATCH"`) {
			continue
		}
		labels, value, ok := strings.Cut(strings.TrimPrefix(line, "apiserver_longrunning_requests{"), "} ")
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		for _, label := range strings.Split(labels, ",") {
			if resource, ok := strings.CutPrefix(label, `resource="`); ok {
				out[strings.TrimSuffix(resource, `"`)] += int(n)
			}
		}
	}
	return out
}
