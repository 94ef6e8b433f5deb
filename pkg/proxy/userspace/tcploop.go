package userspace

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/proxy/schedule"
)

// TCP on the event loops (eventloop.go): the listener is watched by every loop (EPOLLEXCLUSIVE:
// one is woken per connection), the loop that accepts a connection owns it from then on.
// It dials the backend with a non-blocking connect, retries another backend on failure or
// timeout, sends the PROXY header and relays small messages both ways through the loop's one
// buffer. What the loop does not do, it hands over to the goroutine relay of tcp.go: a read
// that fills the buffer (bulk, which splice then carries) or a write the peer cannot take at
// once (a slow reader, which a goroutine can wait for without the loop holding data).

// openLoopListener opens a listening socket on addr, configured as listenControl configures
// Go's listeners (IP_FREEBIND, keep-alive inherited by accepted sockets), and has every loop
// accept on it. The returned func stops the loops watching it, then closes it.
func (p *Proxier) openLoopListener(l *listener) (func() error, error) {
	fd, err := listenSocket(l.key.addr)
	if err != nil {
		return nil, err
	}
	ll := &loopListener{p: p, l: l, fd: fd}
	for _, lp := range p.loops {
		var werr error
		h := &loopAcceptor{ll: ll, lp: lp}
		lp.call(func() { werr = lp.watch(fd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE, h) })
		if werr != nil {
			ll.close()
			return nil, werr
		}
	}
	return ll.close, nil
}

func listenSocket(addr netip.AddrPort) (int, error) {
	family, network := unix.AF_INET, "tcp4"
	if addr.Addr().Is6() {
		family, network = unix.AF_INET6, "tcp6"
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("listening on %s: %w", addr, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail(err)
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return fail(err)
		}
	}
	if err := setListenOptions(network, fd); err != nil {
		return fail(err)
	}
	if err := unix.Bind(fd, sockaddrOf(addr)); err != nil {
		return fail(err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		return fail(err)
	}
	return fd, nil
}

func sockaddrOf(a netip.AddrPort) unix.Sockaddr {
	if a.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(a.Port()), Addr: a.Addr().As16()}
}

// loopListener is a listening socket shared by the loops.
type loopListener struct {
	p  *Proxier
	l  *listener
	fd int
	// closed is set before the loops forget fd and it is closed; read in the loops only.
	closed atomic.Bool
}

func (ll *loopListener) close() error {
	ll.closed.Store(true)
	for _, lp := range ll.p.loops {
		lp.call(func() {
			if e, ok := lp.handlers[int32(ll.fd)]; ok {
				if a, ok := e.h.(*loopAcceptor); ok && a.ll == ll {
					lp.forget(ll.fd)
				}
			}
		})
	}
	return unix.Close(ll.fd)
}

// loopAcceptor is one loop's view of a listener.
type loopAcceptor struct {
	ll *loopListener
	lp *eventLoop
	// backoff is the pause after accept failed for lack of resources (out of file
	// descriptors and the like), doubling while it keeps failing.
	backoff time.Duration
}

// acceptBatch bounds how many connections one wake-up accepts, so one busy listener cannot
// starve the loop's other sockets.
const acceptBatch = 32

func (a *loopAcceptor) onEvent(fd int, events uint32) {
	l := a.ll.l
	for range acceptBatch {
		var sa unix.RawSockaddrAny
		salen := uint32(unsafe.Sizeof(sa))
		r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen)),
			unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		if e == unix.EINTR || e == unix.ECONNABORTED {
			continue
		}
		if e != 0 {
			if e != unix.EAGAIN {
				a.pause(fd, e)
			}
			return
		}
		a.backoff = 0
		cfd := int(r)
		client := addrPortOfRaw(&sa)
		if !l.allows(client) {
			resetClose(cfd)
			continue
		}
		// Go's accepted sockets get TCP_NODELAY; so do ours (small messages are forwarded
		// whole, at once).
		setsockoptRaw(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		c := &loopConn{lp: a.lp, p: a.ll.p, l: l, svc: l.svc, client: cfd, backend: -1,
			clientAddr: client, dest: l.key.addr, timeout: a.ll.p.opts.DialTimeout}
		c.timer.index = -1
		c.timer.fire = c.onTimer
		c.lp.owned[c] = struct{}{}
		c.dial()
	}
}

