// Package netexec is the test server Pods run when their image is svcplane/testserver or
// agnhost's netexec / serve-hostname: there is no container runtime, so the agent runs the
// svcplane binary itself (`svcplane testserver`). On every port it is given it answers HTTP
// (/hostname, /clientip, /echo?msg=, /env, /healthz) and echoes raw TCP; on the same port
// number it echoes UDP. HTTP and raw TCP share a port by looking at the first bytes a client
// sends: an HTTP method means HTTP, anything else is echoed.
package netexec

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is what `svcplane testserver` was asked for.
type Config struct {
	// Hostname answers /hostname; empty means os.Hostname.
	Hostname string
	// Ports are served for TCP (HTTP or echo) and UDP (echo); empty means 8080.
	Ports []int
	// ServeHostname answers every HTTP path and every UDP datagram with the hostname, as
	// agnhost's serve-hostname does.
	ServeHostname bool
	// Address to bind; empty means all addresses.
	Address string
	// ShutdownDelay keeps the server answering for this long after it is told to stop
	// (SIGTERM), with /healthz failing and keep-alive off, as well-behaved apps do: deleting a
	// Pod and every proxy dropping its endpoint happen concurrently, so a server that exits at
	// once refuses (or black-holes) the new connections proxies still send it. agnhost
	// netexec's --delay-shutdown.
	ShutdownDelay time.Duration
	// Log, when set, gets a line when the server starts and stops and one per HTTP request
	// (probes of /healthz excepted, which would drown the rest), as agnhost netexec logs:
	// it is what `svcplane logs` shows of a test Pod.
	Log io.Writer
}

// Server serves Config until its context ends.
type Server struct {
	cfg     Config
	healthy atomic.Bool
	// stopping is set once the shutdown delay began; /healthz then fails whatever it was told.
	stopping atomic.Bool
	tcp      []net.Listener
	udp      []net.PacketConn
	logMu    sync.Mutex
}

// Listen opens every port, so that a caller knows the server is reachable once it returns.
func Listen(cfg Config) (*Server, error) {
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if len(cfg.Ports) == 0 {
		cfg.Ports = []int{8080}
	}
	s := &Server{cfg: cfg}
	s.healthy.Store(true)
	for _, p := range uniq(cfg.Ports) {
		addr := net.JoinHostPort(cfg.Address, strconv.Itoa(p))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("listening on tcp %s: %w", addr, err)
		}
		s.tcp = append(s.tcp, ln)
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("listening on udp %s: %w", addr, err)
		}
		s.udp = append(s.udp, pc)
	}
	return s, nil
}

