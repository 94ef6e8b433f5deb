package e2e

// Addresses used here: the DNS server and the fake upstream listen on 127.0.0.1 ports only.
// Service ClusterIPs come from the default range 10.96.0.0/12 (kube-dns at 10.96.0.10); endpoint
// addresses 10.244.x.y and fd00::/64 are never contacted, only published.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/svcplane/svcplane/test/testserver"
)

const dnsTestNS = "dnstest"

// digResult is what dig printed, reduced to what the specification talks about.
type digResult struct {
	status     string
	flags      []string
	answer     []string // "TYPE RDATA", sorted
	authority  []string // record types only
	additional []string
}

// dig runs the real dig against the server; extra are dig options such as +tcp.
func dig(t *testing.T, port int, name, qtype string, extra ...string) digResult {
	t.Helper()
	args := append([]string{"@127.0.0.1", "-p", strconv.Itoa(port), "+time=3", "+tries=1", "+nocookie",
		"+noall", "+comments", "+answer", "+authority", "+additional", name, qtype}, extra...)
	out, err := exec.Command("dig", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s %s: %v\n%s", name, qtype, err, out)
	}
	return parseDig(string(out))
}

func parseDig(out string) digResult {
	var r digResult
	section := ""
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.Contains(line, "status: "):
			s := line[strings.Index(line, "status: ")+len("status: "):]
			r.status = strings.TrimSuffix(strings.Fields(s)[0], ",")
		case strings.HasPrefix(line, ";; flags: "):
			f := strings.TrimPrefix(line, ";; flags: ")
			r.flags = strings.Fields(f[:strings.Index(f, ";")])
		case strings.HasPrefix(line, ";; ") && strings.HasSuffix(line, " SECTION:"):
			section = strings.Fields(line)[1]
		case line == "" || strings.HasPrefix(line, ";"):
		default:
			fields := strings.Fields(line)
			if len(fields) < 4 {
				continue
			}
			rr := strings.Join(append([]string{fields[3]}, fields[4:]...), " ")
			switch section {
			case "ANSWER":
				r.answer = append(r.answer, rr)
			case "AUTHORITY":
				r.authority = append(r.authority, fields[3])
			case "ADDITIONAL":
				r.additional = append(r.additional, rr)
			}
		}
	}
	slices.Sort(r.answer)
	slices.Sort(r.additional)
	return r
}

// freeLoopbackPort finds a port free for both UDP and TCP on 127.0.0.1.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free loopback port for UDP and TCP")
	return 0
}

// fakeUpstream answers every A question with 192.0.2.1 (TTL 60) and counts the questions.
type fakeUpstream struct {
	addr    string
	queries atomic.Int32
	server  *dns.Server
}

func startFakeUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &fakeUpstream{addr: pc.LocalAddr().String()}
	u.server = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		u.queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(req)
		if req.Question[0].Qtype == dns.TypeA && strings.HasSuffix(req.Question[0].Name, "example.test.") {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.1")})
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go u.server.ActivateAndServe()
	t.Cleanup(func() { u.server.Shutdown() })
	return u
}

type dnsCluster struct {
	srv        *testserver.Server
	port       int
	healthPort int
	upstream   *fakeUpstream
}

// startDNSCluster starts a server whose DNS server listens on loopback and forwards to a fake
// upstream; extraArgs are more `svcplane server` flags.
func startDNSCluster(t *testing.T, extraArgs ...string) *dnsCluster {
	t.Helper()
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("dig not installed (Debian package dnsutils)")
	}
	c := &dnsCluster{port: freeLoopbackPort(t), healthPort: freeLoopbackPort(t), upstream: startFakeUpstream(t)}
	c.srv = testserver.Start(t, testserver.Options{Args: append([]string{
		"--dns-listen", fmt.Sprintf("127.0.0.1:%d", c.port),
		"--dns-upstream", c.upstream.addr,
		"--dns-health-listen", fmt.Sprintf("127.0.0.1:%d", c.healthPort),
	}, extraArgs...)})
	c.waitReady(t)
	return c
}

