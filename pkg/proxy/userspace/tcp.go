package userspace

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/proxy/schedule"
)

// serveTCP accepts connections until the listener is closed. Closing a listener stops new
// connections only: those accepted run on with the service state they started with.
func (p *Proxier) serveTCP(l *listener, ln *net.TCPListener) {
	defer p.wg.Done()
	var backoff time.Duration
	for {
		conn, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: slow down rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			klog.ErrorS(err, "Accepting a connection", "service", l.svc.name, "address", l.key.addr)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !l.allows(addrPortOf(conn.RemoteAddr())) {
			conn.SetLinger(0)
			conn.Close()
			continue
		}
		p.dispatch(acceptedConn{l, conn})
	}
}

// acceptedConn is a client connection waiting for its backend.
type acceptedConn struct {
	l    *listener
	conn *net.TCPConn
}

// handshakeWorkerIdle is how long a handshake worker waits for the next connection before it
// exits.
const handshakeWorkerIdle = 10 * time.Second

// dispatch hands an accepted connection to an idle handshake worker, or starts a new worker
// when all are busy (so a backend that times out never delays other clients). Workers live on
// between connections because dialing takes a deep stack: a goroutine started per
// connection would grow (copy) its stack on every dial, several percent of the CPU a short
// connection costs. The relay goroutines that handleTCP starts stay small.
func (p *Proxier) dispatch(a acceptedConn) {
	select {
	case p.handshakes <- a:
	default:
		go p.handshakeWorker(a)
	}
}

func (p *Proxier) handshakeWorker(a acceptedConn) {
	idle := time.NewTimer(handshakeWorkerIdle)
	defer idle.Stop()
	for {
		p.handleTCP(a.l, a.conn)
		idle.Reset(handshakeWorkerIdle)
		select {
		case a = <-p.handshakes:
		case <-idle.C:
			return
		case <-p.stopped:
			return
		}
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// handleTCP connects the client to a backend and relays until both sides are done.
func (p *Proxier) handleTCP(l *listener, client *net.TCPConn) {
	svc := l.svc
	cfg := svc.cfg.Load()
	clientAddr := addrPortOf(client.RemoteAddr())
	dest := addrPortOf(client.LocalAddr())
	backend, b := p.dialBackend(svc.pool(l.external), schedule.Conn{Client: clientAddr, Dest: dest})
	if backend == nil {
		// No endpoint, or none answered: reset so the client fails at once, as the nftables
		// mode's reject does, instead of waiting for a timeout.
		client.SetLinger(0)
		client.Close()
		return
	}
	if cfg.proxyProtocol != proxyProtocolNone {
		header := appendProxyHeader(make([]byte, 0, 64), cfg.proxyProtocol, false, clientAddr, dest)
		if _, err := backend.Write(header); err != nil {
			klog.V(2).InfoS("Writing the PROXY protocol header", "service", svc.name, "backend", b.Addr, "err", err)
			client.SetLinger(0)
			client.Close()
			backend.Close()
			b.AddInactive(-1)
			return
		}
	}
	b.AddInactive(-1)
	b.AddActive(1)
	s := &tcpSession{client: client, backend: backend}
	svc.track(b, s)
	s.relay(p.opts.TCPIdleTimeout, func() {
		svc.untrack(b, s)
		b.AddActive(-1)
	})
}

// dialBackend tries backends until one accepts: the first attempt waits DialTimeout, each
// further one twice as long (the retry schedule of upstream's userspace proxy), and a backend
// that failed is not tried again for this connection. The chosen backend is returned with
// one inactive connection counted, as IPVS counts a connection being set up.
func (p *Proxier) dialBackend(pool *schedule.Pool, c schedule.Conn) (*net.TCPConn, *schedule.Backend) {
	var failed []*schedule.Backend
	c.Skip = func(b *schedule.Backend) bool {
		for _, f := range failed {
			if f == b {
				return true
			}
		}
		return false
	}
	timeout := p.opts.DialTimeout
	for range p.opts.DialAttempts {
		b := pool.Select(c)
		if b == nil {
			return nil, nil
		}
		b.AddInactive(1)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		// Not Dialer.DialTCP: with no local address it still binds to port 0 first, a
		// system call more per connection and a slower way to pick the source port.
		conn, err := p.dialer.DialContext(ctx, "tcp", b.Addr.String())
		cancel()
		if err == nil {
			return conn.(*net.TCPConn), b
		}
		b.AddInactive(-1)
		klog.V(2).InfoS("Backend did not accept, trying another", "backend", b.Addr, "client", c.Client, "err", err)
		failed = append(failed, b)
		timeout *= 2
	}
	return nil, nil
}

// tcpSession relays one client connection.
type tcpSession struct {
	client, backend *net.TCPConn
	closeOnce       sync.Once
	closed          atomic.Bool
	idle            time.Duration
	watchdog        *time.Timer
	// remaining counts the directions still relaying; done runs when both have ended.
	remaining atomic.Int32
	done      func()
}

func (s *tcpSession) udp() bool { return false }

// Close aborts the session (endpoint removed, idle, proxy stopping).
func (s *tcpSession) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.client.SetLinger(0)
		s.backend.SetLinger(0)
		s.client.Close()
		s.backend.Close()
	})
	return nil
}

