package resolver

// Addresses: ClusterIPs 10.96.0.0/12 and fd00:96::/64; endpoints 10.244.0.0/16 and fd00:244::/64.

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/svcplane/svcplane/pkg/dns/cache"
	"github.com/svcplane/svcplane/pkg/dns/object"
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func fixture(synced bool) *cache.Index {
	ix := cache.New(true)
	ix.SetNamespace("ns")
	ix.SetNamespace("kube-system")
	ix.SetService(&object.Service{Namespace: "kube-system", Name: "kube-dns", ClusterIPs: addrs("10.96.0.10")})
	ix.SetService(&object.Service{Namespace: "ns", Name: "web", ClusterIPs: addrs("10.96.0.5", "fd00:96::5"),
		Ports: []object.Port{{Name: "http", Protocol: "tcp", Port: 80}, {Protocol: "tcp", Port: 8080}}})
	ix.SetService(&object.Service{Namespace: "ns", Name: "db", Headless: true})
	ix.SetEndpointSlice(&object.EndpointSlice{Namespace: "ns", Name: "db-1", Service: "db",
		Ports: []object.Port{{Name: "pg", Protocol: "tcp", Port: 5432}},
		Endpoints: []object.Endpoint{
			{Addresses: addrs("10.244.0.1"), Hostname: "db-0", Ready: true},
			{Addresses: addrs("10.244.0.2"), Ready: true},
			{Addresses: addrs("10.244.0.3"), Hostname: "db-2"},
		}})
	ix.SetService(&object.Service{Namespace: "ns", Name: "lonely", Headless: true})
	ix.SetService(&object.Service{Namespace: "ns", Name: "ext", ExternalName: "www.example.org."})
	ix.SetPod(&object.Pod{Namespace: "ns", Name: "p", IPs: addrs("10.244.0.9")})
	if synced {
		ix.MarkSynced()
	}
	return ix
}

// rrs renders records without their owner name and TTL, sorted.
func rrs(in []dns.RR) []string {
	var out []string
	for _, rr := range in {
		f := strings.Fields(rr.String())
		out = append(out, strings.Join(f[3:], " "))
	}
	slices.Sort(out)
	return out
}

