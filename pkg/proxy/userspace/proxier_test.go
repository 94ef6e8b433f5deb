package userspace

// Addresses used here: only loopback. Services listen on 127.0.0.1 (ClusterIP) and
// 127.0.0.2-3 (external IPs, NodePorts on 127.0.0.1), backends on 127.0.0.1 at ports the
// kernel hands out. Nothing leaves lo and no route or address is changed.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/svcplane/svcplane/pkg/proxy"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// freePort returns a port nobody listens on for proto at the moment, below the kernel's
// ephemeral range: a port the kernel handed out for a listener and took back would be handed
// to the next outgoing connection of any process on the machine (other test packages run at
// the same time), and the proxier's listen on it would then fail. Ports below the range are
// only ever taken by an explicit bind.
func freePort(t *testing.T, proto corev1.Protocol) int32 {
	t.Helper()
	handedOutMu.Lock()
	defer handedOutMu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if handedOut[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		var err error
		if proto == corev1.ProtocolUDP {
			var c net.PacketConn
			if c, err = net.ListenPacket("udp4", addr); err == nil {
				c.Close()
			}
		} else {
			var l net.Listener
			if l, err = net.Listen("tcp4", addr); err == nil {
				l.Close()
			}
		}
		if err == nil {
			handedOut[port] = true
			return int32(port)
		}
	}
	t.Fatal("no free port between 20000 and 32000 on 127.0.0.1")
	return 0
}

var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{}
)

// harness is a Proxier on loopback plus the Snapshot it was last synced with.
type harness struct {
	t        testing.TB
	p        *Proxier
	services proxy.ServicePortMap
	eps      proxy.EndpointsMap
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	opts.NodeIPs = []netip.Addr{loopback}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 100 * time.Millisecond
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &harness{t: t, p: p, services: proxy.ServicePortMap{}, eps: proxy.EndpointsMap{}}
}

func serviceName(name string, proto corev1.Protocol) proxy.ServicePortName {
	return proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "default", Name: name}, Protocol: proto}
}

// set programs one ServicePort (nil: delete it) with ready endpoints at backends.
func (h *harness) set(name proxy.ServicePortName, sp *proxy.ServicePort, backends ...netip.AddrPort) {
	h.t.Helper()
	if sp == nil {
		delete(h.services, name)
		delete(h.eps, name)
	} else {
		sp.Name, sp.Protocol = name, name.Protocol
		h.services[name] = sp
		var eps []*proxy.Endpoint
		for _, b := range backends {
			eps = append(eps, &proxy.Endpoint{IP: b.Addr(), Port: int32(b.Port()), Ready: true, Serving: true})
		}
		h.eps[name] = eps
	}
	snap := &proxy.Snapshot{Services: h.services, Endpoints: h.eps, Changed: sets.New(name), Synced: true}
	if err := h.p.Sync(snap, false); err != nil {
		h.t.Fatal(err)
	}
}

// tcpBackend answers every connection with its name and then echoes until EOF.
func tcpBackend(t *testing.T, name string) netip.AddrPort {
	return tcpServer(t, func(c net.Conn) {
		fmt.Fprintf(c, "%s\n", name)
		io.Copy(c, c)
	})
}

// tcpServer listens on loopback until the test ends and runs handle for each connection,
// closing it afterwards.
func tcpServer(t *testing.T, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// deadBackend is an address that refuses connections.
func deadBackend(t *testing.T) netip.AddrPort {
	return netip.AddrPortFrom(loopback, uint16(freePort(t, corev1.ProtocolTCP)))
}

// hello connects and returns the backend's name and the open connection.
func hello(t *testing.T, addr netip.AddrPort) (string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return "", nil
	}
	c.SetDeadline(time.Time{})
	return strings.TrimSpace(line), c
}

func helloClose(t *testing.T, addr netip.AddrPort) string {
	name, c := hello(t, addr)
	if c != nil {
		c.Close()
	}
	return name
}

func clusterIP(t *testing.T, proto corev1.Protocol) *proxy.ServicePort {
	return &proxy.ServicePort{ClusterIP: loopback, Port: freePort(t, proto)}
}