// pause stops accepting for a while after accept failed with e (out of file descriptors and
// the like): the listener stays readable, and the loop would otherwise spin on it.
func (a *loopAcceptor) pause(fd int, e error) {
	l := a.ll.l
	a.backoff = min(max(2*a.backoff, 5*time.Millisecond), time.Second)
	klog.ErrorS(e, "Accepting a connection", "service", l.svc.name, "address", l.key.addr, "pause", a.backoff)
	a.lp.forget(fd)
	time.AfterFunc(a.backoff, func() {
		a.lp.post(func() {
			if !a.ll.closed.Load() {
				if err := a.lp.watch(fd, unix.EPOLLIN|unix.EPOLLEXCLUSIVE, a); err != nil {
					klog.ErrorS(err, "Resuming accepting", "service", l.svc.name, "address", l.key.addr)
				}
			}
		})
	})
}

func addrPortOfRaw(sa *unix.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case unix.AF_INET:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := in.Port>>8 | in.Port<<8
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), port)
	case unix.AF_INET6:
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		port := in.Port>>8 | in.Port<<8
		return netip.AddrPortFrom(netip.AddrFrom16(in.Addr), port)
	}
	return netip.AddrPort{}
}

// loopConn is one proxied connection owned by a loop.
type loopConn struct {
	lp               *eventLoop
	p                *Proxier
	l                *listener
	svc              *service
	client, backend  int // -1 once closed or handed over
	clientAddr, dest netip.AddrPort

	state loopConnState
	b     *schedule.Backend
	// failed are the backends this connection tried; timeout is the next attempt's bound.
	failed   []*schedule.Backend
	attempts int
	timeout  time.Duration
	timer    loopTimer
	// clientEOF and backendEOF: that side has sent its FIN (we read EOF from it).
	clientEOF, backendEOF bool
}

type loopConnState uint8

const (
	loopDialing loopConnState = iota
	loopRelaying
	loopDone
)

func (c *loopConn) udp() bool { return false }

// Close aborts the connection (endpoint removed, proxy stopping); safe from any goroutine.
func (c *loopConn) Close() error {
	c.lp.post(c.abort)
	return nil
}

// dial starts a connection attempt to the next backend, or resets the client when none is
// left.
func (c *loopConn) dial() {
	for c.attempts < c.p.opts.DialAttempts {
		c.attempts++
		b := c.svc.pool(c.l.external).Select(schedule.Conn{Client: c.clientAddr, Dest: c.dest, Skip: c.skip})
		if b == nil {
			break
		}
		b.AddInactive(1)
		c.b = b
		fd, err := connectNonblocking(b.Addr)
		if err == nil {
			c.backend = fd
			err = c.lp.watch(fd, unix.EPOLLOUT, c)
			if err == nil {
				c.lp.schedule(&c.timer, time.Now().Add(c.timeout))
				return
			}
		}
		c.dialFailed(err)
	}
	// No endpoint, or none answered: reset so the client fails at once, as the nftables
	// mode's reject does, instead of waiting for a timeout.
	c.state = loopDone
	delete(c.lp.owned, c)
	resetClose(c.client)
	c.client = -1
}

func (c *loopConn) skip(b *schedule.Backend) bool {
	for _, f := range c.failed {
		if f == b {
			return true
		}
	}
	return false
}

// dialFailed forgets the current attempt; the caller tries the next backend.
func (c *loopConn) dialFailed(err error) {
	klog.V(2).InfoS("Backend did not accept, trying another", "backend", c.b.Addr, "client", c.clientAddr, "err", err)
	if c.backend >= 0 {
		c.lp.closeFD(c.backend)
		c.backend = -1
	}
	c.b.AddInactive(-1)
	c.failed = append(c.failed, c.b)
	c.b = nil
	c.timeout *= 2
}

