package nftables

import (
	"flag"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/svcplane/svcplane/pkg/proxy"
)

// Whole-ruleset tests: each case programs a few Services and compares the entire table, as
// Dump renders it, with testdata/ruleset/<case>.nft. After an intended change of the rules,
// regenerate with `go test ./pkg/proxy/nftables -run TestWholeRuleset -update` and read the
// diff: it is the change the kernel will see. TestKernelListingMatchesDump loads the same
// cases into a real kernel and checks its listing against the same files.

var update = flag.Bool("update", false, "rewrite testdata/ruleset/*.nft from the current rules")

type rulesetCase struct {
	name     string
	services []testService
}

func rulesetCases() []rulesetCase {
	nodePort := func(np int32) svcOpt {
		return func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort; s.Spec.Ports[0].NodePort = np }
	}
	etpLocal := func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 32000
	}
	return []rulesetCase{
		{name: "no-services"},
		{name: "clusterip", services: []testService{
			{makeService("one", "10.96.0.1", 80, corev1.ProtocolTCP),
				makeSlice("one", 8080, corev1.ProtocolTCP, ep{"10.244.2.1", "node2", true, false})},
			{makeService("three", "10.96.0.3", 80, corev1.ProtocolTCP),
				makeSlice("three", 8080, corev1.ProtocolTCP, ep{"10.244.1.3", testNode, true, false},
					ep{"10.244.2.3", "node2", true, false}, ep{"10.244.3.3", "node3", true, false},
					// Not ready and not terminating: never used.
					ep{"10.244.3.4", "node3", false, false})},
			{makeService("dns", "10.96.0.10", 53, corev1.ProtocolUDP),
				makeSlice("dns", 5353, corev1.ProtocolUDP, ep{"10.244.2.10", "node2", true, false})},
			// No endpoints: rejected before NAT.
			{makeService("empty", "10.96.0.4", 80, corev1.ProtocolTCP), nil},
		}},
		{name: "nodeport-externalips", services: []testService{
			{makeService("np", "10.96.0.5", 80, corev1.ProtocolTCP, nodePort(30080)),
				makeSlice("np", 8080, corev1.ProtocolTCP, ep{"10.244.1.5", testNode, true, false}, ep{"10.244.2.5", "node2", true, false})},
			{makeService("ext", "10.96.0.6", 80, corev1.ProtocolTCP, func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"192.0.2.6"} }),
				makeSlice("ext", 8080, corev1.ProtocolTCP, ep{"10.244.2.6", "node2", true, false})},
			{makeService("np-empty", "10.96.0.7", 80, corev1.ProtocolTCP, nodePort(30081)), nil},
		}},
		{name: "loadbalancer-source-ranges", services: []testService{
			fenced([]string{"10.250.0.200/32", "192.0.2.0/24"}, false),
		}},
		{name: "client-ip-affinity", services: []testService{
			{makeService("sticky", "10.96.0.9", 80, corev1.ProtocolTCP, nodePort(30090), func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](10800)}}
			}), makeSlice("sticky", 8080, corev1.ProtocolTCP, ep{"10.244.1.9", testNode, true, false}, ep{"10.244.2.9", "node2", true, false})},
		}},
		{name: "traffic-policy-local", services: []testService{
			{makeService("etp", "10.96.0.7", 80, corev1.ProtocolTCP, func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30081
				etpLocal(s)
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.251.0.1"}}
			}), makeSlice("etp", 8080, corev1.ProtocolTCP, ep{"10.244.1.7", testNode, true, false}, ep{"10.244.2.7", "node2", true, false})},
			// eTP Local, no endpoint on this node: external frontends drop.
			{makeService("etp-remote", "10.96.0.8", 80, corev1.ProtocolTCP, nodePort(30082), etpLocal),
				makeSlice("etp-remote", 8080, corev1.ProtocolTCP, ep{"10.244.2.8", "node2", true, false})},
			{makeService("itp", "10.96.0.11", 80, corev1.ProtocolTCP, func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
			}), makeSlice("itp", 8080, corev1.ProtocolTCP, ep{"10.244.1.11", testNode, true, false}, ep{"10.244.2.11", "node2", true, false})},
			// iTP Local, no endpoint on this node: the ClusterIP rejects here.
			{makeService("itp-remote", "10.96.0.12", 80, corev1.ProtocolTCP, func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
			}), makeSlice("itp-remote", 8080, corev1.ProtocolTCP, ep{"10.244.2.12", "node2", true, false})},
		}},
		{name: "terminating-only", services: []testService{
			// Only serving-terminating endpoints: they are used; the not-serving one is not.
			{makeService("draining", "10.96.0.13", 80, corev1.ProtocolTCP),
				makeSlice("draining", 8080, corev1.ProtocolTCP, ep{"10.244.2.13", "node2", false, true},
					ep{"10.244.3.13", "node3", false, true}, ep{"10.244.3.14", "node3", false, false})},
			// A ready endpoint beside a terminating one: only the ready one.
			{makeService("rolling", "10.96.0.14", 80, corev1.ProtocolTCP),
				makeSlice("rolling", 8080, corev1.ProtocolTCP, ep{"10.244.2.14", "node2", false, true}, ep{"10.244.2.15", "node2", true, false})},
		}},
	}
}