func addrOf(sp *proxy.ServicePort) netip.AddrPort {
	return netip.AddrPortFrom(sp.ClusterIP, uint16(sp.Port))
}

func TestTCPSkipsABackendThatRefusesWithoutTheClientNoticing(t *testing.T) {
	h := newHarness(t, Options{})
	name := serviceName("web", corev1.ProtocolTCP)
	sp := clusterIP(t, corev1.ProtocolTCP)
	h.set(name, sp, deadBackend(t), tcpBackend(t, "b"), deadBackend(t))
	for i := range 6 {
		if got := helloClose(t, addrOf(sp)); got != "b" {
			t.Fatalf("connection %d: got %q, want b", i, got)
		}
	}
}

func TestTCPResetsAtOnceWhenNoBackendAnswers(t *testing.T) {
	// Dial timeouts far above the bound below, so that waiting on one cannot pass for a
	// slow machine.
	h := newHarness(t, Options{DialTimeout: 5 * time.Second})
	name := serviceName("web", corev1.ProtocolTCP)
	sp := clusterIP(t, corev1.ProtocolTCP)
	h.set(name, sp, deadBackend(t), deadBackend(t))
	start := time.Now()
	// On loopback the reset may already beat connect's return.
	c, err := net.Dial("tcp", addrOf(sp).String())
	if err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read: got %v, want connection reset", err)
	}
	// Two refused dials take microseconds; anything near the dial timeout means waiting.
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v to fail", d)
	}
	// Without endpoints the same.
	h.set(name, sp)
	c2, err := net.Dial("tcp", addrOf(sp).String())
	if err == nil {
		defer c2.Close()
		_, err = c2.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("no endpoints: got %v, want connection reset", err)
	}
}

func TestTCPHalfCloseLetsTheBackendAnswerAfterTheClientsFIN(t *testing.T) {
	h := newHarness(t, Options{})
	// The backend reads to EOF, then answers with the byte count.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "read %d bytes", n)
	}()
	name := serviceName("sink", corev1.ProtocolTCP)
	sp := clusterIP(t, corev1.ProtocolTCP)
	h.set(name, sp, l.Addr().(*net.TCPAddr).AddrPort())

	c, err := net.Dial("tcp", addrOf(sp).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := bytes.Repeat([]byte("x"), 3<<20)
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("read %d bytes", len(payload)); string(answer) != want {
		t.Errorf("got %q, want %q", answer, want)
	}
}