// relay copies both ways and calls done when both directions have ended: small messages
// through a pooled buffer (copySmall), bulk data with splice(2), socket → pipe → socket
// without entering user space. A side's EOF becomes a FIN on the other (half-close: a client
// may shut its writing side and still read the answer); an error on either side resets both.
//
// Each direction gets a fresh goroutine and the caller (a handshake worker) returns to its
// loop: its stack grew while dialing, and an idle connection should hold only two small stacks.
func (s *tcpSession) relay(idle time.Duration, done func()) {
	if idle > 0 {
		// Armed only after the field is set, so the callback always sees the timer.
		s.idle = idle
		s.watchdog = time.AfterFunc(time.Hour, s.checkIdle)
		s.watchdog.Reset(idle)
	}
	s.done = done
	s.remaining.Store(2)
	go s.copyHalf(s.backend, s.client, nil)
	go s.copyHalf(s.client, s.backend, nil)
}

// handedOver takes over a connection from an event loop (tcploop.go): the directions that
// still run, and bytes read that the destination has not taken yet (from the client, or
// from the backend).
func (s *tcpSession) handedOver(idle time.Duration, clientToBackend, backendToClient bool, pending []byte, pendingFromClient bool, done func()) {
	if idle > 0 {
		s.idle = idle
		s.watchdog = time.AfterFunc(time.Hour, s.checkIdle)
		s.watchdog.Reset(idle)
	}
	s.done = done
	var n int32
	for _, run := range []bool{clientToBackend, backendToClient} {
		if run {
			n++
		}
	}
	s.remaining.Store(n)
	if clientToBackend {
		var p []byte
		if pendingFromClient {
			p = pending
		}
		go s.copyHalf(s.backend, s.client, p)
	}
	if backendToClient {
		var p []byte
		if !pendingFromClient {
			p = pending
		}
		go s.copyHalf(s.client, s.backend, p)
	}
}

// copyHalf relays one direction until src's EOF or an error, then ends the session if the
// other direction is over too. pending is data already read from src, written first.
func (s *tcpSession) copyHalf(dst, src *net.TCPConn, pending []byte) {
	var err error
	if len(pending) > 0 {
		err = writeAll(dst, pending)
	}
	if err == nil {
		err = copySmall(dst, src)
	}
	if errors.Is(err, errBulk) {
		// dst.ReadFrom(src) splices; it is what io.Copy reaches after two detours
		// (src.WriteTo, then a wrapper), and calling it directly keeps the goroutine's stack
		// small enough that parking in splice does not have to grow it.
		_, err = dst.ReadFrom(src)
	}
	if err != nil {
		s.Close()
	} else {
		// Pass the FIN on; the other direction, if it still runs, goes on. Also when it has
		// ended already and the close below would send this FIN: sending it here, in a raw
		// system call (rawio.go), leaves close(2) no packet to send, so the one call the
		// runtime must watch stays short.
		shutdownWrite(dst)
	}
	if s.remaining.Add(-1) > 0 {
		return
	}
	if s.watchdog != nil {
		s.watchdog.Stop()
	}
	s.closeOnce.Do(func() {
		s.client.Close()
		s.backend.Close()
	})
	s.done()
}