// connectNonblocking starts a TCP connection to addr, with the keep-alive settings of
// backend connections (probe after keepAliveIdle, every keepAliveInterval, the system's
// count) and TCP_NODELAY.
func connectNonblocking(addr netip.AddrPort) (int, error) {
	family := unix.AF_INET
	if addr.Addr().Is6() {
		family = unix.AF_INET6
	}
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	fd := int(r)
	setsockoptRaw(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	setsockoptRaw(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
	setsockoptRaw(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAliveIdle/time.Second))
	setsockoptRaw(fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAliveInterval/time.Second))
	var err error
	if family == unix.AF_INET {
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: addr.Addr().As4()}
		sa.Port = addr.Port()>>8 | addr.Port()<<8
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	} else {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: addr.Addr().As16()}
		sa.Port = addr.Port()>>8 | addr.Port()<<8
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	}
	if e != 0 && e != unix.EINPROGRESS && e != unix.EINTR {
		err = e
	}
	if err != nil {
		rawClose(fd)
		return -1, err
	}
	return fd, nil
}

// onTimer: while dialing, the attempt timed out; while relaying, the idle check is due.
func (c *loopConn) onTimer() {
	switch c.state {
	case loopDialing:
		c.dialFailed(unix.ETIMEDOUT)
		c.dial()
	case loopRelaying:
		c.checkIdle()
	}
}

func (c *loopConn) onEvent(fd int, events uint32) {
	switch c.state {
	case loopDialing:
		if fd == c.backend {
			c.connected()
		}
	case loopRelaying:
		if fd == c.client {
			c.relay(c.client, c.backend, &c.clientEOF, events)
		} else if fd == c.backend {
			c.relay(c.backend, c.client, &c.backendEOF, events)
		}
	}
}

// connected runs when the connecting socket becomes writable: the attempt's outcome is in
// SO_ERROR.
func (c *loopConn) connected() {
	soErr, err := getsockoptRaw(c.backend, unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && soErr != 0 {
		err = unix.Errno(soErr)
	}
	if err != nil {
		c.lp.cancel(&c.timer)
		c.dialFailed(err)
		c.dial()
		return
	}
	if cfg := c.svc.cfg.Load(); cfg.proxyProtocol != proxyProtocolNone {
		header := appendProxyHeader(make([]byte, 0, 64), cfg.proxyProtocol, false, c.clientAddr, c.dest)
		if n, err := rawWrite(uintptr(c.backend), header); err != nil || n < len(header) {
			klog.V(2).InfoS("Writing the PROXY protocol header", "service", c.svc.name, "backend", c.b.Addr, "err", err)
			c.lp.cancel(&c.timer)
			c.b.AddInactive(-1)
			c.b = nil
			c.abort()
			return
		}
	}
	c.b.AddInactive(-1)
	c.b.AddActive(1)
	c.state = loopRelaying
	c.svc.track(c.b, c)
	if err := c.lp.rewatch(c.backend, relayEvents); err != nil {
		c.abort()
		return
	}
	if err := c.lp.watch(c.client, relayEvents, c); err != nil {
		c.abort()
		return
	}
	if idle := c.p.opts.TCPIdleTimeout; idle > 0 {
		c.lp.schedule(&c.timer, time.Now().Add(idle))
	} else {
		c.lp.cancel(&c.timer)
	}
}

// relayEvents are what a relaying side is watched for: readable, and EPOLLRDHUP to learn with
// the data that the peer's FIN is already in (see relay).
const relayEvents = unix.EPOLLIN | unix.EPOLLRDHUP

// relay moves what src has to dst. One read per event (level-triggered: the loop comes back
// if more is waiting), written at once in full, or the connection goes to the goroutine relay.
// When the event says src's FIN has arrived too (EPOLLRDHUP), it reads on to take the EOF and
// pass the FIN on with the data: a server that answers and closes (HTTP with `Connection:
// close`) then has its client see the answer and the end together, and the client closes
// second. Passed on one wake-up later, the FIN often arrived after the client had closed
// first, leaving the client with a TIME_WAIT socket per connection; under wrk that exhausted
// the client's ports within a minute.
func (c *loopConn) relay(src, dst int, srcEOF *bool, events uint32) {
	if *srcEOF {
		// Reading this side is over; an error or hang-up on it now means it is gone.
		if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			c.abort()
		}
		return
	}
	for {
		n, err := rawRead(uintptr(src), c.lp.buf)
		if err == unix.EAGAIN {
			return
		}
		if err != nil {
			c.abort()
			return
		}
		if n == 0 {
			*srcEOF = true
			if c.clientEOF && c.backendEOF {
				c.finish()
				return
			}
			// Half-close: pass the FIN on, stop watching this side for reading (a hang-up
			// or error still wakes us), keep relaying the other way.
			rawShutdownWrite(dst)
			c.lp.rewatch(src, 0)
			return
		}
		written, err := rawWrite(uintptr(dst), c.lp.buf[:n])
		if err != nil && err != unix.EAGAIN {
			c.abort()
			return
		}
		if written < n {
			c.handOver(src, append([]byte(nil), c.lp.buf[written:n]...))
			return
		}
		if n == len(c.lp.buf) {
			c.handOver(src, nil)
			return
		}
		if events&unix.EPOLLRDHUP == 0 {
			return
		}
	}
}