func (c *dnsCluster) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", c.healthPort))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("DNS server never became ready")
}

// eventually polls dig until check passes; the bound is far above the 100 ms target so a loaded
// CI machine does not flake — the latency itself is measured by bench/dns.
func (c *dnsCluster) eventually(t *testing.T, what, name, qtype string, check func(digResult) bool) {
	t.Helper()
	var last digResult
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if last = dig(t, c.port, name, qtype); check(last) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: %s %s never matched; last answer %+v", what, name, qtype, last)
}

func mustCreate[T any](t *testing.T, create func(context.Context, T, metav1.CreateOptions) (T, error), obj T) T {
	t.Helper()
	out, err := create(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating %T: %v", obj, err)
	}
	return out
}

func service(name string, mutate func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: dnsTestNS},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if mutate != nil {
		mutate(s)
	}
	return s
}

type testEndpoint struct {
	addr     string
	hostname string
	ready    bool
}

// endpointSlice is hand-made: managed-by names no controller, so the endpointslice controller
// leaves it alone whatever state it is in.
func endpointSlice(name, svc string, family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...testEndpoint) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: dnsTestNS, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc,
			discoveryv1.LabelManagedBy:   "e2e-test",
		}},
		AddressType: family,
		Ports:       ports,
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(e.ready)}}
		if e.hostname != "" {
			ep.Hostname = ptr(e.hostname)
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

func tcpPort(name string, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Port: ptr(port), Protocol: ptr(corev1.ProtocolTCP)}
}

// createDNSFixture creates one Service of every kind the specification covers and returns the
// ClusterIP of "web".
func createDNSFixture(t *testing.T, client kubernetes.Interface) (webIP string) {
	t.Helper()
	mustCreate(t, client.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: dnsTestNS}})
	svcs := client.CoreV1().Services(dnsTestNS)
	slicesAPI := client.DiscoveryV1().EndpointSlices(dnsTestNS)
	web := mustCreate(t, svcs.Create, service("web", func(s *corev1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "syslog", Port: 514, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(514)})
	}))
	mustCreate(t, slicesAPI.Create, endpointSlice("web-1", "web", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("http", 8080)},
		testEndpoint{addr: "10.244.1.5", ready: true}))
	mustCreate(t, svcs.Create, service("plain", func(s *corev1.Service) { s.Spec.Ports[0].Name = "" }))

	headless := func(s *corev1.Service) {
		s.Spec.ClusterIP = corev1.ClusterIPNone
		s.Spec.Ports = []corev1.ServicePort{{Name: "pg", Port: 5432, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(5432)}}
	}
	mustCreate(t, svcs.Create, service("db", headless))
	mustCreate(t, slicesAPI.Create, endpointSlice("db-1", "db", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{tcpPort("pg", 5432)},
		testEndpoint{addr: "10.244.1.10", hostname: "db-0", ready: true},
		testEndpoint{addr: "10.244.1.11", ready: true},
		testEndpoint{addr: "10.244.1.12", hostname: "db-2", ready: false}))
	mustCreate(t, slicesAPI.Create, endpointSlice("db-2", "db", discoveryv1.AddressTypeIPv6, []discoveryv1.EndpointPort{tcpPort("pg", 5432)},
		testEndpoint{addr: "fd00::10", hostname: "db-0", ready: true}))
	mustCreate(t, svcs.Create, service("empty", headless))
	mustCreate(t, svcs.Create, service("notready", headless))
	mustCreate(t, slicesAPI.Create, endpointSlice("notready-1", "notready", discoveryv1.AddressTypeIPv4, nil,
		testEndpoint{addr: "10.244.2.1", ready: false}))
	mustCreate(t, svcs.Create, service("publish", func(s *corev1.Service) { headless(s); s.Spec.PublishNotReadyAddresses = true }))
	mustCreate(t, slicesAPI.Create, endpointSlice("publish-1", "publish", discoveryv1.AddressTypeIPv4, nil,
		testEndpoint{addr: "10.244.2.2", ready: false}))
	mustCreate(t, svcs.Create, service("ext", func(s *corev1.Service) {
		s.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "www.example.org"}
	}))
	var many []testEndpoint
	for i := range 100 {
		many = append(many, testEndpoint{addr: fmt.Sprintf("10.244.3.%d", i+1), ready: true})
	}
	mustCreate(t, svcs.Create, service("many", headless))
	mustCreate(t, slicesAPI.Create, endpointSlice("many-1", "many", discoveryv1.AddressTypeIPv4, nil, many...))
	return web.Spec.ClusterIP
}

