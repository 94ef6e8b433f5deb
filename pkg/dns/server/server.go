// Package server is the cluster DNS server: it listens on UDP and TCP, answers names of the
// cluster zone (and reverse names of cluster addresses) from package resolver, forwards every
// other question to the upstream resolvers through a cache, and serves /health, /ready and
// /metrics over HTTP.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/miekg/dns"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/dns/resolver"
)

// advertisedUDPSize is the EDNS0 buffer size we offer: the size the DNS flag day 2020 agreed
// on, which avoids IP fragmentation on any common path.
const advertisedUDPSize = 1232

// Config is what the server needs besides its resolver.
type Config struct {
	// Listen is a list of host:port addresses; each gets a UDP and a TCP listener.
	Listen []string
	// Upstreams are host:port addresses of resolvers for names outside the cluster.
	Upstreams []string
	// ForwardTimeout bounds one forwarded question, all upstreams included.
	ForwardTimeout time.Duration
	// HealthListen, if set, is where /health, /ready and /metrics are served.
	HealthListen string
}

// Server answers DNS questions. Listen binds every socket (so a caller learns of a taken port at
// once); Serve then answers until its context ends.
type Server struct {
	cfg      Config
	resolver *resolver.Resolver
	fwd      *forwarder

	mu        sync.Mutex
	packet    []net.PacketConn
	stream    []net.Listener
	health    net.Listener
	dnsServer []*dns.Server
}

// New returns a server; nothing is bound until Listen.
func New(res *resolver.Resolver, cfg Config) *Server {
	registerMetrics()
	if cfg.ForwardTimeout == 0 {
		cfg.ForwardTimeout = 2 * time.Second
	}
	return &Server{cfg: cfg, resolver: res, fwd: newForwarder(cfg.Upstreams, cfg.ForwardTimeout)}
}

// Listen binds the DNS and health sockets. On error nothing stays bound.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lc net.ListenConfig
	for _, addr := range s.cfg.Listen {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			s.closeLocked()
			return fmt.Errorf("listening for DNS on udp %s: %w", addr, err)
		}
		s.packet = append(s.packet, pc)
		// TCP on the port UDP got, so that ":0" yields one port for both.
		tcpAddr := pc.LocalAddr().String()
		l, err := lc.Listen(context.Background(), "tcp", tcpAddr)
		if err != nil {
			s.closeLocked()
			return fmt.Errorf("listening for DNS on tcp %s: %w", tcpAddr, err)
		}
		s.stream = append(s.stream, l)
	}
	if s.cfg.HealthListen != "" {
		l, err := lc.Listen(context.Background(), "tcp", s.cfg.HealthListen)
		if err != nil {
			s.closeLocked()
			return fmt.Errorf("listening for DNS health checks on %s: %w", s.cfg.HealthListen, err)
		}
		s.health = l
	}
	return nil
}

func (s *Server) closeLocked() {
	for _, pc := range s.packet {
		pc.Close()
	}
	for _, l := range s.stream {
		l.Close()
	}
	if s.health != nil {
		s.health.Close()
	}
	s.packet, s.stream, s.health = nil, nil, nil
}

// Addrs returns the bound UDP addresses (each has a TCP listener on the same port).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, pc := range s.packet {
		out = append(out, pc.LocalAddr())
	}
	return out
}

// HealthAddr returns the bound health address, or nil.
func (s *Server) HealthAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.health == nil {
		return nil
	}
	return s.health.Addr()
}

