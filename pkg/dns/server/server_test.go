package server

// Every socket here is on 127.0.0.1; the upstream is a fake started by the test.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/svcplane/svcplane/pkg/dns/cache"
	"github.com/svcplane/svcplane/pkg/dns/object"
	"github.com/svcplane/svcplane/pkg/dns/resolver"
)

type upstream struct {
	addr    string
	queries atomic.Int32
	srv     *dns.Server
}

// startUpstream answers A questions with 192.0.2.1 at TTL 60, and every other question with
// NXDOMAIN and an SOA of minimum 5.
func startUpstream(t *testing.T) *upstream {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: pc.LocalAddr().String()}
	u.srv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		u.queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		if q.Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)}}
		} else {
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60}, Ns: "ns.test.", Mbox: "h.test.", Minttl: 5}}
		}
		w.WriteMsg(m)
	})}
	go u.srv.ActivateAndServe()
	t.Cleanup(func() { u.srv.Shutdown() })
	return u
}

func startServer(t *testing.T, ix *cache.Index, upstreams ...string) (*Server, string) {
	t.Helper()
	res := resolver.New(ix, resolver.Config{Zone: "cluster.local", TTL: 30})
	s := New(res, Config{Listen: []string{"127.0.0.1:0"}, Upstreams: upstreams, HealthListen: "127.0.0.1:0", ForwardTimeout: 500 * time.Millisecond})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := s.Addrs()[0].String()
	// Serve starts its goroutines asynchronously; wait until TCP answers.
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatal("server never accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s, addr
}

func bigIndex(endpoints int) *cache.Index {
	ix := cache.New(false)
	ix.SetNamespace("ns")
	ix.SetService(&object.Service{Namespace: "ns", Name: "big", Headless: true})
	s := &object.EndpointSlice{Namespace: "ns", Name: "big-1", Service: "big"}
	for i := range endpoints {
		ip := fmt.Sprintf("10.244.%d.%d", i/250, i%250+1)
		s.Endpoints = append(s.Endpoints, object.Endpoint{Addresses: addrs(ip), Ready: true})
	}
	ix.SetEndpointSlice(s)
	ix.MarkSynced()
	return ix
}

func addrs(s string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(s)} }

func exchange(t *testing.T, network, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 3 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange: %v", network, err)
	}
	return r
}

func TestRepliesFitWhatTheClientCanTake(t *testing.T) {
	_, addr := startServer(t, bigIndex(100))
	q := new(dns.Msg)
	q.SetQuestion("big.ns.svc.cluster.local.", dns.TypeA)

	plain := exchange(t, "udp", addr, q)
	plain.Compress = true // the size on the wire
	if !plain.Truncated || plain.Len() > dns.MinMsgSize {
		t.Errorf("UDP without EDNS0: TC=%v, %d bytes; want TC and at most 512", plain.Truncated, plain.Len())
	}
	if plain.IsEdns0() != nil {
		t.Error("OPT in the reply to a query without one")
	}

	q.SetEdns0(4096, false)
	edns := exchange(t, "udp", addr, q)
	if edns.Truncated || len(edns.Answer) != 100 {
		t.Errorf("UDP with EDNS0 4096: TC=%v, %d answers", edns.Truncated, len(edns.Answer))
	}
	if opt := edns.IsEdns0(); opt == nil || opt.UDPSize() != advertisedUDPSize {
		t.Errorf("reply OPT %v, want one advertising %d", opt, advertisedUDPSize)
	}

	q2 := new(dns.Msg)
	q2.SetQuestion("big.ns.svc.cluster.local.", dns.TypeA)
	tcp := exchange(t, "tcp", addr, q2)
	if tcp.Truncated || len(tcp.Answer) != 100 {
		t.Errorf("TCP: TC=%v, %d answers", tcp.Truncated, len(tcp.Answer))
	}
}