func reverseName(ip string) string {
	name, err := dns.ReverseAddr(ip)
	if err != nil {
		panic(err)
	}
	return name
}

// TestDNSAnswersEveryRecordKindOfTheSpecification runs dig for every record kind of the
// Kubernetes DNS specification (schema 1.1.0) and every negative case, against the real DNS
// server fed by the real API server.
func TestDNSAnswersEveryRecordKindOfTheSpecification(t *testing.T) {
	c := startDNSCluster(t)
	webIP := createDNSFixture(t, c.srv.Client)
	// The last object created is visible once this answers.
	c.eventually(t, "fixture", "many.dnstest.svc.cluster.local", "A", func(r digResult) bool { return len(r.answer) == 100 })

	const z = ".cluster.local"
	soa := []string{"SOA"}
	cases := []struct {
		rule      string
		name      string
		qtype     string
		status    string
		answer    []string
		authority []string
	}{
		{rule: "2.2 schema version", name: "dns-version" + z, qtype: "TXT", status: "NOERROR", answer: []string{`TXT "1.1.0"`}},
		{rule: "2.3.1 A of a ClusterIP Service", name: "web.dnstest.svc" + z, qtype: "A", status: "NOERROR", answer: []string{"A " + webIP}},
		{rule: "2.3.1 query names are case-insensitive", name: "WEB.DnsTest.SVC.Cluster.Local", qtype: "A", status: "NOERROR", answer: []string{"A " + webIP}},
		{rule: "2.3.1 AAAA of an IPv4-only Service is NODATA", name: "web.dnstest.svc" + z, qtype: "AAAA", status: "NOERROR", authority: soa},
		{rule: "2.3.2 SRV of a named port", name: "_http._tcp.web.dnstest.svc" + z, qtype: "SRV", status: "NOERROR",
			answer: []string{"SRV 0 100 80 web.dnstest.svc.cluster.local."}},
		{rule: "2.3.2 SRV of a UDP port", name: "_syslog._udp.web.dnstest.svc" + z, qtype: "SRV", status: "NOERROR",
			answer: []string{"SRV 0 100 514 web.dnstest.svc.cluster.local."}},
		{rule: "2.3.2 SRV with the wrong protocol does not exist", name: "_http._udp.web.dnstest.svc" + z, qtype: "SRV", status: "NXDOMAIN", authority: soa},
		{rule: "2.3.2 SRV of an unknown port does not exist", name: "_nope._tcp.web.dnstest.svc" + z, qtype: "SRV", status: "NXDOMAIN", authority: soa},
		{rule: "2.3.2 A at an SRV name is NODATA", name: "_http._tcp.web.dnstest.svc" + z, qtype: "A", status: "NOERROR", authority: soa},
		{rule: "2.3.2 unnamed ports have no SRV", name: "_._tcp.plain.dnstest.svc" + z, qtype: "SRV", status: "NXDOMAIN", authority: soa},
		{rule: "2.3.3 PTR of a ClusterIP", name: reverseName(webIP), qtype: "PTR", status: "NOERROR", answer: []string{"PTR web.dnstest.svc.cluster.local."}},
		{rule: "2.3.3 PTR of the kube-dns ClusterIP", name: reverseName("10.96.0.10"), qtype: "PTR", status: "NOERROR", answer: []string{"PTR kube-dns.kube-system.svc.cluster.local."}},
		{rule: "2.4.1 A of a headless Service: its ready endpoints", name: "db.dnstest.svc" + z, qtype: "A", status: "NOERROR",
			answer: []string{"A 10.244.1.10", "A 10.244.1.11"}},
		{rule: "2.4.1 AAAA of a headless Service", name: "db.dnstest.svc" + z, qtype: "AAAA", status: "NOERROR", answer: []string{"AAAA fd00::10"}},
		{rule: "2.4.1 headless Service without endpoints is NXDOMAIN", name: "empty.dnstest.svc" + z, qtype: "A", status: "NXDOMAIN", authority: soa},
		{rule: "2.4.1 headless Service without ready endpoints is NXDOMAIN", name: "notready.dnstest.svc" + z, qtype: "A", status: "NXDOMAIN", authority: soa},
		{rule: "2.4.1 publishNotReadyAddresses publishes not-ready endpoints", name: "publish.dnstest.svc" + z, qtype: "A", status: "NOERROR", answer: []string{"A 10.244.2.2"}},
		{rule: "2.4.1 A of an endpoint hostname", name: "db-0.db.dnstest.svc" + z, qtype: "A", status: "NOERROR", answer: []string{"A 10.244.1.10"}},
		{rule: "2.4.1 AAAA of an endpoint hostname", name: "db-0.db.dnstest.svc" + z, qtype: "AAAA", status: "NOERROR", answer: []string{"AAAA fd00::10"}},
		{rule: "2.4.1 endpoint without hostname is named by its address", name: "10-244-1-11.db.dnstest.svc" + z, qtype: "A", status: "NOERROR", answer: []string{"A 10.244.1.11"}},
		{rule: "2.4.1 a not-ready endpoint's hostname does not exist", name: "db-2.db.dnstest.svc" + z, qtype: "A", status: "NXDOMAIN", authority: soa},
		{rule: "2.4.1 an unknown hostname does not exist", name: "db-9.db.dnstest.svc" + z, qtype: "A", status: "NXDOMAIN", authority: soa},
		{rule: "2.4.2 SRV of a headless Service: one per ready endpoint", name: "_pg._tcp.db.dnstest.svc" + z, qtype: "SRV", status: "NOERROR", answer: []string{
			"SRV 0 50 5432 10-244-1-11.db.dnstest.svc.cluster.local.",
			"SRV 0 50 5432 db-0.db.dnstest.svc.cluster.local.",
		}},
		{rule: "2.4.3 PTR of a headless endpoint", name: reverseName("10.244.1.10"), qtype: "PTR", status: "NOERROR", answer: []string{"PTR db-0.db.dnstest.svc.cluster.local."}},
		{rule: "2.4.3 PTR of an IPv6 headless endpoint", name: reverseName("fd00::10"), qtype: "PTR", status: "NOERROR", answer: []string{"PTR db-0.db.dnstest.svc.cluster.local."}},
		{rule: "2.5 ExternalName is a CNAME", name: "ext.dnstest.svc" + z, qtype: "A", status: "NOERROR", answer: []string{"CNAME www.example.org."}},
		{rule: "2.5 ExternalName CNAME query", name: "ext.dnstest.svc" + z, qtype: "CNAME", status: "NOERROR", answer: []string{"CNAME www.example.org."}},
		{rule: "2.6 pod A record", name: "10-244-1-10.dnstest.pod" + z, qtype: "A", status: "NOERROR", answer: []string{"A 10.244.1.10"}},
		{rule: "2.6 pod record with a malformed address", name: "10-244-1.dnstest.pod" + z, qtype: "A", status: "NXDOMAIN", authority: soa},
		{rule: "2.6 pod record in a missing namespace", name: "10-244-1-10.nope.pod" + z, qtype: "A", status: "NXDOMAIN", authority: soa},
		{rule: "negative: unknown Service", name: "nope.dnstest.svc" + z, qtype: "A", status: "NXDOMAIN", authority: soa},
		{rule: "negative: unknown namespace", name: "web.nope.svc" + z, qtype: "A", status: "NXDOMAIN", authority: soa},
		{rule: "negative: existing namespace is NODATA", name: "dnstest.svc" + z, qtype: "A", status: "NOERROR", authority: soa},
		{rule: "negative: svc is NODATA", name: "svc" + z, qtype: "A", status: "NOERROR", authority: soa},
		{rule: "negative: TXT of a Service is NODATA", name: "web.dnstest.svc" + z, qtype: "TXT", status: "NOERROR", authority: soa},
		{rule: "negative: a name outside svc and pod", name: "foo.bar" + z, qtype: "A", status: "NXDOMAIN", authority: soa},
		{rule: "negative: too many labels", name: "a.b.c.web.dnstest.svc" + z, qtype: "A", status: "NXDOMAIN", authority: soa},
		{rule: "zone apex SOA", name: "cluster.local", qtype: "SOA", status: "NOERROR", answer: nil /* checked below */},
		{rule: "zone apex NS", name: "cluster.local", qtype: "NS", status: "NOERROR", answer: []string{"NS ns.dns.cluster.local."}},
		{rule: "name server address is the kube-dns Service", name: "ns.dns" + z, qtype: "A", status: "NOERROR", answer: []string{"A 10.96.0.10"}},
		{rule: "forward: names outside the zone go upstream", name: "www.example.test", qtype: "A", status: "NOERROR", answer: []string{"A 192.0.2.1"}},
		{rule: "forward: upstream NXDOMAIN is passed on", name: "missing.invalid", qtype: "A", status: "NXDOMAIN"},
	}
	for _, tc := range cases {
		t.Run(tc.rule, func(t *testing.T) {
			got := dig(t, c.port, tc.name, tc.qtype)
			if got.status != tc.status {
				t.Errorf("status %s, want %s (%+v)", got.status, tc.status, got)
			}
			if tc.qtype == "SOA" {
				if len(got.answer) != 1 || !strings.HasPrefix(got.answer[0], "SOA ns.dns.cluster.local. hostmaster.cluster.local. ") {
					t.Errorf("answer %q, want the zone's SOA", got.answer)
				}
				return
			}
			if !slices.Equal(got.answer, tc.answer) {
				t.Errorf("answer\n got %q\nwant %q", got.answer, tc.answer)
			}
			if tc.authority != nil && !slices.Equal(got.authority, tc.authority) {
				t.Errorf("authority %q, want %q", got.authority, tc.authority)
			}
			if strings.HasSuffix(strings.ToLower(tc.name), "cluster.local") && !slices.Contains(got.flags, "aa") {
				t.Errorf("flags %q: cluster answers must be authoritative", got.flags)
			}
		})
	}

	t.Run("the server publishes itself as kube-system/kube-dns", func(t *testing.T) {
		svc, err := c.srv.Client.CoreV1().Services("kube-system").Get(context.Background(), "kube-dns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var ports []string
		for _, p := range svc.Spec.Ports {
			ports = append(ports, fmt.Sprintf("%s %d/%s", p.Name, p.Port, p.Protocol))
		}
		if svc.Spec.ClusterIP != "10.96.0.10" || svc.Labels["k8s-app"] != "kube-dns" ||
			!slices.Equal(ports, []string{"dns 53/UDP", "dns-tcp 53/TCP"}) {
			t.Errorf("kube-dns: clusterIP %s, labels %v, ports %q", svc.Spec.ClusterIP, svc.Labels, ports)
		}
	})
	t.Run("SRV carries the targets' addresses in the additional section", func(t *testing.T) {
		got := dig(t, c.port, "_http._tcp.web.dnstest.svc.cluster.local", "SRV")
		if !slices.Contains(got.additional, "A "+webIP) {
			t.Errorf("additional %q lacks A %s", got.additional, webIP)
		}
	})
	t.Run("a big answer is truncated over UDP without EDNS0 and complete over TCP", func(t *testing.T) {
		udp := dig(t, c.port, "many.dnstest.svc.cluster.local", "A", "+noedns", "+ignore")
		if !slices.Contains(udp.flags, "tc") {
			t.Errorf("flags %q over UDP: want tc", udp.flags)
		}
		tcp := dig(t, c.port, "many.dnstest.svc.cluster.local", "A", "+tcp")
		if len(tcp.answer) != 100 || slices.Contains(tcp.flags, "tc") {
			t.Errorf("TCP: %d answers, flags %q; want 100 and no tc", len(tcp.answer), tcp.flags)
		}
		edns := dig(t, c.port, "many.dnstest.svc.cluster.local", "A", "+bufsize=4096", "+ignore")
		if len(edns.answer) != 100 {
			t.Errorf("EDNS0 with 4096 bytes: %d answers, want 100", len(edns.answer))
		}
	})
	t.Run("forwarded answers are cached", func(t *testing.T) {
		before := c.upstream.queries.Load()
		for range 3 {
			if got := dig(t, c.port, "cached.example.test", "A"); !slices.Equal(got.answer, []string{"A 192.0.2.1"}) {
				t.Fatalf("answer %q", got.answer)
			}
		}
		if n := c.upstream.queries.Load() - before; n != 1 {
			t.Errorf("upstream asked %d times for one name, want 1", n)
		}
	})
	t.Run("health, readiness and metrics", func(t *testing.T) {
		for path, want := range map[string]string{
			"/health":  "OK",
			"/ready":   "OK",
			"/metrics": `svcplane_dns_requests_total{rcode="NXDOMAIN",source="cluster",type="A"}`,
		} {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", c.healthPort, path))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
				t.Errorf("GET %s: %d, body lacks %q", path, resp.StatusCode, want)
			}
		}
	})
	t.Run("an unreachable upstream gives SERVFAIL quickly", func(t *testing.T) {
		c.upstream.server.Shutdown()
		start := time.Now()
		got := dig(t, c.port, "gone.example.test", "A")
		if got.status != "SERVFAIL" {
			t.Errorf("status %s, want SERVFAIL", got.status)
		}
		if d := time.Since(start); d > 2500*time.Millisecond {
			t.Errorf("SERVFAIL took %v", d)
		}
	})
}

