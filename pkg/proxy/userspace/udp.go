package userspace

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/proxy/schedule"
)

// maxDatagram is the largest UDP payload over IPv4 or IPv6 without jumbograms.
const maxDatagram = 65535

// udpListener serves one Service address over UDP. Each client address gets a flow: a
// connected socket towards the chosen backend whose replies go back to the client from the
// Service address (the listener's socket), so the client sees answers from where it sent.
type udpListener struct {
	conn  *net.UDPConn
	l     *listener
	mu    sync.Mutex
	flows map[netip.AddrPort]*udpFlow
}

type udpFlow struct {
	owner    *udpListener
	svc      *service
	client   netip.AddrPort
	backend  *schedule.Backend
	upstream *net.UDPConn
	header   []byte // PROXY v2 header prepended to each datagram, if asked for
	last     atomic.Int64
	once     sync.Once
}

func (f *udpFlow) udp() bool { return true }

func (f *udpFlow) Close() error {
	f.once.Do(func() {
		f.upstream.Close()
		f.owner.mu.Lock()
		if f.owner.flows[f.client] == f {
			delete(f.owner.flows, f.client)
		}
		f.owner.mu.Unlock()
		f.svc.untrack(f.backend, f)
		f.backend.AddInactive(-1)
	})
	return nil
}

// serveUDP reads client datagrams until the listener is closed, then ends its flows.
func (p *Proxier) serveUDP(u *udpListener) {
	defer p.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, client, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				break
			}
			klog.V(2).InfoS("Reading a UDP datagram", "service", u.l.svc.name, "err", err)
			continue
		}
		if !u.l.allows(client) {
			continue
		}
		f := u.flow(p, client)
		if f == nil {
			continue // no endpoint: dropped, as the client would see an unanswered datagram
		}
		f.last.Store(time.Now().UnixNano())
		out := buf[:n]
		if f.header != nil {
			out = append(append(make([]byte, 0, len(f.header)+n), f.header...), out...)
		}
		if _, err := f.upstream.Write(out); err != nil {
			klog.V(4).InfoS("Forwarding a UDP datagram", "backend", f.backend.Addr, "err", err)
		}
	}
	u.mu.Lock()
	flows := make([]*udpFlow, 0, len(u.flows))
	for _, f := range u.flows {
		flows = append(flows, f)
	}
	u.mu.Unlock()
	for _, f := range flows {
		f.Close()
	}
}

// flow returns the client's flow, creating it with a freshly scheduled backend.
func (u *udpListener) flow(p *Proxier, client netip.AddrPort) *udpFlow {
	u.mu.Lock()
	f := u.flows[client]
	u.mu.Unlock()
	if f != nil {
		return f
	}
	svc := u.l.svc
	cfg := svc.cfg.Load()
	dest := addrPortOf(u.conn.LocalAddr())
	if u.l.key.addr.Addr().IsValid() {
		dest = u.l.key.addr
	}
	b := svc.pool(u.l.external).Select(schedule.Conn{Client: client, Dest: dest})
	if b == nil {
		return nil
	}
	upstream, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(b.Addr))
	if err != nil {
		klog.V(2).InfoS("Opening a UDP flow", "backend", b.Addr, "err", err)
		return nil
	}
	f = &udpFlow{owner: u, svc: svc, client: client, backend: b, upstream: upstream}
	if cfg.proxyProtocol == proxyProtocolV2 {
		f.header = appendProxyHeader(nil, proxyProtocolV2, true, client, dest)
	}
	f.last.Store(time.Now().UnixNano())
	b.AddInactive(1)
	u.mu.Lock()
	u.flows[client] = f
	u.mu.Unlock()
	svc.track(b, f)
	p.wg.Add(1)
	go p.returnPath(f)
	return f
}

// datagramBuffers lend the return paths a buffer only while a datagram is in hand: a flow
// waiting for its backend holds none, so idle flows cost a goroutine and a socket, not 64 KiB.
var datagramBuffers = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// returnPath copies the backend's replies to the client until the flow has been idle for
// UDPIdleTimeout in both directions or is closed.
func (p *Proxier) returnPath(f *udpFlow) {
	defer p.wg.Done()
	defer f.Close()
	idle := p.opts.UDPIdleTimeout
	raw, err := f.upstream.SyscallConn()
	if err != nil {
		return
	}
	for {
		f.upstream.SetReadDeadline(time.Unix(0, f.last.Load()).Add(idle))
		var buf *[]byte
		var n int
		var readErr error
		// The callback runs when the socket may be readable; returning false waits (with
		// the deadline) for the next readiness.
		err := raw.Read(func(fd uintptr) bool {
			b := datagramBuffers.Get().(*[]byte)
			n, readErr = unix.Read(int(fd), *b)
			if readErr == unix.EAGAIN {
				datagramBuffers.Put(b)
				return false
			}
			buf = b
			return true
		})
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, f.last.Load())) < idle {
				continue // the client spoke meanwhile: wait again from its last datagram
			}
			return // idle or closed
		}
		if readErr != nil {
			// The backend is gone (ICMP port unreachable): end the flow so the next
			// datagram schedules afresh.
			datagramBuffers.Put(buf)
			return
		}
		f.last.Store(time.Now().UnixNano())
		if _, err := f.owner.conn.WriteToUDPAddrPort((*buf)[:n], f.client); err != nil {
			klog.V(4).InfoS("Returning a UDP datagram", "client", f.client, "err", err)
		}
		datagramBuffers.Put(buf)
	}
}