func TestTCPIdleConnectionsAreClosedAndBusyOnesAreNot(t *testing.T) {
	h := newHarness(t, Options{TCPIdleTimeout: 300 * time.Millisecond})
	name := serviceName("echo", corev1.ProtocolTCP)
	sp := clusterIP(t, corev1.ProtocolTCP)
	h.set(name, sp, tcpBackend(t, "b"))

	_, idle := hello(t, addrOf(sp))
	_, busy := hello(t, addrOf(sp))
	defer busy.Close()
	defer idle.Close()
	start := time.Now()
	buf := make([]byte, 4)
	for time.Since(start) < time.Second {
		busy.SetDeadline(time.Now().Add(time.Second))
		if _, err := busy.Write([]byte("ping")); err != nil {
			t.Fatalf("busy connection: %v", err)
		}
		if _, err := io.ReadFull(busy, buf); err != nil {
			t.Fatalf("busy connection after %v: %v", time.Since(start), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	idle.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := idle.Read(buf); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Errorf("idle connection still open after %v: %v", time.Since(start), err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestConnectionsSurviveChangesAndCloseOnlyWhenTheServiceAsks(t *testing.T) {
	h := newHarness(t, Options{})
	a, b := tcpBackend(t, "a"), tcpBackend(t, "b")
	web := serviceName("web", corev1.ProtocolTCP)
	other := serviceName("other", corev1.ProtocolTCP)
	sp := clusterIP(t, corev1.ProtocolTCP)
	h.set(web, sp, a)
	h.set(other, clusterIP(t, corev1.ProtocolTCP), b)

	_, conn := hello(t, addrOf(sp))
	defer conn.Close()
	echo := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("hi")); err != nil {
			return err
		}
		buf := make([]byte, 2)
		_, err := io.ReadFull(c, buf)
		return err
	}
	// Another Service goes away; this one gains an endpoint, then loses the one in use.
	h.set(other, nil)
	h.set(web, sp, a, b)
	h.set(web, sp, b)
	if err := echo(conn); err != nil {
		t.Fatalf("connection broken by unrelated changes: %v", err)
	}
	if got := helloClose(t, addrOf(sp)); got != "b" {
		t.Errorf("new connection went to %q, want b", got)
	}
	// Asked to, the proxy closes connections to a removed endpoint.
	sp2 := *sp
	sp2.Annotations = map[string]string{annotationCloseOnRemoval: "true"}
	h.set(web, &sp2, b)
	_, toB := hello(t, addrOf(sp))
	defer toB.Close()
	h.set(web, &sp2, a)
	if err := echo(toB); err == nil {
		t.Errorf("connection to the removed endpoint still works")
	}
	// Deleting the Service stops new connections but not a running one.
	_, toA := hello(t, addrOf(sp))
	h.set(web, nil)
	if err := echo(toA); err != nil {
		t.Errorf("connection broken by deleting its Service: %v", err)
	}
	if _, err := net.Dial("tcp", addrOf(sp).String()); err == nil {
		t.Errorf("deleted Service still accepts connections")
	}
}

func TestNodePortAndExternalIPListenersFollowTheService(t *testing.T) {
	h := newHarness(t, Options{})
	name := serviceName("web", corev1.ProtocolTCP)
	sp := clusterIP(t, corev1.ProtocolTCP)
	sp.NodePort = freePort(t, corev1.ProtocolTCP)
	sp.ExternalIPs = []netip.Addr{netip.MustParseAddr("127.0.0.2")}
	h.set(name, sp, tcpBackend(t, "a"))
	for _, addr := range []netip.AddrPort{
		addrOf(sp),
		netip.AddrPortFrom(loopback, uint16(sp.NodePort)),
		netip.AddrPortFrom(sp.ExternalIPs[0], uint16(sp.Port)),
	} {
		if got := helloClose(t, addr); got != "a" {
			t.Errorf("%s: got %q, want a", addr, got)
		}
	}
	moved := *sp
	moved.ExternalIPs = []netip.Addr{netip.MustParseAddr("127.0.0.3")}
	moved.NodePort = 0
	h.set(name, &moved, tcpBackend(t, "a"))
	for _, gone := range []netip.AddrPort{netip.AddrPortFrom(loopback, uint16(sp.NodePort)), netip.AddrPortFrom(sp.ExternalIPs[0], uint16(sp.Port))} {
		if c, err := net.Dial("tcp", gone.String()); err == nil {
			c.Close()
			t.Errorf("%s still listening", gone)
		}
	}
	if got := helloClose(t, netip.AddrPortFrom(moved.ExternalIPs[0], uint16(sp.Port))); got != "a" {
		t.Errorf("new external IP: got %q, want a", got)
	}
}

func TestLeastConnectionSendsNewConnectionsToTheLeastBusyBackend(t *testing.T) {
	h := newHarness(t, Options{Scheduler: "lc"})
	name := serviceName("web", corev1.ProtocolTCP)
	sp := clusterIP(t, corev1.ProtocolTCP)
	h.set(name, sp, tcpBackend(t, "a"), tcpBackend(t, "b"), tcpBackend(t, "c"))
	// Hold two connections; whatever they landed on, the third backend is the idle one.
	seen := map[string]bool{}
	for range 2 {
		n, c := hello(t, addrOf(sp))
		defer c.Close()
		seen[n] = true
	}
	for range 3 {
		n := helloClose(t, addrOf(sp))
		if seen[n] {
			t.Errorf("new connection went to busy backend %s (busy: %v)", n, seen)
		}
		// Closed connections no longer count once the relay has ended.
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSchedulerAnnotationAndAffinity(t *testing.T) {
	h := newHarness(t, Options{})
	name := serviceName("web", corev1.ProtocolTCP)
	sp := clusterIP(t, corev1.ProtocolTCP)
	backends := []netip.AddrPort{tcpBackend(t, "a"), tcpBackend(t, "b"), tcpBackend(t, "c")}
	h.set(name, sp, backends...)
	var got []string
	for range 6 {
		got = append(got, helloClose(t, addrOf(sp)))
	}
	if strings.Join(got, "") != "abcabc" {
		t.Errorf("rr: got %v", got)
	}
	sticky := *sp
	sticky.StickyTimeout = time.Minute
	h.set(name, &sticky, backends...)
	first := helloClose(t, addrOf(sp))
	for range 5 {
		if n := helloClose(t, addrOf(sp)); n != first {
			t.Fatalf("ClientIP affinity: got %s after %s", n, first)
		}
	}
	// dh hashes the Service IP: with affinity off, every connection lands on one backend.
	dh := *sp
	dh.Annotations = map[string]string{annotationScheduler: "dh"}
	h.set(name, &dh, backends...)
	first = helloClose(t, addrOf(sp))
	for range 5 {
		if n := helloClose(t, addrOf(sp)); n != first {
			t.Fatalf("dh: got %s after %s", n, first)
		}
	}
}

// udpBackend answers each datagram with its name, a space and the datagram.
func udpBackend(t *testing.T, name string) (netip.AddrPort, *net.UDPConn) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(append([]byte(name+" "), buf[:n]...), from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).AddrPort(), c
}

func udpAsk(t *testing.T, c *net.UDPConn, to netip.AddrPort, msg string) (string, netip.AddrPort) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort([]byte(msg), to); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("waiting for the answer to %q: %v", msg, err)
	}
	return string(buf[:n]), from
}

func TestUDPFlowsStickToABackendAndAnswerFromTheServiceAddress(t *testing.T) {
	h := newHarness(t, Options{UDPIdleTimeout: 300 * time.Millisecond})
	name := serviceName("dns", corev1.ProtocolUDP)
	sp := clusterIP(t, corev1.ProtocolUDP)
	a, _ := udpBackend(t, "a")
	b, _ := udpBackend(t, "b")
	h.set(name, sp, a, b)

	client := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c1, c2 := client(), client()
	for i := range 3 {
		answer, from := udpAsk(t, c1, addrOf(sp), fmt.Sprint("q", i))
		if answer != fmt.Sprint("a q", i) || from != addrOf(sp) {
			t.Errorf("client 1: got %q from %s, want %q from %s", answer, from, fmt.Sprint("a q", i), addrOf(sp))
		}
	}
	if answer, _ := udpAsk(t, c2, addrOf(sp), "x"); answer != "b x" {
		t.Errorf("client 2: got %q, want the other backend", answer)
	}
	// Removing the backend of a flow moves the flow.
	h.set(name, sp, b)
	if answer, _ := udpAsk(t, c1, addrOf(sp), "y"); answer != "b y" {
		t.Errorf("after removing a: got %q, want b y", answer)
	}
	// After the idle timeout the flow is gone and the next datagram is scheduled anew.
	h.set(name, sp, a, b)
	time.Sleep(700 * time.Millisecond)
	got := map[string]bool{}
	for range 2 {
		answer, _ := udpAsk(t, client(), addrOf(sp), "z")
		got[answer] = true
	}
	if !got["a z"] || !got["b z"] {
		t.Errorf("new flows after idle: got %v, want both backends", got)
	}
}

// parseProxyHeader reads a PROXY protocol header of either version, independently of the
// encoder, and returns source and destination.
func parseProxyHeader(r *bufio.Reader) (src, dst netip.AddrPort, err error) {
	sig, err := r.Peek(12)
	if err != nil {
		return src, dst, err
	}
	if bytes.Equal(sig, []byte("\r\n\r\n\x00\r\nQUIT\n")) {
		head := make([]byte, 16)
		if _, err := io.ReadFull(r, head); err != nil {
			return src, dst, err
		}
		if head[12] != 0x21 {
			return src, dst, fmt.Errorf("version/command %#x", head[12])
		}
		body := make([]byte, binary.BigEndian.Uint16(head[14:]))
		if _, err := io.ReadFull(r, body); err != nil {
			return src, dst, err
		}
		n := 4
		if head[13]>>4 == 2 {
			n = 16
		}
		s, _ := netip.AddrFromSlice(body[:n])
		d, _ := netip.AddrFromSlice(body[n : 2*n])
		return netip.AddrPortFrom(s, binary.BigEndian.Uint16(body[2*n:])), netip.AddrPortFrom(d, binary.BigEndian.Uint16(body[2*n+2:])), nil
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return src, dst, err
	}
	f := strings.Fields(line)
	if len(f) != 6 || f[0] != "PROXY" || (f[1] != "TCP4" && f[1] != "TCP6") {
		return src, dst, fmt.Errorf("bad v1 header %q", line)
	}
	addrPort := func(ip, port string) (netip.AddrPort, error) {
		a, err := netip.ParseAddr(ip)
		if err != nil || a.Is4() != (f[1] == "TCP4") {
			return netip.AddrPort{}, fmt.Errorf("bad %s address %q in %q", f[1], ip, line)
		}
		p, err := strconv.ParseUint(port, 10, 16)
		return netip.AddrPortFrom(a, uint16(p)), err
	}
	src, err = addrPort(f[2], f[4])
	if err == nil {
		dst, err = addrPort(f[3], f[5])
	}
	return src, dst, err
}

func TestProxyProtocolTellsTheBackendTheClientAddress(t *testing.T) {
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			h := newHarness(t, Options{})
			l, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			type result struct {
				src, dst netip.AddrPort
				rest     string
				err      error
			}
			results := make(chan result, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					results <- result{err: err}
					return
				}
				defer c.Close()
				r := bufio.NewReader(c)
				src, dst, err := parseProxyHeader(r)
				rest, _ := r.ReadString('\n')
				results <- result{src, dst, rest, err}
			}()
			name := serviceName("pp", corev1.ProtocolTCP)
			sp := clusterIP(t, corev1.ProtocolTCP)
			sp.Annotations = map[string]string{annotationProxyProtocol: version}
			h.set(name, sp, l.Addr().(*net.TCPAddr).AddrPort())
			c, err := net.Dial("tcp", addrOf(sp).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "hello\n")
			var r result
			select {
			case r = <-results:
			case <-time.After(5 * time.Second):
				t.Fatal("backend got nothing")
			}
			if r.err != nil {
				t.Fatal(r.err)
			}
			client := c.LocalAddr().(*net.TCPAddr).AddrPort()
			if r.src != client || r.dst != addrOf(sp) || r.rest != "hello\n" {
				t.Errorf("got %s → %s then %q; want %s → %s then hello", r.src, r.dst, r.rest, client, addrOf(sp))
			}
		})
	}
}