// TestDNSFollowsChangesToServicesAndEndpoints: a user creates a Service, its endpoint becomes
// ready, and the Service is deleted; each change is answered soon after.
func TestDNSFollowsChangesToServicesAndEndpoints(t *testing.T) {
	c := startDNSCluster(t)
	client := c.srv.Client
	mustCreate(t, client.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: dnsTestNS}})
	const name = "late.dnstest.svc.cluster.local"
	if got := dig(t, c.port, name, "A"); got.status != "NXDOMAIN" {
		t.Fatalf("before creation: %+v", got)
	}

	svc := mustCreate(t, client.CoreV1().Services(dnsTestNS).Create, service("late", nil))
	c.eventually(t, "new Service", name, "A", func(r digResult) bool {
		return slices.Equal(r.answer, []string{"A " + svc.Spec.ClusterIP})
	})

	mustCreate(t, client.CoreV1().Services(dnsTestNS).Create, service("late-hl", func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone }))
	slice := mustCreate(t, client.DiscoveryV1().EndpointSlices(dnsTestNS).Create,
		endpointSlice("late-hl-1", "late-hl", discoveryv1.AddressTypeIPv4, nil, testEndpoint{addr: "10.244.9.9", ready: false}))
	c.eventually(t, "not-ready endpoint", "late-hl.dnstest.svc.cluster.local", "A", func(r digResult) bool { return r.status == "NXDOMAIN" })
	slice.Endpoints[0].Conditions.Ready = ptr(true)
	if _, err := client.DiscoveryV1().EndpointSlices(dnsTestNS).Update(context.Background(), slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.eventually(t, "endpoint became ready", "late-hl.dnstest.svc.cluster.local", "A", func(r digResult) bool {
		return slices.Equal(r.answer, []string{"A 10.244.9.9"})
	})

	if err := client.CoreV1().Services(dnsTestNS).Delete(context.Background(), "late", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.eventually(t, "deleted Service", name, "A", func(r digResult) bool { return r.status == "NXDOMAIN" })
}
