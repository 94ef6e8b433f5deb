package userspace

import (
	"context"
	"errors"
	"io"
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
		go p.handleTCP(l, conn)
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

// relay copies both ways and calls done when both directions have ended. io.Copy between two
// *net.TCPConn uses splice(2) on Linux, so the payload moves between the sockets through a
// kernel pipe without entering user space. A side's EOF becomes a FIN on the other
// (half-close: a client may shut its writing side and still read the answer); an error on
// either side resets both.
//
// Each direction gets a fresh goroutine and the caller's returns: the caller's stack grew
// while dialing, and an idle connection should hold only two small stacks.
func (s *tcpSession) relay(idle time.Duration, done func()) {
	if idle > 0 {
		// Armed only after the field is set, so the callback always sees the timer.
		s.idle = idle
		s.watchdog = time.AfterFunc(time.Hour, s.checkIdle)
		s.watchdog.Reset(idle)
	}
	var remaining atomic.Int32
	remaining.Store(2)
	finish := func() {
		if remaining.Add(-1) > 0 {
			return
		}
		if s.watchdog != nil {
			s.watchdog.Stop()
		}
		s.closeOnce.Do(func() {
			s.client.Close()
			s.backend.Close()
		})
		done()
	}
	go func() {
		s.copyHalf(s.backend, s.client)
		finish()
	}()
	go func() {
		s.copyHalf(s.client, s.backend)
		finish()
	}()
}

func (s *tcpSession) copyHalf(dst, src *net.TCPConn) {
	_, err := io.Copy(dst, src)
	if err != nil {
		s.Close()
		return
	}
	dst.CloseWrite()
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

// listenControl lets listeners bind Service IPs before (or without) the kernel knowing them as
// local: IP_FREEBIND decouples the order of route and listener setup in a sync.
func listenControl(network, address string, c syscall.RawConn) error {
	var sockErr error
	err := c.Control(func(fd uintptr) {
		if network == "tcp6" || network == "udp6" {
			sockErr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
		} else {
			sockErr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
		}
	})
	if err != nil {
		return err
	}
	return sockErr
}