func (c rulesetCase) tracker() *proxy.Tracker {
	tr := proxy.NewTracker(corev1.IPv4Protocol, testNode, nil)
	for _, s := range c.services {
		tr.OnServiceAdd(s.svc)
		if s.slice != nil {
			tr.OnEndpointSliceAdd(s.slice)
		}
	}
	return tr
}

func goldenPath(name string) string { return filepath.Join("testdata", "ruleset", name+".nft") }

func TestWholeRuleset(t *testing.T) {
	for _, tc := range rulesetCases() {
		t.Run(tc.name, func(t *testing.T) {
			p := NewProxier(testConfig(), &recorder{})
			if err := p.Sync(tc.tracker().Snapshot(), true); err != nil {
				t.Fatal(err)
			}
			got := p.Dump()
			if *update {
				os.MkdirAll(filepath.Dir(goldenPath(tc.name)), 0o755)
				if err := os.WriteFile(goldenPath(tc.name), []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(goldenPath(tc.name))
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("ruleset differs from %s:\n%s", goldenPath(tc.name), lineDiff(string(want), got))
			}
		})
	}
}

// TestKernelListingMatchesDump loads every case into a fresh namespace's kernel and checks
// that `nft list table` shows exactly what Dump renders (after CanonicalListing's reordering),
// after the full sync and after partial syncs removing the endpoints, then the Services.
func TestKernelListingMatchesDump(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft binary to list the kernel's ruleset")
	}
	for _, tc := range rulesetCases() {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan struct{})
			go func() {
				defer close(done)
				ns := inFreshNetns(t)
				p, err := kernelProxier(testConfig())
				if err != nil {
					t.Error(err)
					return
				}
				compare := func(stage string) {
					out, err := exec.Command("nsenter", "--net="+ns, "nft", "list", "table", "ip", TableName).CombinedOutput()
					if err != nil {
						t.Errorf("%s: nft list table: %v: %s", stage, err, out)
						return
					}
					kernel, err := CanonicalListing(string(out))
					if err != nil {
						t.Errorf("%s: %v in:\n%s", stage, err, out)
						return
					}
					if dump := p.Dump(); kernel != dump {
						t.Errorf("%s: the kernel's listing (-) differs from Dump (+):\n%s", stage, lineDiff(kernel, dump))
					}
				}
				tr := tc.tracker()
				if err := p.Sync(tr.Snapshot(), true); err != nil {
					t.Errorf("full sync: %v", err)
					return
				}
				compare("after a full sync")
				// Partial syncs take the Services' endpoints away, then the Services.
				for _, s := range tc.services {
					if s.slice != nil {
						tr.OnEndpointSliceDelete(s.slice)
					}
				}
				if err := p.Sync(tr.Snapshot(), false); err != nil {
					t.Errorf("partial sync removing endpoints: %v", err)
					return
				}
				compare("after removing the endpoints")
				for _, s := range tc.services {
					tr.OnServiceDelete(s.svc)
				}
				if err := p.Sync(tr.Snapshot(), false); err != nil {
					t.Errorf("partial sync removing Services: %v", err)
					return
				}
				compare("after removing the Services")
			}()
			<-done
		})
	}
}

