package userspace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/proxy"
	"github.com/svcplane/svcplane/pkg/proxy/schedule"
)

// Options configure a Proxier. Zero values take the documented defaults.
type Options struct {
	// Family is the IP family served (IPv4 when empty). A dual-stack node runs one Proxier per
	// family, as the nftables mode runs one table per family, each fed its family's Snapshot:
	// addresses of the other family are ignored, and the local routes a Proxier adopts,
	// installs and removes are of its family only, so the two never remove each other's.
	Family corev1.IPFamily
	// NodeIPs are the addresses NodePorts listen on (--nodeport-addresses); empty means every
	// global unicast address of the family on the node at start.
	NodeIPs []netip.Addr
	// ServiceCIDRs, all of Family, are made local with one route each, so ClusterIPs need no
	// per-Service kernel state; Service IPs outside them (external and LoadBalancer IPs) get a
	// route each.
	ServiceCIDRs []netip.Prefix
	// ManageLocalRoutes installs those local routes (in the network namespace the proxy runs
	// in). Off, the caller guarantees the Service IPs are local, as tests on 127.0.0.1 do.
	ManageLocalRoutes bool
	// Scheduler is the default scheduler (--scheduler); "" means rr.
	Scheduler string
	// DialTimeout bounds the first connection attempt to a backend (default 250ms); each
	// retry on another backend doubles it, for at most DialAttempts (default 4) attempts.
	DialTimeout  time.Duration
	DialAttempts int
	// TCPIdleTimeout closes connections without data either way for that long (default 1h;
	// negative: never). UDPIdleTimeout ends UDP flows (default 30s, conntrack's UDP stream
	// timeout is 120s but most UDP services are request/response).
	TCPIdleTimeout time.Duration
	UDPIdleTimeout time.Duration
	// GoroutineRelay serves TCP with goroutines per connection (accept loop, handshake
	// workers, a goroutine per direction) instead of the epoll event loops, the design before
	// the loops; kept to compare the two (bench/userspace) and as a fallback.
	GoroutineRelay bool
}

func (o *Options) complete() error {
	switch o.Family {
	case "":
		o.Family = corev1.IPv4Protocol
	case corev1.IPv4Protocol, corev1.IPv6Protocol:
	default:
		return fmt.Errorf("IP family %q: use %s or %s", o.Family, corev1.IPv4Protocol, corev1.IPv6Protocol)
	}
	for _, c := range o.ServiceCIDRs {
		if !isFamily(c.Addr(), o.Family) {
			return fmt.Errorf("service CIDR %s is not %s", c, o.Family)
		}
	}
	if o.Scheduler == "" {
		o.Scheduler = schedule.DefaultName
	}
	if _, err := schedule.New(o.Scheduler, schedule.Options{}); err != nil {
		return fmt.Errorf("--scheduler: %w", err)
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 250 * time.Millisecond
	}
	if o.DialAttempts == 0 {
		o.DialAttempts = 4
	}
	if o.TCPIdleTimeout == 0 {
		o.TCPIdleTimeout = time.Hour
	}
	if o.TCPIdleTimeout < 0 {
		o.TCPIdleTimeout = 0
	}
	if o.UDPIdleTimeout <= 0 {
		o.UDPIdleTimeout = 30 * time.Second
	}
	if len(o.NodeIPs) == 0 {
		ips, err := nodeAddresses(o.Family)
		if err != nil {
			return fmt.Errorf("listing the node's addresses for NodePorts: %w", err)
		}
		o.NodeIPs = ips
	}
	return nil
}

func nodeAddresses(family corev1.IPFamily) ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ip, ok := netip.AddrFromSlice(n.IP)
			if ip = ip.Unmap(); ok && ip.IsGlobalUnicast() && isFamily(ip, family) {
				ips = append(ips, ip)
			}
		}
	}
	return ips, nil
}

// isFamily says whether ip is of family; an IPv4-mapped IPv6 address is neither (the tracker
// drops them too).
func isFamily(ip netip.Addr, family corev1.IPFamily) bool {
	if family == corev1.IPv6Protocol {
		return ip.Is6() && !ip.Is4In6()
	}
	return ip.Is4()
}

