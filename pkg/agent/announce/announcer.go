package announce

import (
	"context"
	"fmt"
	"net"
	"net/netip"
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
	// to another node (the agent passes 3 heartbeat intervals).
	NodeGracePeriod time.Duration
}

// Run announces this node's share of the LoadBalancer addresses until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	iface, err := interfaceWith(cfg.NodeIP)
	if err != nil {
		return err
	}
	conn, err := openARP(iface)
	if err != nil {
		return err
	}
	a := &announcer{cfg: cfg, conn: conn, iface: iface, nudge: make(chan struct{}, 1)}
	a.owned.Store(&map[netip.Addr]bool{})
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	go a.answer()

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
	if !cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced, sliceInf.Informer().HasSynced, nodeInf.Informer().HasSynced) {
		return ctx.Err()
	}
	klog.InfoS("announcing LoadBalancer addresses by ARP", "interface", iface.Name, "mac", iface.HardwareAddr)
	// Heartbeats age without any event, so the choice is also redone every second.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
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
		for _, n := range nodes {
			if nodeReady(n, now, cfg.NodeGracePeriod) {
				st.ReadyNodes = append(st.ReadyNodes, n.Name)
			}
		}
		a.sync(Assignments(st))
		select {
		case <-ctx.Done():
			return nil
		case <-a.nudge:
		case <-tick.C:
		}
	}
}

type announcer struct {
	cfg   Config
	conn  *arpConn
	iface *net.Interface
	nudge chan struct{}
	// owned are the addresses this node answers for; replaced whole by sync, read by answer.
	owned atomic.Pointer[map[netip.Addr]bool]
}

func (a *announcer) poke() {
	select {
	case a.nudge <- struct{}{}:
	default:
	}
}

// sync takes over the addresses assigned to this node (with a gratuitous ARP, so neighbours
// that cached another node's MAC switch at once) and drops the others.
func (a *announcer) sync(assigned map[netip.Addr]string) {
	old := *a.owned.Load()
	owned := map[netip.Addr]bool{}
	for ip, node := range assigned {
		if node == a.cfg.NodeName {
			owned[ip] = true
		}
	}
	a.owned.Store(&owned)
	for ip := range owned {
		if !old[ip] {
			klog.InfoS("announcing LoadBalancer address", "ip", ip)
			a.gratuitous(ip)
		}
	}
	for ip := range old {
		if !owned[ip] {
			klog.InfoS("no longer announcing LoadBalancer address", "ip", ip, "now", assigned[ip])
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
		if req.op != arpRequest || !(*a.owned.Load())[req.targetIP] || req.senderIP == req.targetIP {
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