func TestMalformedQueries(t *testing.T) {
	_, addr := startServer(t, bigIndex(1))
	none := new(dns.Msg)
	none.Id = dns.Id()
	if r := exchange(t, "udp", addr, none); r.Rcode != dns.RcodeFormatError {
		t.Errorf("no question: %s, want FORMERR", dns.RcodeToString[r.Rcode])
	}
	update := new(dns.Msg)
	update.SetUpdate("cluster.local.")
	if r := exchange(t, "udp", addr, update); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("UPDATE: %s, want NOTIMP", dns.RcodeToString[r.Rcode])
	}
	v1 := new(dns.Msg)
	v1.SetQuestion("big.ns.svc.cluster.local.", dns.TypeA)
	v1.SetEdns0(1232, false)
	v1.IsEdns0().SetVersion(1)
	if r := exchange(t, "udp", addr, v1); r.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: %s, want BADVERS", dns.RcodeToString[r.Rcode])
	}
}

func TestForwardingCachesAnswersAndKeepsTheClientsID(t *testing.T) {
	up := startUpstream(t)
	_, addr := startServer(t, bigIndex(1), up.addr)
	for i := range 3 {
		q := new(dns.Msg)
		q.SetQuestion("www.example.test.", dns.TypeA)
		r := exchange(t, "udp", addr, q)
		if r.Id != q.Id || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
			t.Fatalf("query %d: %v", i, r)
		}
	}
	q := new(dns.Msg)
	q.SetQuestion("missing.example.test.", dns.TypeTXT)
	for range 2 {
		if r := exchange(t, "udp", addr, q); r.Rcode != dns.RcodeNameError {
			t.Fatalf("negative: %s", dns.RcodeToString[r.Rcode])
		}
	}
	if n := up.queries.Load(); n != 2 {
		t.Errorf("upstream asked %d times, want 2 (one per name, the rest from the cache)", n)
	}
}

func TestAnUnreachableUpstreamGivesAQuickServerFailure(t *testing.T) {
	// A port nothing listens on (the kernel answers port unreachable) and a listener that never
	// answers: both must give SERVFAIL within the forward timeout.
	closed, _ := net.ListenPacket("udp", "127.0.0.1:0")
	closedAddr := closed.LocalAddr().String()
	closed.Close()
	silent, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer silent.Close()
	_, addr := startServer(t, bigIndex(1), closedAddr, silent.LocalAddr().String())
	q := new(dns.Msg)
	q.SetQuestion("www.example.test.", dns.TypeA)
	start := time.Now()
	r := exchange(t, "udp", addr, q)
	if r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("SERVFAIL after %v, want within the 500ms forward timeout", d)
	}
}

func TestReadyOnlyOnceTheIndexIsSynced(t *testing.T) {
	ix := cache.New(false)
	s, _ := startServer(t, ix)
	ready := func() int {
		resp, err := http.Get("http://" + s.HealthAddr().String() + "/ready")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ready(); code != http.StatusServiceUnavailable {
		t.Errorf("before sync: %d", code)
	}
	ix.MarkSynced()
	if code := ready(); code != http.StatusOK {
		t.Errorf("after sync: %d", code)
	}
}

func TestCachedAnswersAge(t *testing.T) {
	c := newAnswerCache(2)
	m := new(dns.Msg)
	m.SetQuestion("a.test.", dns.TypeA)
	m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "a.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)}}
	now := time.Unix(1000, 0)
	k := cacheKeyOf(m)
	c.put(k, m, now)
	if got := c.get(k, now.Add(20*time.Second)); got == nil || got.Answer[0].Header().Ttl != 40 {
		t.Errorf("after 20s: %v, want TTL 40", got)
	}
	if got := c.get(k, now.Add(60*time.Second)); got != nil {
		t.Errorf("after 60s: still cached")
	}
	for i := range 5 {
		m2 := m.Copy()
		m2.Question[0].Name = fmt.Sprintf("n%d.test.", i)
		c.put(cacheKeyOf(m2), m2, now)
	}
	if len(c.entries) > 2 {
		t.Errorf("%d entries, capacity 2", len(c.entries))
	}
}
