package nftables

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/svcplane/svcplane/pkg/proxy"
)

// Addresses of these tests (besides those in helpers_test.go): the ranged LoadBalancer Service
// "fenced" at 10.251.0.2, the allowed client 10.250.0.200, a denied one 10.250.0.201.

// fenced is the LoadBalancer Service "fenced" with the given loadBalancerSourceRanges and one
// endpoint on this node unless noEndpoints.
func fenced(ranges []string, noEndpoints bool, opts ...svcOpt) testService {
	svc := makeService("fenced", "10.96.0.20", 80, corev1.ProtocolTCP, append([]svcOpt{func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30090
		s.Spec.LoadBalancerSourceRanges = ranges
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.251.0.2"}}
	}}, opts...)...)
	ts := testService{svc: svc}
	if !noEndpoints {
		ts.slice = makeSlice("fenced", 8080, corev1.ProtocolTCP, ep{"10.244.1.20", testNode, true, false})
	}
	return ts
}

func dumpOf(t *testing.T, services ...testService) (*Proxier, string) {
	t.Helper()
	tr := proxy.NewTracker(corev1.IPv4Protocol, testNode, nil)
	for _, s := range services {
		tr.OnServiceAdd(s.svc)
		if s.slice != nil {
			tr.OnEndpointSliceAdd(s.slice)
		}
	}
	p := NewProxier(testConfig(), &recorder{})
	if err := p.Sync(tr.Snapshot(), true); err != nil {
		t.Fatal(err)
	}
	return p, p.commands()
}

func TestSourceRangesRules(t *testing.T) {
	name := proxy.ServicePortName{Port: "p", Protocol: corev1.ProtocolTCP}
	name.Namespace, name.Name = "ns", "fenced"
	chain := "fw-" + name.ShortHash()
	for _, tc := range []struct {
		name      string
		svc       testService
		want, not []string
	}{{
		name: "ranges filter the LB IP only, before NAT",
		svc:  fenced([]string{"10.250.0.200/32", "192.0.2.0/24"}, false),
		want: []string{
			"add rule " + chain + " ip saddr 10.250.0.200 return",
			"add rule " + chain + " ip saddr 192.0.2.0/24 return",
			"add rule " + chain + " drop",
			"add element no-endpoint-services { 10.251.0.2 . tcp . 80 : goto " + chain + " }",
			"add element service-ips { 10.251.0.2 . tcp . 80 : goto ext-n1 }",
			// NodePort and ClusterIP stay open, as upstream.
			"add element service-nodeports { tcp . 30090 : goto ext-np-n1 }",
			"add element service-ips { 10.96.0.20 . tcp . 80 : goto svc-n1 }",
		},
	}, {
		name: "no ranges: nothing in the kernel",
		svc:  fenced(nil, false),
		not:  []string{chain, "add element no-endpoint-services"},
	}, {
		name: "a range holding the node admits the LB IP as a source",
		svc:  fenced([]string{"10.250.0.0/24"}, false),
		want: []string{
			"add rule " + chain + " ip saddr 10.250.0.0/24 return",
			"add rule " + chain + " ip saddr 10.251.0.2 return",
		},
	}, {
		name: "without endpoints allowed clients are rejected, others dropped",
		svc:  fenced([]string{"10.250.0.200/32"}, true),
		want: []string{
			"add rule " + chain + " ip saddr 10.250.0.200 goto reject-no-endpoints",
			"add rule " + chain + " drop",
			"add element no-endpoint-services { 10.251.0.2 . tcp . 80 : goto " + chain + " }",
			"add element no-endpoint-services { 10.96.0.20 . tcp . 80 : goto reject-no-endpoints }",
		},
	}, {
		name: "ipMode Proxy: the LB IP is not captured at all",
		svc: fenced([]string{"10.250.0.200/32"}, false, func(s *corev1.Service) {
			s.Status.LoadBalancer.Ingress[0].IPMode = ptr.To(corev1.LoadBalancerIPModeProxy)
		}),
		not: []string{"10.251.0.2", chain},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, dump := dumpOf(t, tc.svc)
			for _, w := range tc.want {
				if !strings.Contains(dump, w+"\n") {
					t.Errorf("missing %q in\n%s", w, dump)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(dump, n) {
					t.Errorf("unexpected %q in\n%s", n, dump)
				}
			}
		})
	}
}

// trace walks pkt through a filter hook (no random choices there) with the tracer of
// tracer_test.go and returns its verdict.
func trace(t *testing.T, p *Proxier, hook string, pkt packet) verdictKind {
	t.Helper()
	chains, tbl := tracerTables(p)
	results := walkChain(t, chains, tbl, hook, pkt)
	if len(results) != 1 {
		t.Fatalf("%s: %d outcomes, want one", hook, len(results))
	}
	return results[0].kind
}