// Serve answers on the sockets bound by Listen until ctx ends; it returns the first serving error.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	errc := make(chan error, len(s.packet)+len(s.stream)+1)
	for _, pc := range s.packet {
		srv := &dns.Server{PacketConn: pc, Handler: s, UDPSize: dns.MaxMsgSize}
		s.dnsServer = append(s.dnsServer, srv)
		go func() { errc <- srv.ActivateAndServe() }()
	}
	for _, l := range s.stream {
		srv := &dns.Server{Listener: l, Handler: s, ReadTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }}
		s.dnsServer = append(s.dnsServer, srv)
		go func() { errc <- srv.ActivateAndServe() }()
	}
	var hs *http.Server
	if s.health != nil {
		hs = &http.Server{Handler: s.healthMux(), ReadHeaderTimeout: 5 * time.Second}
		health := s.health
		go func() {
			if err := hs.Serve(health); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	servers := s.dnsServer
	s.mu.Unlock()
	klog.InfoS("DNS server listening", "addresses", s.Addrs(), "zone", s.resolver.Zone(), "upstreams", s.cfg.Upstreams)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, srv := range servers {
		srv.Shutdown()
	}
	if hs != nil {
		hs.Close()
	}
	return err
}

func (s *Server) healthMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "OK") })
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !s.resolver.Ready() {
			http.Error(w, "informers not synced", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "OK")
	})
	mux.Handle("/metrics", legacyregistry.Handler())
	return mux
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	start := time.Now()
	reply, source := s.reply(req)
	_, isTCP := w.RemoteAddr().(*net.TCPAddr)
	fit(reply, req, isTCP)
	if err := w.WriteMsg(reply); err != nil {
		klog.V(4).InfoS("Writing DNS reply", "client", w.RemoteAddr(), "err", err)
	}
	qtype := "none"
	if len(req.Question) == 1 {
		qtype = typeLabel(req.Question[0].Qtype)
	}
	requests.WithLabelValues(qtype, dns.RcodeToString[reply.Rcode], source).Inc()
	latency.WithLabelValues(source).Observe(time.Since(start).Seconds())
}

// typeLabel keeps the metric's cardinality bounded: only common types get their own label.
func typeLabel(t uint16) string {
	switch t {
	case dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR, dns.TypeCNAME, dns.TypeTXT, dns.TypeSOA,
		dns.TypeNS, dns.TypeMX, dns.TypeANY, dns.TypeHTTPS, dns.TypeSVCB:
		return dns.TypeToString[t]
	}
	return "other"
}

func (s *Server) reply(req *dns.Msg) (*dns.Msg, string) {
	m := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery {
		m.SetRcode(req, dns.RcodeNotImplemented)
		return m, "cluster"
	}
	if len(req.Question) != 1 {
		m.SetRcodeFormatError(req)
		return m, "cluster"
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		m.SetRcode(req, dns.RcodeBadVers)
		m.SetEdns0(advertisedUDPSize, false)
		return m, "cluster"
	}
	if res, ok := s.resolver.Resolve(req.Question[0]); ok {
		m.SetReply(req)
		m.Authoritative = true
		m.RecursionAvailable = true
		m.Rcode = res.Rcode
		m.Answer, m.Ns, m.Extra = res.Answer, res.Ns, res.Extra
		return m, "cluster"
	}
	reply, cached, err := s.fwd.forward(context.Background(), req)
	if err != nil {
		klog.V(2).InfoS("Forwarding DNS question failed", "question", req.Question[0].String(), "err", err)
		m.SetRcode(req, dns.RcodeServerFailure)
		m.RecursionAvailable = true
		return m, "forward"
	}
	if cached {
		return reply, "cache"
	}
	return reply, "forward"
}

// fit sets the reply's EDNS0 record and truncates it to what the client can take: 512 bytes over
// UDP without EDNS0, the client's advertised size (at least 512) with it, 64 KiB over TCP.
func fit(reply, req *dns.Msg, isTCP bool) {
	size := dns.MinMsgSize
	// A forwarded reply carries the upstream's OPT; ours replaces it.
	extra := reply.Extra[:0:0]
	for _, rr := range reply.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	reply.Extra = extra
	if opt := req.IsEdns0(); opt != nil {
		reply.SetEdns0(advertisedUDPSize, false)
		if s := int(opt.UDPSize()); s > size {
			size = s
		}
	}
	if isTCP {
		size = dns.MaxMsgSize
	}
	reply.Truncate(size)
}