// Proxier is the userspace backend: it listens on every Service address and port and relays
// connections to endpoints. Sync is called from one goroutine (the runner); the data path
// runs in goroutines per listener, connection and UDP flow.
type Proxier struct {
	opts   Options
	dialer net.Dialer
	lc     net.ListenConfig
	routes *localRoutes

	services  map[proxy.ServicePortName]*service
	listeners map[listenKey]*listener
	wg        sync.WaitGroup
	// unsupported are the Service ports of protocols this mode cannot serve (SCTP), each
	// reported once.
	unsupported map[proxy.ServicePortName]bool
	// handshakes passes accepted connections to idle handshake workers (tcp.go); stopped
	// tells those workers to exit.
	handshakes chan acceptedConn
	stopped    chan struct{}
	stopOnce   sync.Once
	// loops run TCP (eventloop.go, tcploop.go), one per CPU the runtime uses; started with
	// the first TCP listener.
	loops []*eventLoop
}

// listenKey is one socket the proxy listens on.
type listenKey struct {
	protocol corev1.Protocol
	addr     netip.AddrPort
}

type listener struct {
	key      listenKey
	svc      *service
	external bool
	// sourceRanges restrict LoadBalancer IP listeners (loadBalancerSourceRanges).
	sourceRanges []netip.Prefix
	close        func() error
}

func (l *listener) allows(client netip.AddrPort) bool {
	if len(l.sourceRanges) == 0 {
		return true
	}
	ip := client.Addr().Unmap()
	for _, r := range l.sourceRanges {
		if r.Contains(ip) {
			return true
		}
	}
	return false
}

// New returns a Proxier with nothing programmed.
func New(opts Options) (*Proxier, error) {
	if err := opts.complete(); err != nil {
		return nil, err
	}
	p := &Proxier{
		opts: opts,
		// Accepted connections inherit keep-alive from the listener (listenControl).
		lc: net.ListenConfig{Control: listenControl, KeepAlive: -1},
		// Backend connections probe too, so a client is not left waiting on a backend whose
		// node vanished; the count stays the system's, one setsockopt(2) fewer per connection.
		dialer: net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
			Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: -1}},
		services:    map[proxy.ServicePortName]*service{},
		listeners:   map[listenKey]*listener{},
		unsupported: map[proxy.ServicePortName]bool{},
		handshakes:  make(chan acceptedConn),
		stopped:     make(chan struct{}),
	}
	if opts.ManageLocalRoutes {
		r, err := newLocalRoutes(opts.Family, opts.ServiceCIDRs)
		if err != nil {
			return nil, err
		}
		p.routes = r
	}
	return p, nil
}

// Sync programs a Snapshot: the changed ServicePorts, or all of them when full. Listeners are
// opened and closed one by one; connections in progress are never interrupted by changes to
// other Services, nor by a change of their own listener set.
func (p *Proxier) Sync(snap *proxy.Snapshot, full bool) error {
	var names []proxy.ServicePortName
	if full {
		for name := range snap.Services {
			names = append(names, name)
		}
		for name := range p.services {
			if snap.Services[name] == nil {
				names = append(names, name)
			}
		}
	} else {
		names = snap.Changed.UnsortedList()
	}
	var errs []error
	for _, name := range names {
		if err := p.syncService(name, snap.Services[name], snap.Endpoints[name]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if p.routes != nil {
		if err := p.routes.ensure(p.localIPs()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// localIPs are the Service addresses that must be local for their listeners to receive.
func (p *Proxier) localIPs() []netip.Addr {
	seen := map[netip.Addr]bool{}
	var ips []netip.Addr
	for k, l := range p.listeners {
		if !l.external || !slices.Contains(p.opts.NodeIPs, k.addr.Addr()) {
			if !seen[k.addr.Addr()] {
				seen[k.addr.Addr()] = true
				ips = append(ips, k.addr.Addr())
			}
		}
	}
	return ips
}

func (p *Proxier) syncService(name proxy.ServicePortName, sp *proxy.ServicePort, eps []*proxy.Endpoint) error {
	svc := p.services[name]
	if sp == nil {
		delete(p.unsupported, name)
		if svc != nil {
			p.closeListeners(svc, nil)
			delete(p.services, name)
		}
		return nil
	}
	if sp.Protocol != corev1.ProtocolTCP && sp.Protocol != corev1.ProtocolUDP {
		// Not an error: the runner retries failed syncs in full, and no retry can change
		// the answer. Said once per Service port, not at every sync.
		if !p.unsupported[name] {
			p.unsupported[name] = true
			klog.ErrorS(unsupportedProtocol(sp.Protocol), "Not serving a Service port", "service", name)
		}
		return nil
	}
	cfg, errs := configFor(sp, p.opts.Scheduler)
	for _, err := range errs {
		klog.ErrorS(err, "Ignoring a Service annotation", "service", name)
	}
	cluster, external, _ := proxy.UsableEndpoints(sp, eps)
	separate := !slices.Equal(cluster, external)
	if svc == nil {
		svc = &service{name: name, sessions: map[*schedule.Backend]map[session]struct{}{}}
		svc.cluster = schedule.NewPool(mustScheduler(cfg), cfg.sticky)
		svc.external.Store(svc.cluster)
		p.services[name] = svc
	} else if old := svc.cfg.Load(); old.scheduler != cfg.scheduler || old.schedulerOpts != cfg.schedulerOpts || old.sticky != cfg.sticky {
		svc.cluster.SetScheduler(mustScheduler(cfg))
		svc.cluster.SetAffinity(cfg.sticky)
		if ext := svc.external.Load(); ext != svc.cluster {
			ext.SetScheduler(mustScheduler(cfg))
			ext.SetAffinity(cfg.sticky)
		}
	}
	svc.cfg.Store(&cfg)
	svc.backendsRemoved(svc.cluster.Update(targets(cluster)))
	ext := svc.external.Load()
	switch {
	case separate && ext == svc.cluster:
		ext = schedule.NewPool(mustScheduler(cfg), cfg.sticky)
		ext.Update(targets(external))
		svc.external.Store(ext)
	case separate:
		svc.backendsRemoved(ext.Update(targets(external)))
	case ext != svc.cluster:
		svc.external.Store(svc.cluster)
		svc.backendsRemoved(ext.Update(nil))
	}
	return p.syncListeners(svc, sp)
}

func mustScheduler(cfg serviceConfig) schedule.Scheduler {
	s, err := schedule.New(cfg.scheduler, cfg.schedulerOpts)
	if err != nil {
		// configFor only keeps names New accepted.
		panic(err)
	}
	return s
}

func targets(eps []*proxy.Endpoint) []schedule.Target {
	ts := make([]schedule.Target, 0, len(eps))
	for _, e := range eps {
		ts = append(ts, schedule.Target{Addr: e.AddrPort(), Weight: 1})
	}
	return ts
}

// wantedListeners lists the sockets a ServicePort needs.
func (p *Proxier) wantedListeners(sp *proxy.ServicePort) map[listenKey]listener {
	want := map[listenKey]listener{}
	add := func(ip netip.Addr, port int32, external bool, ranges []netip.Prefix) {
		if !isFamily(ip, p.opts.Family) || port == 0 {
			return
		}
		k := listenKey{protocol: sp.Protocol, addr: netip.AddrPortFrom(ip, uint16(port))}
		want[k] = listener{key: k, external: external, sourceRanges: ranges}
	}
	add(sp.ClusterIP, sp.Port, false, nil)
	for _, ip := range sp.ExternalIPs {
		add(ip, sp.Port, true, nil)
	}
	lbRanges := p.lbSourceRanges(sp)
	for _, ip := range sp.LoadBalancerIPs {
		add(ip, sp.Port, true, lbRanges)
	}
	for _, ip := range p.opts.NodeIPs {
		add(ip, sp.NodePort, true, nil)
	}
	return want
}

// lbSourceRanges are the clients a LoadBalancer IP listener admits (empty: everyone). Only
// LoadBalancer IPs are restricted, as upstream: NodePorts and external IPs are not. When a
// range holds a node address, the LB IPs themselves are admitted too (upstream's
// "allowFromNode"): an LB IP is local here, and the kernel gives a connection to a local
// address that address as its source, so the node reaching its own LB IP comes from it.
func (p *Proxier) lbSourceRanges(sp *proxy.ServicePort) []netip.Prefix {
	ranges := sp.LoadBalancerSourceRanges
	if len(ranges) == 0 {
		return nil
	}
	for _, r := range ranges {
		for _, ip := range p.opts.NodeIPs {
			if r.Contains(ip) {
				out := slices.Clone(ranges)
				for _, lb := range sp.LoadBalancerIPs {
					out = append(out, netip.PrefixFrom(lb, lb.BitLen()))
				}
				return out
			}
		}
	}
	return ranges
}

// syncListeners opens the sockets the ServicePort needs and closes those it no longer does.
func (p *Proxier) syncListeners(svc *service, sp *proxy.ServicePort) error {
	want := p.wantedListeners(sp)
	p.closeListeners(svc, want)
	var errs []error
	for k, w := range want {
		if l := p.listeners[k]; l != nil {
			if l.svc == svc && l.external == w.external && slices.Equal(l.sourceRanges, w.sourceRanges) {
				continue
			}
			if l.svc != svc {
				// Another Service holds the address: validation should have prevented it;
				// the first one keeps it.
				errs = append(errs, fmt.Errorf("%s %s is already served for %s", k.protocol, k.addr, l.svc.name))
				continue
			}
			l.close()
			delete(p.listeners, k)
		}
		l := &listener{key: k, svc: svc, external: w.external, sourceRanges: w.sourceRanges}
		if err := p.open(l); err != nil {
			errs = append(errs, err)
			continue
		}
		p.listeners[k] = l
	}
	return errors.Join(errs...)
}

// closeListeners closes svc's listeners not in keep.
func (p *Proxier) closeListeners(svc *service, keep map[listenKey]listener) {
	for k, l := range p.listeners {
		if l.svc != svc {
			continue
		}
		if _, ok := keep[k]; ok {
			continue
		}
		l.close()
		delete(p.listeners, k)
	}
}

// startLoops starts the event loops once.
func (p *Proxier) startLoops() error {
	if p.loops != nil {
		return nil
	}
	var loops []*eventLoop
	for range runtime.GOMAXPROCS(0) {
		lp, err := newEventLoop()
		if err != nil {
			for _, lp := range loops {
				lp.close()
			}
			return fmt.Errorf("starting the TCP event loops: %w", err)
		}
		loops = append(loops, lp)
	}
	p.loops = loops
	for _, lp := range loops {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			lp.run()
		}()
	}
	return nil
}

func (p *Proxier) open(l *listener) error {
	network := "tcp4"
	if l.key.addr.Addr().Is6() {
		network = "tcp6"
	}
	switch l.key.protocol {
	case corev1.ProtocolTCP:
		if !p.opts.GoroutineRelay {
			if err := p.startLoops(); err != nil {
				return err
			}
			closeFn, err := p.openLoopListener(l)
			if err != nil {
				return err
			}
			l.close = closeFn
			break
		}
		ln, err := p.lc.Listen(context.Background(), network, l.key.addr.String())
		if err != nil {
			return fmt.Errorf("listening on %s: %w", l.key.addr, err)
		}
		l.close = ln.Close
		p.wg.Add(1)
		go p.serveTCP(l, ln.(*net.TCPListener))
	case corev1.ProtocolUDP:
		network = "udp" + network[3:]
		pc, err := p.lc.ListenPacket(context.Background(), network, l.key.addr.String())
		if err != nil {
			return fmt.Errorf("listening on udp %s: %w", l.key.addr, err)
		}
		u := &udpListener{conn: pc.(*net.UDPConn), l: l, flows: map[netip.AddrPort]*udpFlow{}}
		l.close = pc.Close
		p.wg.Add(1)
		go p.serveUDP(u)
	}
	klog.V(2).InfoS("Listening", "service", l.svc.name, "protocol", l.key.protocol, "address", l.key.addr)
	return nil
}

// Close stops listening, aborts every connection and flow, and removes the local routes.
func (p *Proxier) Close() error {
	p.stopOnce.Do(func() { close(p.stopped) })
	for k, l := range p.listeners {
		l.close()
		delete(p.listeners, k)
	}
	for _, svc := range p.services {
		svc.mu.Lock()
		var all []session
		for _, m := range svc.sessions {
			for s := range m {
				all = append(all, s)
			}
		}
		svc.mu.Unlock()
		for _, s := range all {
			s.Close()
		}
	}
	// The loops abort what they still own (connections being dialed included).
	for _, lp := range p.loops {
		lp.stop()
	}
	p.wg.Wait()
	if p.routes != nil {
		return p.routes.removeAll()
	}
	return nil
}