// copyBufferSize is the most copySmall moves at once; a read that fills it means a bulk
// transfer, which splice(2) then carries.
const copyBufferSize = 16 << 10

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// errBulk tells copyHalf that src delivers more than copySmall's buffer at once.
var errBulk = errors.New("bulk transfer")

// copySmall relays src to dst through a buffer while every read fits in copyBufferSize, and
// returns errBulk (all data read so far written) as soon as one does not. Most connections
// carry small messages, and for those a recv/send pair costs the kernel less than splice's
// socket → pipe → socket (in the profile of short connections, splice was the largest
// system-call cost after connect and close, about 30 µs a connection against HAProxy's 16 µs
// for recv and send). The buffer is borrowed only while it holds data: a connection waiting
// for its peer holds none, so idle connections cost no more memory than with splice.
func copySmall(dst, src *net.TCPConn) error {
	raw, err := src.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var buf *[]byte
		var n int
		var readErr error
		err := raw.Read(func(fd uintptr) bool {
			buf = copyBuffers.Get().(*[]byte)
			n, readErr = rawRead(fd, *buf)
			if readErr == unix.EAGAIN {
				copyBuffers.Put(buf)
				buf = nil
				return false // wait until readable, then try again
			}
			return true
		})
		if err == nil {
			err = readErr
		}
		if err != nil || n <= 0 {
			if buf != nil {
				copyBuffers.Put(buf)
			}
			return err // nil at EOF
		}
		err = writeAll(dst, (*buf)[:n])
		copyBuffers.Put(buf)
		if err != nil {
			return err
		}
		if n == copyBufferSize {
			return errBulk
		}
	}
}

// checkIdle closes the session once neither side has sent data for idle. Instead of
// timestamping every read (which splice does not expose) it asks the kernel: TCP_INFO of the
// client socket tells when data last arrived from the client and when it was last sent to it,
// which covers both directions.
func (s *tcpSession) checkIdle() {
	idle := s.idle
	if s.closed.Load() {
		return
	}
	quiet, err := sinceLastData(s.client)
	if err != nil {
		return // the socket is closed: the relay is ending anyway
	}
	if quiet >= idle {
		klog.V(4).InfoS("Closing idle connection", "client", s.client.RemoteAddr(), "idle", quiet)
		s.Close()
		return
	}
	s.watchdog.Reset(idle - quiet)
}

func sinceLastData(c *net.TCPConn) (time.Duration, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var info *unix.TCPInfo
	var sockErr error
	err = raw.Control(func(fd uintptr) {
		info, sockErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err == nil {
		err = sockErr
	}
	if err != nil {
		return 0, err
	}
	ms := min(info.Last_data_recv, info.Last_data_sent)
	return time.Duration(ms) * time.Millisecond, nil
}

// Keep-alive probing, Go's defaults: the first probe after 15 s of silence, then every 15 s,
// nine unanswered probes drop the connection (about 2.5 minutes for a peer that vanished).
const (
	keepAliveIdle     = 15 * time.Second
	keepAliveInterval = 15 * time.Second
	keepAliveCount    = 9
)

// listenControl lets listeners bind Service IPs before (or without) the kernel knowing them as
// local: IP_FREEBIND decouples the order of route and listener setup in a sync.
//
// TCP listeners also get their keep-alive settings here, once: Linux copies them to every
// socket accept(2) returns, which saves the four setsockopt(2) calls Go would otherwise make
// on each accepted connection (the listener is configured with KeepAlive -1 for that).
func listenControl(network, address string, c syscall.RawConn) error {
	var sockErr error
	err := c.Control(func(fd uintptr) { sockErr = setListenOptions(network, int(fd)) })
	if err != nil {
		return err
	}
	return sockErr
}

// setListenOptions sets IP_FREEBIND, and for TCP the keep-alive settings accepted sockets
// inherit; listenControl for Go's listeners, listenSocket for the event loops'.
func setListenOptions(network string, fd int) error {
	var err error
	if network == "tcp6" || network == "udp6" {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
	} else {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
	}
	if err != nil || (network != "tcp4" && network != "tcp6") {
		return err
	}
	for _, o := range []struct{ level, opt, value int }{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAliveIdle / time.Second)},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAliveInterval / time.Second)},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.value); err != nil {
			return err
		}
	}
	return nil
}