func TestResolveFollowsTheSpecification(t *testing.T) {
	r := New(fixture(true), Config{Zone: "cluster.local", TTL: 30, Pods: PodsInsecure})
	cases := []struct {
		rule   string
		name   string
		qtype  uint16
		rcode  int
		answer []string
		extra  []string
	}{
		{rule: "A of a ClusterIP", name: "web.ns.svc.cluster.local.", qtype: dns.TypeA, answer: []string{"A 10.96.0.5"}},
		{rule: "AAAA of a dual-stack ClusterIP", name: "web.ns.svc.cluster.local.", qtype: dns.TypeAAAA, answer: []string{"AAAA fd00:96::5"}},
		{rule: "SRV of a named port, with addresses as additional", name: "_http._tcp.web.ns.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 100 80 web.ns.svc.cluster.local."}, extra: []string{"A 10.96.0.5", "AAAA fd00:96::5"}},
		{rule: "SRV at the bare Service name lists every port", name: "web.ns.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 50 80 web.ns.svc.cluster.local.", "SRV 0 50 8080 web.ns.svc.cluster.local."}, extra: []string{"A 10.96.0.5", "AAAA fd00:96::5"}},
		{rule: "SRV without underscores is not a port name", name: "http.tcp.web.ns.svc.cluster.local.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError},
		{rule: "headless A: ready endpoints only", name: "db.ns.svc.cluster.local.", qtype: dns.TypeA, answer: []string{"A 10.244.0.1", "A 10.244.0.2"}},
		{rule: "headless without family is NODATA", name: "db.ns.svc.cluster.local.", qtype: dns.TypeAAAA},
		{rule: "headless without endpoints is NXDOMAIN", name: "lonely.ns.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{rule: "headless SRV targets endpoint names", name: "_pg._tcp.db.ns.svc.cluster.local.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 50 5432 10-244-0-2.db.ns.svc.cluster.local.", "SRV 0 50 5432 db-0.db.ns.svc.cluster.local."},
			extra:  []string{"A 10.244.0.1", "A 10.244.0.2"}},
		{rule: "endpoint hostname", name: "db-0.db.ns.svc.cluster.local.", qtype: dns.TypeA, answer: []string{"A 10.244.0.1"}},
		{rule: "not-ready endpoint hostname", name: "db-2.db.ns.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{rule: "ExternalName answers a CNAME to any type", name: "ext.ns.svc.cluster.local.", qtype: dns.TypeAAAA, answer: []string{"CNAME www.example.org."}},
		{rule: "ExternalName has no ports", name: "_http._tcp.ext.ns.svc.cluster.local.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError},
		{rule: "PTR of a ClusterIP", name: "5.0.96.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{"PTR web.ns.svc.cluster.local."}},
		{rule: "PTR of an IPv6 ClusterIP", name: mustReverse("fd00:96::5"), qtype: dns.TypePTR, answer: []string{"PTR web.ns.svc.cluster.local."}},
		{rule: "PTR of an endpoint without hostname", name: "2.0.244.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{"PTR 10-244-0-2.db.ns.svc.cluster.local."}},
		{rule: "pod A", name: "10-1-2-3.ns.pod.cluster.local.", qtype: dns.TypeA, answer: []string{"A 10.1.2.3"}},
		{rule: "pod AAAA", name: "fd00-244--9.ns.pod.cluster.local.", qtype: dns.TypeAAAA, answer: []string{"AAAA fd00:244::9"}},
		{rule: "pod A of an IPv6 name is NODATA", name: "fd00-244--9.ns.pod.cluster.local.", qtype: dns.TypeA},
		{rule: "schema version", name: "dns-version.cluster.local.", qtype: dns.TypeTXT, answer: []string{`TXT "1.1.0"`}},
		{rule: "name server", name: "cluster.local.", qtype: dns.TypeNS, answer: []string{"NS ns.dns.cluster.local."}, extra: []string{"A 10.96.0.10"}},
		{rule: "empty non-terminal pod is NODATA", name: "pod.cluster.local.", qtype: dns.TypeA},
		{rule: "namespace under pod is NODATA", name: "ns.pod.cluster.local.", qtype: dns.TypeA},
		{rule: "unknown namespace is NXDOMAIN", name: "nope.svc.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{rule: "unknown top label is NXDOMAIN", name: "x.cluster.local.", qtype: dns.TypeA, rcode: dns.RcodeNameError},
	}
	for _, tc := range cases {
		t.Run(tc.rule, func(t *testing.T) {
			res, ok := r.Resolve(dns.Question{Name: tc.name, Qtype: tc.qtype, Qclass: dns.ClassINET})
			if !ok {
				t.Fatal("not answered")
			}
			if res.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[res.Rcode], dns.RcodeToString[tc.rcode])
			}
			if got := rrs(res.Answer); !slices.Equal(got, tc.answer) {
				t.Errorf("answer\n got %q\nwant %q", got, tc.answer)
			}
			if got := rrs(res.Extra); !slices.Equal(got, tc.extra) {
				t.Errorf("extra\n got %q\nwant %q", got, tc.extra)
			}
			if len(res.Answer) == 0 && (len(res.Ns) != 1 || res.Ns[0].Header().Rrtype != dns.TypeSOA) {
				t.Errorf("negative answer without the SOA: %v", res.Ns)
			}
			for _, rr := range res.Answer {
				if rr.Header().Name != tc.name {
					t.Errorf("owner %q, want the question's name", rr.Header().Name)
				}
			}
		})
	}
}

func mustReverse(ip string) string {
	s, err := dns.ReverseAddr(ip)
	if err != nil {
		panic(err)
	}
	return s
}

func TestPodRecordModes(t *testing.T) {
	q := func(name string) dns.Question {
		return dns.Question{Name: name, Qtype: dns.TypeA, Qclass: dns.ClassINET}
	}
	verified := New(fixture(true), Config{Zone: "cluster.local", TTL: 30, Pods: PodsVerified})
	if res, _ := verified.Resolve(q("10-244-0-9.ns.pod.cluster.local.")); len(res.Answer) != 1 {
		t.Errorf("verified: a Pod's address: %+v", res)
	}
	if res, _ := verified.Resolve(q("10-1-2-3.ns.pod.cluster.local.")); res.Rcode != dns.RcodeNameError {
		t.Errorf("verified: an address no Pod has: %+v", res)
	}
	disabled := New(fixture(true), Config{Zone: "cluster.local", TTL: 30, Pods: PodsDisabled})
	if res, _ := disabled.Resolve(q("10-244-0-9.ns.pod.cluster.local.")); res.Rcode != dns.RcodeNameError {
		t.Errorf("disabled: %+v", res)
	}
}

func TestNamesOutsideOurAuthorityAreLeftToTheCaller(t *testing.T) {
	r := New(fixture(true), Config{Zone: "cluster.local", TTL: 30})
	for _, q := range []dns.Question{
		{Name: "example.org.", Qtype: dns.TypeA},
		{Name: "9.9.9.9.in-addr.arpa.", Qtype: dns.TypePTR},   // not a cluster address
		{Name: "5.0.96.10.in-addr.arpa.", Qtype: dns.TypeTXT}, // not a PTR question
		{Name: "cluster.local.example.org.", Qtype: dns.TypeA},
	} {
		if _, ok := r.Resolve(q); ok {
			t.Errorf("%s %s answered locally", q.Name, dns.TypeToString[q.Qtype])
		}
	}
}

func TestMissingNamesAreServerFailuresUntilSynced(t *testing.T) {
	r := New(fixture(false), Config{Zone: "cluster.local", TTL: 30})
	res, _ := r.Resolve(dns.Question{Name: "nope.ns.svc.cluster.local.", Qtype: dns.TypeA})
	if res.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[res.Rcode])
	}
}

func TestParseReverse(t *testing.T) {
	for name, want := range map[string]string{
		"1.0.96.10.in-addr.arpa.":   "10.96.0.1",
		mustReverse("2001:db8::1"):  "2001:db8::1",
		"01.0.96.10.in-addr.arpa.":  "",
		"0.96.10.in-addr.arpa.":     "",
		"256.0.96.10.in-addr.arpa.": "",
	} {
		got, ok := parseReverse(name)
		if (want == "") == ok || (ok && got.String() != want) {
			t.Errorf("%s: got %v %v, want %q", name, got, ok, want)
		}
	}
}