func TestProxyProtocolV2PrefixesEveryUDPDatagram(t *testing.T) {
	h := newHarness(t, Options{})
	backend, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	name := serviceName("pp", corev1.ProtocolUDP)
	sp := clusterIP(t, corev1.ProtocolUDP)
	sp.Annotations = map[string]string{annotationProxyProtocol: "v2"}
	h.set(name, sp, backend.LocalAddr().(*net.UDPAddr).AddrPort())
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(addrOf(sp)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{"one", "two"} {
		c.Write([]byte(msg))
		backend.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 2048)
		n, _, err := backend.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(bytes.NewReader(buf[:n]))
		src, dst, err := parseProxyHeader(r)
		rest, _ := io.ReadAll(r)
		if err != nil || src != c.LocalAddr().(*net.UDPAddr).AddrPort() || dst != addrOf(sp) || string(rest) != msg {
			t.Errorf("datagram %q: got %s → %s, %q, %v", msg, src, dst, rest, err)
		}
	}
}

func TestManyConcurrentConnections(t *testing.T) {
	// A generous dial timeout: 200 handshakes at once on a loaded machine (or under -race)
	// can take longer than the harness's 100 ms, and this test is not about timeouts.
	h := newHarness(t, Options{DialTimeout: time.Second})
	name := serviceName("web", corev1.ProtocolTCP)
	sp := clusterIP(t, corev1.ProtocolTCP)
	h.set(name, sp, tcpBackend(t, "a"), tcpBackend(t, "b"))
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Go(func() {
			c, err := net.Dial("tcp", addrOf(sp).String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReader(c)
			if _, err := r.ReadString('\n'); err != nil {
				errs <- err
				return
			}
			msg := bytes.Repeat([]byte("z"), 100000)
			go c.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(r, got); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkNewConnection measures connect, first byte and close through the proxy on
// loopback against the same backend directly, for profiling the per-connection path.
func BenchmarkNewConnection(b *testing.B) {
	backend := tcpBackendB(b)
	run := func(b *testing.B, addr string) {
		buf := make([]byte, 2)
		for b.Loop() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, backend.String()) })
	b.Run("proxied", func(b *testing.B) {
		p, err := New(Options{NodeIPs: []netip.Addr{loopback}})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		h := &harness{t: b, p: p, services: proxy.ServicePortMap{}, eps: proxy.EndpointsMap{}}
		sp := &proxy.ServicePort{ClusterIP: loopback, Port: freePortB(b)}
		h.set(serviceName("bench", corev1.ProtocolTCP), sp, backend)
		run(b, addrOf(sp).String())
	})
}

func tcpBackendB(b *testing.B) netip.AddrPort {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("a\n"))
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

func freePortB(b *testing.B) int32 {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func TestFullSyncRemovesServicesMissingFromTheSnapshot(t *testing.T) {
	h := newHarness(t, Options{})
	keep, drop := serviceName("keep", corev1.ProtocolTCP), serviceName("drop", corev1.ProtocolTCP)
	keepSP, dropSP := clusterIP(t, corev1.ProtocolTCP), clusterIP(t, corev1.ProtocolTCP)
	h.set(keep, keepSP, tcpBackend(t, "k"))
	h.set(drop, dropSP, tcpBackend(t, "d"))
	// A restarted informer view without "drop": a full sync must close its listener even
	// though the Snapshot names no change.
	snap := &proxy.Snapshot{
		Services:  proxy.ServicePortMap{keep: h.services[keep]},
		Endpoints: proxy.EndpointsMap{keep: h.eps[keep]},
		Changed:   sets.New[proxy.ServicePortName](),
		Synced:    true,
	}
	if err := h.p.Sync(snap, true); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", addrOf(dropSP).String()); err == nil {
		c.Close()
		t.Errorf("dropped Service still listening")
	}
	if got := helloClose(t, addrOf(keepSP)); got != "k" {
		t.Errorf("kept Service: got %q", got)
	}
}

func TestInvalidAnnotationsFallBackToTheDefaults(t *testing.T) {
	sp := &proxy.ServicePort{Annotations: map[string]string{
		annotationScheduler:      "fastest",
		annotationSchedulerFlags: "sh-port,bogus",
		annotationProxyProtocol:  "v3",
		annotationCloseOnRemoval: "yes please",
	}}
	cfg, errs := configFor(sp, "wlc")
	if cfg.scheduler != "wlc" || cfg.proxyProtocol != proxyProtocolNone || cfg.closeOnRemoval || !cfg.schedulerOpts.SourcePort {
		t.Errorf("got %+v", cfg)
	}
	if len(errs) != 4 {
		t.Errorf("got %d errors, want one per bad annotation: %v", len(errs), errs)
	}
}

func TestProxyProtocolV1DescribesWhatItCannotAsUnknown(t *testing.T) {
	v4 := netip.MustParseAddrPort("10.244.1.5:40000")
	v6 := netip.MustParseAddrPort("[fd00::5]:40000")
	svc6 := netip.MustParseAddrPort("[fd00:96::1]:80")
	for _, tc := range []struct {
		client, dest netip.AddrPort
		want         string
	}{
		{v4, netip.MustParseAddrPort("10.96.0.1:80"), "PROXY TCP4 10.244.1.5 10.96.0.1 40000 80\r\n"},
		{v6, svc6, "PROXY TCP6 fd00::5 fd00:96::1 40000 80\r\n"},
		{v4, svc6, "PROXY UNKNOWN\r\n"},
		// A dual-stack socket reports IPv4 clients as IPv4-mapped addresses.
		{netip.MustParseAddrPort("[::ffff:10.244.1.5]:40000"), netip.MustParseAddrPort("[::ffff:10.96.0.1]:80"), "PROXY TCP4 10.244.1.5 10.96.0.1 40000 80\r\n"},
	} {
		if got := string(appendProxyHeader(nil, proxyProtocolV1, false, tc.client, tc.dest)); got != tc.want {
			t.Errorf("%s → %s: got %q, want %q", tc.client, tc.dest, got, tc.want)
		}
	}
}

// dialFrom connects from src to addr and returns the backend's name, "" when the proxy
// closed the connection instead.
func dialFrom(t *testing.T, src netip.Addr, addr netip.AddrPort) string {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
	c, err := d.Dial("tcp", addr.String())
	if errors.Is(err, syscall.ECONNRESET) {
		// On loopback the proxy's reset can come before connect(2) has reported success.
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("from %s: neither answered nor closed within 1s", src)
		}
		return ""
	}
	return strings.TrimSpace(line)
}

func TestLoadBalancerSourceRangesCloseOtherClientsAtOnce(t *testing.T) {
	h := newHarness(t, Options{}) // the node is 127.0.0.1
	name := serviceName("fenced", corev1.ProtocolTCP)
	sp := clusterIP(t, corev1.ProtocolTCP)
	lb := netip.MustParseAddr("127.0.0.4")
	sp.LoadBalancerIPs = []netip.Addr{lb}
	sp.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")}
	sp.ExternalIPs = []netip.Addr{netip.MustParseAddr("127.0.0.2")}
	h.set(name, sp, tcpBackend(t, "a"))
	lbAddr := netip.AddrPortFrom(lb, uint16(sp.Port))
	for _, tc := range []struct {
		src  string
		addr netip.AddrPort
		want string
	}{
		{"127.0.0.5", lbAddr, "a"},
		{"127.0.0.6", lbAddr, ""},
		{"127.0.0.4", lbAddr, ""}, // the node's own connection, and the node is not in a range
		// Only LoadBalancer IPs are restricted, as upstream.
		{"127.0.0.6", addrOf(sp), "a"},
		{"127.0.0.6", netip.AddrPortFrom(sp.ExternalIPs[0], uint16(sp.Port)), "a"},
	} {
		start := time.Now()
		if got := dialFrom(t, netip.MustParseAddr(tc.src), tc.addr); got != tc.want {
			t.Errorf("%s → %s: got %q, want %q", tc.src, tc.addr, got, tc.want)
		}
		// dialFrom waits a second for an answer; a proxy that did not close would use it all.
		if tc.want == "" && time.Since(start) > 700*time.Millisecond {
			t.Errorf("%s → %s: closed after %v, want at once", tc.src, tc.addr, time.Since(start))
		}
	}

	// A range holding the node admits the LB IP as a source: the node reaching its own
	// LB IP (a local address) comes from it.
	withNode := *sp
	withNode.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/30")}
	h.set(name, &withNode, tcpBackend(t, "a"))
	if got := dialFrom(t, lb, lbAddr); got != "a" {
		t.Errorf("node via its LB IP with the node in range: got %q, want a", got)
	}
	if got := dialFrom(t, netip.MustParseAddr("127.0.0.6"), lbAddr); got != "" {
		t.Errorf("outsider with the node in range: got %q, want closed", got)
	}

	// Without ranges everyone is admitted, on the same listener address.
	open := *sp
	open.LoadBalancerSourceRanges = nil
	h.set(name, &open, tcpBackend(t, "a"))
	if got := dialFrom(t, netip.MustParseAddr("127.0.0.6"), lbAddr); got != "a" {
		t.Errorf("no ranges: got %q, want a", got)
	}
}