// finish closes a connection both sides have ended; the close passes the last FIN on.
func (c *loopConn) finish() {
	c.end(false)
}

// abort resets both sides (an error, the idle timeout, endpoint removal, the proxy stopping).
func (c *loopConn) abort() {
	if c.state == loopDone {
		return
	}
	c.end(true)
}

func (c *loopConn) end(reset bool) {
	state := c.state
	c.state = loopDone
	delete(c.lp.owned, c)
	c.lp.cancel(&c.timer)
	for _, fd := range []*int{&c.client, &c.backend} {
		if *fd < 0 {
			continue
		}
		if reset {
			setLingerZero(*fd)
		}
		c.lp.closeFD(*fd)
		*fd = -1
	}
	switch state {
	case loopDialing:
		if c.b != nil {
			c.b.AddInactive(-1)
		}
	case loopRelaying:
		c.svc.untrack(c.b, c)
		c.b.AddActive(-1)
	}
}

// checkIdle closes the connection once neither side has sent data for the idle timeout
// (TCP_INFO of the client socket, as the goroutine relay's checkIdle).
func (c *loopConn) checkIdle() {
	idle := c.p.opts.TCPIdleTimeout
	info, err := unix.GetsockoptTCPInfo(c.client, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		c.abort()
		return
	}
	quiet := time.Duration(min(info.Last_data_recv, info.Last_data_sent)) * time.Millisecond
	if quiet >= idle {
		klog.V(4).InfoS("Closing idle connection", "client", c.clientAddr, "idle", quiet)
		c.abort()
		return
	}
	c.lp.schedule(&c.timer, time.Now().Add(idle-quiet))
}

// handOver moves the connection to the goroutine relay (tcp.go), with pending bytes read
// from src that dst has not taken yet. The sockets become *net.TCPConn (a dup each, the
// originals closed), which costs a few system calls once per bulk or slow connection.
func (c *loopConn) handOver(src int, pending []byte) {
	// Before the fds are given away below: which side the pending bytes were read from.
	fromClient := src == c.client
	c.lp.cancel(&c.timer)
	c.lp.forget(c.client)
	c.lp.forget(c.backend)
	client, err1 := tcpConnOf(c.client, "client")
	backend, err2 := tcpConnOf(c.backend, "backend")
	c.client, c.backend = -1, -1
	c.state = loopDone
	delete(c.lp.owned, c)
	b := c.b
	c.svc.untrack(b, c)
	if err := errors.Join(err1, err2); err != nil {
		klog.ErrorS(err, "Handing a connection to the goroutine relay", "service", c.svc.name, "client", c.clientAddr)
		for _, conn := range []*net.TCPConn{client, backend} {
			if conn != nil {
				conn.SetLinger(0)
				conn.Close()
			}
		}
		b.AddActive(-1)
		return
	}
	s := &tcpSession{client: client, backend: backend}
	c.svc.track(b, s)
	// Which directions still run, and which one carries the pending bytes.
	s.handedOver(c.p.opts.TCPIdleTimeout, !c.clientEOF, !c.backendEOF, pending, fromClient, func() {
		c.svc.untrack(b, s)
		b.AddActive(-1)
	})
}

// tcpConnOf turns fd into a *net.TCPConn and closes fd (the conn has its own duplicate).
func tcpConnOf(fd int, name string) (*net.TCPConn, error) {
	f := os.NewFile(uintptr(fd), name)
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("%s socket is not TCP", name)
	}
	return tc, nil
}