func TestSourceRangesPacketTrace(t *testing.T) {
	lb, np, cip := netip.MustParseAddr("10.251.0.2"), netip.MustParseAddr("10.250.0.11"), netip.MustParseAddr("10.96.0.20")
	allowed, denied := netip.MustParseAddr("10.250.0.200"), netip.MustParseAddr("10.250.0.201")
	withEPs, _ := dumpOf(t, fenced([]string{"10.250.0.200/32"}, false))
	noEPs, _ := dumpOf(t, fenced([]string{"10.250.0.200/32"}, true))
	for _, tc := range []struct {
		name     string
		p        *Proxier
		src, dst netip.Addr
		dport    uint16
		want     verdictKind
	}{
		{"allowed client reaches the LB IP", withEPs, allowed, lb, 80, vAccept},
		{"other client is dropped at the LB IP", withEPs, denied, lb, 80, vDrop},
		{"a Pod outside the ranges is dropped too", withEPs, netip.MustParseAddr("10.244.2.9"), lb, 80, vDrop},
		{"other client still reaches the NodePort", withEPs, denied, np, 30090, vAccept},
		{"other client still reaches the ClusterIP", withEPs, denied, cip, 80, vAccept},
		{"no endpoints: allowed client is rejected", noEPs, allowed, lb, 80, vReject},
		{"no endpoints: other client is dropped, not told", noEPs, denied, lb, 80, vDrop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := packet{src: tc.src, dst: tc.dst, proto: 6, dport: tc.dport}
			if got := trace(t, tc.p, "filter-prerouting", pkt); got != tc.want {
				t.Errorf("verdict %v, want %v", got, tc.want)
			}
		})
	}
}

// TestKernelSourceRanges sends real connections in a fresh namespace: from the allowed
// address the LB IP answers (DNAT to a local backend), from another the SYN is dropped in
// filter-output, which the sender sees as EPERM; removing the ranges (a partial sync) opens
// it, adding them back closes it again.
func TestKernelSourceRanges(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		ns := inFreshNetns(t)
		if err := ipIn(ns, [][]string{
			{"link", "set", "lo", "up"},
			{"addr", "add", "10.250.0.200/32", "dev", "lo"},
			{"addr", "add", "10.250.0.201/32", "dev", "lo"},
			{"addr", "add", "10.244.1.20/32", "dev", "lo"},
			// The LB IP only needs a route out; nat-output turns it into the local backend.
			{"route", "add", "10.251.0.0/24", "dev", "lo"},
		}); err != nil {
			t.Error(err)
			return
		}
		backend, err := net.Listen("tcp", "10.244.1.20:8080")
		if err != nil {
			t.Error(err)
			return
		}
		defer backend.Close()
		go func() {
			for {
				c, err := backend.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("ok"))
				c.Close()
			}
		}()
		tr := proxy.NewTracker(corev1.IPv4Protocol, testNode, nil)
		s := fenced([]string{"10.250.0.200/32"}, false)
		tr.OnServiceAdd(s.svc)
		tr.OnEndpointSliceAdd(s.slice)
		p, err := kernelProxier(testConfig())
		if err != nil {
			t.Error(err)
			return
		}
		if err := p.Sync(tr.Snapshot(), true); err != nil {
			t.Errorf("full sync: %v", err)
			return
		}
		dial := func(src string) error {
			d := net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			c, err := d.Dial("tcp", "10.251.0.2:80")
			if err != nil {
				return err
			}
			defer c.Close()
			buf := make([]byte, 2)
			c.SetDeadline(time.Now().Add(time.Second))
			_, err = c.Read(buf)
			return err
		}
		check := func(stage string, allowedOK, deniedOK bool) {
			for src, wantOK := range map[string]bool{"10.250.0.200": allowedOK, "10.250.0.201": deniedOK} {
				err := dial(src)
				switch {
				case wantOK && err != nil:
					t.Errorf("%s: from %s: %v, want an answer", stage, src, err)
				case !wantOK && err == nil:
					t.Errorf("%s: from %s: answered, want dropped", stage, src)
				case !wantOK && !errors.Is(err, syscall.EPERM) && !isTimeout(err):
					t.Errorf("%s: from %s: %v, want dropped (EPERM or timeout)", stage, src, err)
				}
			}
		}
		check("ranges", true, false)
		tr.OnServiceUpdate(nil, fenced(nil, false).svc)
		if err := p.Sync(tr.Snapshot(), false); err != nil {
			t.Errorf("partial sync without ranges: %v", err)
			return
		}
		check("no ranges", true, true)
		tr.OnServiceUpdate(nil, s.svc)
		if err := p.Sync(tr.Snapshot(), false); err != nil {
			t.Errorf("partial sync with ranges again: %v", err)
			return
		}
		check("ranges again", true, false)
		out, _ := exec.Command("nsenter", "--net="+ns, "nft", "list", "ruleset").CombinedOutput()
		t.Logf("kernel ruleset:\n%s", out)
	}()
	<-done
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