func uniq(ports []int) []int {
	seen := map[int]bool{}
	var out []int
	for _, p := range ports {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// Addrs are the bound TCP addresses, in Config.Ports order (useful with port 0 in tests).
func (s *Server) Addrs() []net.Addr {
	var out []net.Addr
	for _, ln := range s.tcp {
		out = append(out, ln.Addr())
	}
	return out
}

// UDPAddrs are the bound UDP addresses.
func (s *Server) UDPAddrs() []net.Addr {
	var out []net.Addr
	for _, pc := range s.udp {
		out = append(out, pc.LocalAddr())
	}
	return out
}

// Close stops listening.
func (s *Server) Close() {
	for _, ln := range s.tcp {
		ln.Close()
	}
	for _, pc := range s.udp {
		pc.Close()
	}
}

// Serve answers until ctx ends and Config.ShutdownDelay has passed after that; requests in
// flight then get a moment to finish.
func (s *Server) Serve(ctx context.Context) error {
	handler := s.handler()
	var wg sync.WaitGroup
	var servers []*http.Server
	var handoffs []*handoffListener
	for _, ln := range s.tcp {
		hl := &handoffListener{addr: ln.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		servers, handoffs = append(servers, srv), append(handoffs, hl)
		wg.Add(2)
		go func() { defer wg.Done(); srv.Serve(hl) }()
		go func() { defer wg.Done(); s.acceptTCP(ln, hl) }()
	}
	for _, pc := range s.udp {
		wg.Add(1)
		go func() { defer wg.Done(); s.serveUDP(pc) }()
	}
	s.logf("Serving HTTP and TCP echo on %v, UDP echo on %v", s.Addrs(), s.UDPAddrs())
	<-ctx.Done()
	s.logf("Stopping (serving %v more)", s.cfg.ShutdownDelay)
	if s.cfg.ShutdownDelay > 0 {
		s.stopping.Store(true)
		// Without keep-alive each client opens a new connection for its next request, which
		// the proxy sends to an endpoint that is not terminating.
		for _, srv := range servers {
			srv.SetKeepAlivesEnabled(false)
		}
		time.Sleep(s.cfg.ShutdownDelay)
	}
	s.Close()
	for _, hl := range handoffs {
		hl.Close()
	}
	drain, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, srv := range servers {
		if srv.Shutdown(drain) != nil {
			srv.Close()
		}
	}
	wg.Wait()
	return nil
}

func (s *Server) acceptTCP(ln net.Listener, http *handoffListener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go s.sniff(conn, http)
	}
}

var httpMethods = [][]byte{[]byte("GET "), []byte("HEAD"), []byte("POST"), []byte("PUT "), []byte("DELE"), []byte("OPTI"), []byte("PATC")}

// sniff waits for the first bytes of a connection and hands it to HTTP or to the echo loop.
func (s *Server) sniff(conn net.Conn, h *handoffListener) {
	br := bufio.NewReader(conn)
	head, err := br.Peek(4)
	if err != nil && len(head) == 0 {
		conn.Close()
		return
	}
	wrapped := &peekedConn{Conn: conn, r: br}
	for _, m := range httpMethods {
		if bytes.HasPrefix(head, m) {
			select {
			case h.conns <- wrapped:
			case <-h.done:
				conn.Close()
			}
			return
		}
	}
	defer conn.Close()
	io.Copy(conn, wrapped)
}

func (s *Server) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 64*1024)
	for {
		n, peer, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		reply := buf[:n]
		if s.cfg.ServeHostname {
			reply = []byte(s.cfg.Hostname)
		}
		pc.WriteTo(reply, peer)
	}
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	text := func(w http.ResponseWriter, body string) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, body)
	}
	mux.HandleFunc("/hostname", func(w http.ResponseWriter, _ *http.Request) { text(w, s.cfg.Hostname) })
	mux.HandleFunc("/clientip", func(w http.ResponseWriter, r *http.Request) { text(w, r.RemoteAddr) })
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) { text(w, r.URL.Query().Get("msg")) })
	mux.HandleFunc("/env", func(w http.ResponseWriter, _ *http.Request) {
		env := os.Environ()
		sort.Strings(env)
		text(w, strings.Join(env, "\n")+"\n")
	})
	// /healthz can be failed on purpose (POST /healthz?fail=true), so tests can flip readiness
	// and liveness without killing the process.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			s.healthy.Store(r.URL.Query().Get("fail") != "true")
		}
		if !s.healthy.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			text(w, "failing on request\n")
			return
		}
		if s.stopping.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			text(w, "shutting down\n")
			return
		}
		text(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.ServeHostname {
			text(w, s.cfg.Hostname)
			return
		}
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		text(w, "NOW: "+time.Now().UTC().Format(time.RFC3339Nano))
	})
	if s.cfg.Log == nil {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			s.logf("%s %s from %s", r.Method, r.URL.RequestURI(), r.RemoteAddr)
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Log == nil {
		return
	}
	line := time.Now().UTC().Format(time.RFC3339) + " " + fmt.Sprintf(format, args...) + "\n"
	s.logMu.Lock()
	defer s.logMu.Unlock()
	io.WriteString(s.cfg.Log, line)
}

// peekedConn replays the sniffed bytes before the rest of the connection.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// handoffListener feeds sniffed HTTP connections to an http.Server.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errors.New("listener closed")
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }
