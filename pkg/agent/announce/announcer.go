package announce

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// Config is what Run needs.
type Config struct {
	Client   kubernetes.Interface
	NodeName string
	// NodeIP selects the interface announced on: the one holding it.
	NodeIP netip.Addr
	// NodeGracePeriod is how old a Node's Ready heartbeat may be before its addresses move
	// to another node (the agent passes 3 heartbeat intervals). It is the slow path: a
	// stopped agent is noticed by its beacons long before (BeaconInterval).
	NodeGracePeriod time.Duration
	// BeaconInterval is how often this agent broadcasts that it is alive (see beacon.go);
	// the others count it alive for BeaconHoldIntervals of them. Default 300 ms.
	BeaconInterval time.Duration
	// StrictARP sets the interface's arp_ignore and arp_announce so that the kernel itself
	// answers no ARP for Service addresses (see strictarp.go). The agent turns it on.
	StrictARP bool
}

// BeaconHoldIntervals is how many beacon intervals a peer counts alive after its last beacon:
// three may be lost or late before its addresses move.
const BeaconHoldIntervals = 4

// DefaultBeaconInterval gives a killed agent's addresses a new node 0.9–1.2 s after it dies.
const DefaultBeaconInterval = 300 * time.Millisecond

// Run announces this node's share of the LoadBalancer addresses until ctx ends; then it stops
// answering and tells the other agents, so that they take its addresses over at once.
func Run(ctx context.Context, cfg Config) error {
	if cfg.BeaconInterval <= 0 {
		cfg.BeaconInterval = DefaultBeaconInterval
	}
	iface, err := interfaceWith(cfg.NodeIP)
	if err != nil {
		return err
	}
	if cfg.StrictARP {
		changed, err := ensureStrictARP(iface.Name)
		if err != nil {
			return err
		}
		if len(changed) > 0 {
			klog.InfoS("made the kernel answer ARP only for the interface's own addresses", "set", changed)
		}
	}
	arp, err := openARP(iface)
	if err != nil {
		return err
	}
	defer arp.Close()
	beacons, err := openPacket(iface, beaconEtherType)
	if err != nil {
		return err
	}
	defer beacons.Close()
	// Without IPv6 in the kernel (or allowed to this process) IPv4 is still announced.
	ndp, err := openNDP(iface)
	if err != nil {
		klog.ErrorS(err, "IPv6 LoadBalancer addresses will not be announced", "interface", iface.Name)
		ndp = nil
	} else {
		defer ndp.Close()
	}
	a := &announcer{cfg: cfg, conn: arp, ndp: ndp, beacons: beacons, iface: iface, peers: newPeers(), nudge: make(chan struct{}, 1),
		unheardSince: map[string]time.Time{}, defended: map[netip.Addr]time.Time{}}
	a.owned.Store(&map[netip.Addr]bool{})
	go a.answer()
	if ndp != nil {
		go ndp.answer(a.owns, a.claimedElsewhere)
	}
	go a.listen()
	factory := informers.NewSharedInformerFactory(cfg.Client, 0)
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.poke() },
		UpdateFunc: func(any, any) { a.poke() },
		DeleteFunc: func(any) { a.poke() },
	}
	svcInf := factory.Core().V1().Services()
	sliceInf := factory.Discovery().V1().EndpointSlices()
	nodeInf := factory.Core().V1().Nodes()
	for _, inf := range []cache.SharedIndexInformer{svcInf.Informer(), sliceInf.Informer(), nodeInf.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	// Peers learn of this agent only from its beacons, so it beacons while its informers
	// sync, just not as a candidate yet. Deferred after the factory's shutdown so that it
	// runs first: the peers hear of the stop without waiting for the informers to wind down.
	beaconDone := make(chan struct{})
	stopBeacons := make(chan struct{})
	go func() {
		defer close(beaconDone)
		a.beaconLoop(stopBeacons)
	}()
	defer func() {
		// Stop answering first, then say so: a peer taking an address over must not race
		// this node's last answers.
		a.owned.Store(&map[netip.Addr]bool{})
		close(stopBeacons)
		<-beaconDone
		a.leave()
	}()
	// Listen for a whole hold before claiming anything: until then a restarted agent has not
	// heard the peers that are alive, and would take all their addresses.
	warmUp := time.NewTimer(a.hold())
	defer warmUp.Stop()
	if !cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced, sliceInf.Informer().HasSynced, nodeInf.Informer().HasSynced) {
		return nil
	}
	select {
	case <-ctx.Done():
		return nil
	case <-warmUp.C:
	}
	a.candidate.Store(true)
	a.sendBeacon() // tell the peers at once, rather than at the next tick
	klog.InfoS("announcing LoadBalancer addresses by ARP and NDP", "interface", iface.Name, "mac", iface.HardwareAddr,
		"beaconInterval", cfg.BeaconInterval, "hold", a.hold())
	// Node heartbeats age without any event, so the choice is also redone every second;
	// a peer's beacon running out wakes it exactly then.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	for {
		services, _ := svcInf.Lister().List(labels.Everything())
		allSlices, _ := sliceInf.Lister().List(labels.Everything())
		nodes, _ := nodeInf.Lister().List(labels.Everything())
		st := State{Services: services, Slices: map[string][]*discoveryv1.EndpointSlice{}}
		for _, s := range allSlices {
			if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
				key := s.Namespace + "/" + name
				st.Slices[key] = append(st.Slices[key], s)
			}
		}
		now := time.Now()
		live, nextExpiry := a.peers.live(now)
		for _, n := range nodes {
			heard := n.Name == cfg.NodeName || slices.Contains(live, n.Name)
			ready := nodeReady(n, now, cfg.NodeGracePeriod)
			if heard && ready {
				st.ReadyNodes = append(st.ReadyNodes, n.Name)
			}
			a.noteUnheard(n.Name, ready && !heard, now)
		}
		a.sync(Assignments(st))
		if !nextExpiry.IsZero() {
			expiry.Reset(nextExpiry.Sub(now))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.nudge:
		case <-tick.C:
		case <-expiry.C:
		}
	}
}

type announcer struct {
	cfg     Config
	conn    *packetConn   // ARP
	ndp     *ndpResponder // nil: IPv6 not available
	beacons *packetConn
	iface   *net.Interface
	peers   *peers
	nudge   chan struct{}
	// candidate is set once this agent may be chosen; its beacons say so.
	candidate atomic.Bool
	// owned are the addresses this node answers for; replaced whole by sync, read by answer.
	owned atomic.Pointer[map[netip.Addr]bool]
	// unheardSince: Ready Nodes not heard, since when (zero once warned); Run's loop only.
	unheardSince map[string]time.Time
	// defended: when this node last repeated its claim on an address, answering another's.
	defendMu sync.Mutex
	defended map[netip.Addr]time.Time
}

func (a *announcer) owns(ip netip.Addr) bool { return (*a.owned.Load())[ip] }

// defendInterval is how long after defending an address this node lets further claims by
// others stand: RFC 5227's DEFEND_INTERVAL (§2.4 (c)), which keeps two hosts that both believe
// they own an address from trading claims forever.
const defendInterval = 10 * time.Second

// claimedElsewhere is told by the responders of every frame in which another MAC claims an
// address (its gratuitous ARP or ARP reply, its Neighbor Advertisement). When this node owns
// the address, it claims it again one beacon interval later.
//
// Two agents that become candidates at the same moment each claim the address before
// hearing the other. The one not chosen lets go as soon as it hears the other's beacon, but
// its claim may reach the neighbours after the chosen node's, and a neighbour whose
// connections keep working through it (every node's proxy serves the address) never asks
// again: the address would stay with a node that no longer announces it, and would not move
// when the chosen node's agent stops. One interval later the other node has let go, so this
// claim is the last one heard.
func (a *announcer) claimedElsewhere(ip netip.Addr, by net.HardwareAddr) {
	if !a.owns(ip) {
		return
	}
	now := time.Now()
	a.defendMu.Lock()
	last, recent := a.defended[ip]
	recent = recent && now.Sub(last) < defendInterval
	if !recent {
		for other, at := range a.defended {
			if now.Sub(at) >= defendInterval {
				delete(a.defended, other)
			}
		}
		a.defended[ip] = now
	}
	a.defendMu.Unlock()
	if recent {
		klog.InfoS("another node claims a LoadBalancer address this node announces, and this node defended it less than "+
			defendInterval.String()+" ago, so it lets the claim stand: do two nodes fail to hear each other's beacons?", "ip", ip, "by", by)
		return
	}
	klog.InfoS("another node claims a LoadBalancer address this node announces; claiming it again", "ip", ip, "by", by, "after", a.cfg.BeaconInterval)
	time.AfterFunc(a.cfg.BeaconInterval, func() {
		if a.owns(ip) {
			a.claim(ip)
		}
	})
}

// claim tells the link's nodes that ip is at this interface's MAC, so that neighbours that
// cached another one switch at once.
func (a *announcer) claim(ip netip.Addr) {
	if ip.Is4() {
		a.gratuitous(ip)
	} else {
		a.ndp.unsolicited(ip)
	}
}

// noteUnheard warns once about a node whose agent keeps its Node Ready for longer than the
// grace period while its announcer stays silent on this segment: it announces nothing (turned
// off, or on another segment), or the network drops the beacons' EtherType, in which case it
// believes itself alone and answers for addresses another node answers for too.
func (a *announcer) noteUnheard(node string, unheard bool, now time.Time) {
	if !unheard {
		delete(a.unheardSince, node)
		return
	}
	since, seen := a.unheardSince[node]
	if !seen {
		a.unheardSince[node] = now
		return
	}
	if !since.IsZero() && now.Sub(since) > a.cfg.NodeGracePeriod {
		klog.InfoS("a Ready node's announcer is not heard, so it is no candidate for LoadBalancer addresses: it has announcing turned off or is on another segment, or the network drops EtherType 0x88b5 (then it answers ARP for addresses this node answers for too)",
			"node", node, "interface", a.iface.Name, "silentFor", now.Sub(since).Round(time.Second))
		a.unheardSince[node] = time.Time{} // warned
	}
}

func (a *announcer) hold() time.Duration { return BeaconHoldIntervals * a.cfg.BeaconInterval }

func (a *announcer) beaconLoop(stop <-chan struct{}) {
	tick := time.NewTicker(a.cfg.BeaconInterval)
	defer tick.Stop()
	for {
		a.sendBeacon()
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

func (a *announcer) sendBeacon() {
	b := beacon{node: a.cfg.NodeName, candidate: a.candidate.Load(), hold: a.hold()}
	if err := a.beacons.sendRaw(b.marshal(), broadcastMAC); err != nil {
		klog.ErrorS(err, "broadcasting the announcer's beacon")
	}
}

// leave tells the peers that this agent announces nothing any more. Twice, since a lost
// frame would cost the others a whole hold.
func (a *announcer) leave() {
	b := beacon{node: a.cfg.NodeName}
	for range 2 {
		if err := a.beacons.sendRaw(b.marshal(), broadcastMAC); err != nil {
			klog.ErrorS(err, "broadcasting the announcer's leaving beacon")
			return
		}
	}
	klog.InfoS("stopped announcing LoadBalancer addresses and told the other nodes")
}

// listen records the peers' beacons until the socket closes.
func (a *announcer) listen() {
	for {
		p, err := a.beacons.receiveRaw()
		if err != nil {
			klog.V(2).InfoS("beacon listener stopped", "err", err)
			return
		}
		b, ok := parseBeacon(p)
		if !ok || b.node == a.cfg.NodeName {
			continue
		}
		if a.peers.heard(b, time.Now()) {
			klog.V(2).InfoS("announcer peer changed", "node", b.node, "candidate", b.candidate, "hold", b.hold)
			a.poke()
		}
	}
}

func (a *announcer) poke() {
	select {
	case a.nudge <- struct{}{}:
	default:
	}
}

// sync takes over the addresses assigned to this node (with a gratuitous ARP or an unsolicited
// Neighbor Advertisement, so neighbours that cached another node's MAC switch at once) and
// drops the others.
func (a *announcer) sync(assigned map[netip.Addr]string) {
	old := *a.owned.Load()
	owned := map[netip.Addr]bool{}
	for ip, node := range assigned {
		if node == a.cfg.NodeName && (ip.Is4() || a.ndp != nil) {
			owned[ip] = true
		}
	}
	a.owned.Store(&owned)
	for ip := range owned {
		if !old[ip] {
			klog.InfoS("announcing LoadBalancer address", "ip", ip)
			if ip.Is4() {
				a.gratuitous(ip)
			} else {
				a.ndp.own(ip)
			}
		}
	}
	for ip := range old {
		if !owned[ip] {
			klog.InfoS("no longer announcing LoadBalancer address", "ip", ip, "now", assigned[ip])
			if ip.Is6() {
				a.ndp.disown(ip)
			}
		}
	}
}

func (a *announcer) gratuitous(ip netip.Addr) {
	p := arpPacket{op: arpRequest, senderMAC: a.iface.HardwareAddr, senderIP: ip, targetMAC: make(net.HardwareAddr, 6), targetIP: ip}
	if err := a.conn.send(p, broadcastMAC); err != nil {
		klog.ErrorS(err, "sending gratuitous ARP", "ip", ip)
	}
}

// answer replies to ARP requests for the owned addresses until the socket closes.
func (a *announcer) answer() {
	for {
		req, err := a.conn.receive()
		if err != nil {
			klog.V(2).InfoS("ARP responder stopped", "err", err)
			return
		}
		// Any ARP packet whose sender address is one this node owns, from another MAC, is
		// a claim on it (RFC 5227 §2.4), whether a gratuitous ARP, a reply or a request.
		if a.owns(req.senderIP) && !bytes.Equal(req.senderMAC, a.iface.HardwareAddr) {
			a.claimedElsewhere(req.senderIP, req.senderMAC)
		}
		if req.op != arpRequest || !a.owns(req.targetIP) || req.senderIP == req.targetIP {
			continue
		}
		reply := arpPacket{op: arpReply, senderMAC: a.iface.HardwareAddr, senderIP: req.targetIP,
			targetMAC: append(net.HardwareAddr(nil), req.senderMAC...), targetIP: req.senderIP}
		if err := a.conn.send(reply, reply.targetMAC); err != nil {
			klog.ErrorS(err, "answering ARP", "ip", req.targetIP, "to", req.senderIP)
		}
	}
}

func interfaceWith(ip netip.Addr) (*net.Interface, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	for i := range ifaces {
		addrs, err := ifaces[i].Addrs()
		if err != nil {
			continue
		}
		for _, addr := range addrs {
			if n, ok := addr.(*net.IPNet); ok {
				if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == ip {
					if len(ifaces[i].HardwareAddr) != 6 {
						return nil, fmt.Errorf("interface %s holding %s has no Ethernet address: L2 announcement needs one", ifaces[i].Name, ip)
					}
					return &ifaces[i], nil
				}
			}
		}
	}
	return nil, fmt.Errorf("no interface holds node IP %s", ip)
}