// lineDiff is a small line diff (longest common subsequence) for test failures.
func lineDiff(a, b string) string {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			out.WriteString("  " + x[i] + "\n")
			i, j = i+1, j+1
		case j < len(y) && (i == len(x) || lcs[i][j+1] >= lcs[i+1][j]):
			out.WriteString("+ " + y[j] + "\n")
			j++
		default:
			out.WriteString("- " + x[i] + "\n")
			i++
		}
	}
	return out.String()
}

// TestKernelListingMatchesDumpIPv6 is the same check for an IPv6 table (ip6 svcplane), with
// one Service of each kind. Addresses: ClusterIPs in fd00:96::/112, Pods in fd00:244::/48 with
// this node's in fd00:244:1::/64, the node at fd00:250::11, an LB IP fd00:251::1.
func TestKernelListingMatchesDumpIPv6(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft binary to list the kernel's ruleset")
	}
	v6 := func(s testService) testService {
		s.svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		if s.slice != nil {
			s.slice.AddressType = "IPv6"
		}
		return s
	}
	sticky := makeService("sticky", "fd00:96::3", 80, corev1.ProtocolTCP, func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
	})
	lb := makeService("lb", "fd00:96::4", 443, corev1.ProtocolTCP, func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].NodePort = 30443
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 32001
		s.Spec.LoadBalancerSourceRanges = []string{"fd00:250::/64"}
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "fd00:251::1"}}
	})
	services := []testService{
		v6(testService{makeService("web", "fd00:96::1", 80, corev1.ProtocolTCP, func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.Ports[0].NodePort = 30080
		}), makeSlice("web", 8080, corev1.ProtocolTCP, ep{"fd00:244:1::2", testNode, true, false}, ep{"fd00:244:2::2", "node2", true, false})}),
		v6(testService{makeService("udp", "fd00:96::2", 53, corev1.ProtocolUDP), nil}),
		v6(testService{sticky, makeSlice("sticky", 8080, corev1.ProtocolTCP, ep{"fd00:244:1::3", testNode, true, false}, ep{"fd00:244:2::3", "node2", true, false})}),
		v6(testService{lb, makeSlice("lb", 8443, corev1.ProtocolTCP, ep{"fd00:244:1::4", testNode, true, false}, ep{"fd00:244:2::4", "node2", true, false})}),
	}
	cfg := Config{Family: corev1.IPv6Protocol, ClusterCIDR: netip.MustParsePrefix("fd00:244::/48"),
		NodePortAddresses: []netip.Addr{netip.MustParseAddr("fd00:250::11")}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ns := inFreshNetns(t)
		tr := proxy.NewTracker(corev1.IPv6Protocol, testNode, nil)
		for _, s := range services {
			tr.OnServiceAdd(s.svc)
			if s.slice != nil {
				tr.OnEndpointSliceAdd(s.slice)
			}
		}
		p, err := kernelProxier(cfg)
		if err != nil {
			t.Error(err)
			return
		}
		if err := p.Sync(tr.Snapshot(), true); err != nil {
			t.Errorf("full sync: %v", err)
			return
		}
		out, err := exec.Command("nsenter", "--net="+ns, "nft", "list", "table", "ip6", TableName).CombinedOutput()
		if err != nil {
			t.Errorf("nft list table: %v: %s", err, out)
			return
		}
		kernel, err := CanonicalListing(string(out))
		if err != nil {
			t.Errorf("%v in:\n%s", err, out)
			return
		}
		for _, want := range []string{"fd00:96::1 . tcp . 80 : goto svc-n2", "dnat to [fd00:244:1::3]:8080", "ip6 saddr fd00:250::/64 return", "fd00:251::1 . tcp . 443 : goto etp-local-n1-all2"} {
			if !strings.Contains(kernel, want) {
				t.Errorf("the kernel's listing lacks %q:\n%s", want, kernel)
			}
		}
		if dump := p.Dump(); kernel != dump {
			t.Errorf("the kernel's listing (-) differs from Dump (+):\n%s", lineDiff(kernel, dump))
		}
	}()
	<-done
}
