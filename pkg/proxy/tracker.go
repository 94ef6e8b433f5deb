package proxy

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
)

// Tracker turns informer events into Snapshots. It implements the handler interfaces of
// pkg/proxy/config. Handlers only store the new object and mark its Service dirty; the work of
// converting happens in Snapshot, on the backend's sync goroutine, once per burst of events.
type Tracker struct {
	family   corev1.IPFamily
	nodeName string
	// notify is called after every recorded change (a runner's Run); it must not block.
	notify func()

	mu       sync.Mutex
	services map[types.NamespacedName]*corev1.Service
	// slices are indexed by the Service they belong to (label kubernetes.io/service-name).
	slices map[types.NamespacedName]map[string]*discoveryv1.EndpointSlice
	dirty  sets.Set[types.NamespacedName]
	// changeTimes are the trigger times of changes not yet handed out by Snapshot.
	changeTimes []time.Time
	// started is when the Tracker was made: trigger times from before it belong to changes an
	// earlier proxy (or none) programmed, not to this one's work.
	started              time.Time
	servicesSynced       bool
	endpointSlicesSynced bool
	prevPorts            ServicePortMap
	prevEndpoints        EndpointsMap
	portsByService       map[types.NamespacedName][]ServicePortName
}

// NewTracker returns a Tracker for one IP family (IPv4 or IPv6) on the node nodeName; notify
// is called, without locks held, whenever something changed.
func NewTracker(family corev1.IPFamily, nodeName string, notify func()) *Tracker {
	if notify == nil {
		notify = func() {}
	}
	return &Tracker{
		family: family, nodeName: nodeName, notify: notify, started: time.Now(),
		services:       map[types.NamespacedName]*corev1.Service{},
		slices:         map[types.NamespacedName]map[string]*discoveryv1.EndpointSlice{},
		dirty:          sets.New[types.NamespacedName](),
		prevPorts:      ServicePortMap{},
		prevEndpoints:  EndpointsMap{},
		portsByService: map[types.NamespacedName][]ServicePortName{},
	}
}

// Snapshot is the desired state at one moment. Services and Endpoints are complete; Changed
// names the ServicePorts whose own fields or endpoints differ from the previous Snapshot
// (a name in Changed and absent from Services was deleted).
type Snapshot struct {
	Services  ServicePortMap
	Endpoints EndpointsMap
	Changed   sets.Set[ServicePortName]
	// RemovedEndpoints lists, per changed ServicePort, the endpoints the previous Snapshot had
	// and this one has not (or no longer as usable); a backend flushes UDP conntrack for them.
	RemovedEndpoints map[ServicePortName][]*Endpoint
	// PreviousServices holds the previous version of every changed ServicePort that existed.
	PreviousServices ServicePortMap
	// ChangeTimes are when the endpoint changes in this Snapshot were triggered (EndpointSlice
	// annotation endpoints.kubernetes.io/last-change-trigger-time, later than the Tracker's start).
	ChangeTimes []time.Time
	// Synced is true once both informers have listed everything: before that a backend must
	// not program a full sync, or it would briefly remove Services not yet seen.
	Synced bool
}

// Service handlers.

func (t *Tracker) OnServiceAdd(s *corev1.Service)       { t.setService(s, false) }
func (t *Tracker) OnServiceUpdate(_, s *corev1.Service) { t.setService(s, false) }
func (t *Tracker) OnServiceDelete(s *corev1.Service)    { t.setService(s, true) }
func (t *Tracker) OnServiceSynced() {
	t.mu.Lock()
	t.servicesSynced = true
	t.mu.Unlock()
	t.notify()
}

func (t *Tracker) setService(s *corev1.Service, deleted bool) {
	key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	t.mu.Lock()
	if deleted {
		delete(t.services, key)
	} else {
		t.services[key] = s
	}
	// No change time: a Service carries no trigger time, and the time its event arrived would
	// only measure our own queue, flattering the latency histogram (kube-proxy does the same).
	t.dirty.Insert(key)
	t.mu.Unlock()
	t.notify()
}

// EndpointSlice handlers.

func (t *Tracker) OnEndpointSliceAdd(s *discoveryv1.EndpointSlice) { t.setSlice(s, false) }
func (t *Tracker) OnEndpointSliceUpdate(_, s *discoveryv1.EndpointSlice) {
	t.setSlice(s, false)
}
func (t *Tracker) OnEndpointSliceDelete(s *discoveryv1.EndpointSlice) { t.setSlice(s, true) }
func (t *Tracker) OnEndpointSlicesSynced() {
	t.mu.Lock()
	t.endpointSlicesSynced = true
	t.mu.Unlock()
	t.notify()
}

func (t *Tracker) setSlice(s *discoveryv1.EndpointSlice, deleted bool) {
	svcName := s.Labels[discoveryv1.LabelServiceName]
	if svcName == "" || !t.ownFamily(s.AddressType) {
		return
	}
	key := types.NamespacedName{Namespace: s.Namespace, Name: svcName}
	t.mu.Lock()
	m := t.slices[key]
	if deleted {
		delete(m, s.Name)
		if len(m) == 0 {
			delete(t.slices, key)
		}
	} else {
		if m == nil {
			m = map[string]*discoveryv1.EndpointSlice{}
			t.slices[key] = m
		}
		m[s.Name] = s
	}
	t.dirty.Insert(key)
	// Network-programming latency is measured from the trigger time the endpoint controllers
	// write (when the Pods or the Service changed), as kube-proxy measures it: slices without
	// one (hand-made), deletions (the annotation is the last update's), and trigger times from
	// before this proxy started (the initial list replays old changes) have no latency to report.
	if v, ok := s.Annotations[corev1.EndpointsLastChangeTriggerTime]; ok && !deleted {
		if tt, err := time.Parse(time.RFC3339Nano, v); err == nil && tt.After(t.started) {
			t.changeTimes = append(t.changeTimes, tt)
		}
	}
	t.mu.Unlock()
	t.notify()
}

func (t *Tracker) ownFamily(at discoveryv1.AddressType) bool {
	switch at {
	case discoveryv1.AddressTypeIPv4:
		return t.family == corev1.IPv4Protocol
	case discoveryv1.AddressTypeIPv6:
		return t.family == corev1.IPv6Protocol
	}
	return false
}

// Snapshot rebuilds the Services that changed since the last call and returns the new state.
// Call it from one goroutine only (the sync loop).
func (t *Tracker) Snapshot() *Snapshot {
	t.mu.Lock()
	dirty := t.dirty
	t.dirty = sets.New[types.NamespacedName]()
	times := t.changeTimes
	t.changeTimes = nil
	synced := t.servicesSynced && t.endpointSlicesSynced
	// Convert under the lock: the objects are immutable, but the maps are not.
	type rebuilt struct {
		ports []*ServicePort
		eps   EndpointsMap
	}
	work := make(map[types.NamespacedName]rebuilt, len(dirty))
	for key := range dirty {
		svc := t.services[key]
		var r rebuilt
		if svc != nil {
			r.ports = t.servicePorts(svc)
			r.eps = t.endpoints(key, t.slices[key])
		}
		work[key] = r
	}
	t.mu.Unlock()

	// Each Snapshot owns its maps (backends keep them), so the previous ones are copied;
	// maps.Clone copies the table wholesale, several times faster at 10k Services than
	// inserting entry by entry, which dominated a one-change sync.
	snap := &Snapshot{
		Services:         maps.Clone(t.prevPorts),
		Endpoints:        maps.Clone(t.prevEndpoints),
		Changed:          sets.New[ServicePortName](),
		RemovedEndpoints: map[ServicePortName][]*Endpoint{},
		PreviousServices: ServicePortMap{},
		ChangeTimes:      times,
		Synced:           synced,
	}
	for key, r := range work {
		oldNames := t.portsByService[key]
		newNames := make([]ServicePortName, 0, len(r.ports))
		for _, p := range r.ports {
			newNames = append(newNames, p.Name)
		}
		for _, name := range oldNames {
			if !slices.Contains(newNames, name) {
				t.record(snap, name, nil, nil)
			}
		}
		for _, p := range r.ports {
			t.record(snap, p.Name, p, r.eps[p.Name])
		}
		if len(newNames) == 0 {
			delete(t.portsByService, key)
		} else {
			t.portsByService[key] = newNames
		}
	}
	t.prevPorts, t.prevEndpoints = snap.Services, snap.Endpoints
	return snap
}

// record stores one ServicePort's new state in snap (p == nil: deleted) and notes whether it
// changed.
func (t *Tracker) record(snap *Snapshot, name ServicePortName, p *ServicePort, eps []*Endpoint) {
	old := snap.Services[name]
	oldEps := snap.Endpoints[name]
	if p == nil {
		delete(snap.Services, name)
		delete(snap.Endpoints, name)
	} else {
		snap.Services[name] = p
		if len(eps) > 0 {
			snap.Endpoints[name] = eps
		} else {
			delete(snap.Endpoints, name)
		}
	}
	if old.Equal(p) && endpointsEqual(oldEps, eps) {
		return
	}
	snap.Changed.Insert(name)
	if old != nil {
		snap.PreviousServices[name] = old
	}
	var removed []*Endpoint
	for _, oe := range oldEps {
		if !oe.Ready && !oe.Serving {
			continue
		}
		still := false
		for _, ne := range eps {
			if ne.IP == oe.IP && ne.Port == oe.Port && (ne.Ready || ne.Serving) {
				still = true
				break
			}
		}
		if !still {
			removed = append(removed, oe)
		}
	}
	if len(removed) > 0 {
		snap.RemovedEndpoints[name] = removed
	}
}

func endpointsEqual(a, b []*Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y *Endpoint) bool { return x.equal(y) })
}

// servicePorts converts a Service into ServicePorts of the tracker's family.
func (t *Tracker) servicePorts(svc *corev1.Service) []*ServicePort {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	clusterIP := netip.Addr{}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil && t.isFamily(a) {
			clusterIP = a
			break
		}
	}
	if !clusterIP.IsValid() && len(ips) > 0 && ips[0] == corev1.ClusterIPNone {
		return nil // headless: DNS only
	}
	externalIPs := t.parseAddrs(svc.Spec.ExternalIPs)
	var lbIPs []netip.Addr
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		var raw []string
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			// ipMode Proxy means the load balancer forwards to the node itself, so the
			// LB IP must not be captured here (KEP-1860).
			if ing.IP != "" && (ing.IPMode == nil || *ing.IPMode == corev1.LoadBalancerIPModeVIP) {
				raw = append(raw, ing.IP)
			}
		}
		lbIPs = t.parseAddrs(raw)
	}
	var ranges []netip.Prefix
	for _, r := range svc.Spec.LoadBalancerSourceRanges {
		if p, err := netip.ParsePrefix(strings.TrimSpace(r)); err == nil && t.isFamily(p.Addr()) {
			ranges = append(ranges, p.Masked())
		}
	}
	var sticky time.Duration
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		secs := int32(corev1.DefaultClientIPServiceAffinitySeconds)
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			secs = *c.ClientIP.TimeoutSeconds
		}
		sticky = time.Duration(secs) * time.Second
	}
	var ann map[string]string
	for k, v := range svc.Annotations {
		if strings.HasPrefix(k, "svcplane.io/") {
			if ann == nil {
				ann = map[string]string{}
			}
			ann[k] = v
		}
	}
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	out := make([]*ServicePort, 0, len(svc.Spec.Ports))
	for _, sp := range svc.Spec.Ports {
		p := &ServicePort{
			Name:                     ServicePortName{NamespacedName: key, Port: sp.Name, Protocol: sp.Protocol},
			ClusterIP:                clusterIP,
			Port:                     sp.Port,
			Protocol:                 sp.Protocol,
			ExternalIPs:              externalIPs,
			LoadBalancerIPs:          lbIPs,
			LoadBalancerSourceRanges: ranges,
			StickyTimeout:            sticky,
			InternalPolicyLocal:      svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal,
			Annotations:              ann,
		}
		if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
			p.NodePort = sp.NodePort
		}
		if p.ExternallyAccessible() && svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
			p.ExternalPolicyLocal = true
			p.HealthCheckNodePort = svc.Spec.HealthCheckNodePort
		}
		out = append(out, p)
	}
	return out
}

func (t *Tracker) isFamily(a netip.Addr) bool {
	if t.family == corev1.IPv6Protocol {
		return a.Is6() && !a.Is4In6()
	}
	return a.Is4()
}

func (t *Tracker) parseAddrs(raw []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range raw {
		if a, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil && t.isFamily(a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// endpoints merges a Service's slices into per-port endpoint lists. An address listed twice
// (a pod moving between slices) counts once, preferring the ready copy.
func (t *Tracker) endpoints(svc types.NamespacedName, slices_ map[string]*discoveryv1.EndpointSlice) EndpointsMap {
	out := EndpointsMap{}
	for _, s := range slices_ {
		for _, port := range s.Ports {
			if port.Port == nil {
				continue
			}
			name := ServicePortName{NamespacedName: svc, Protocol: corev1.ProtocolTCP}
			if port.Name != nil {
				name.Port = *port.Name
			}
			if port.Protocol != nil {
				name.Protocol = *port.Protocol
			}
			for _, ep := range s.Endpoints {
				if len(ep.Addresses) == 0 {
					continue
				}
				ip, err := netip.ParseAddr(ep.Addresses[0])
				if err != nil || !t.isFamily(ip) {
					continue
				}
				e := &Endpoint{IP: ip, Port: *port.Port, Ready: true}
				c := ep.Conditions
				if c.Ready != nil {
					e.Ready = *c.Ready
				}
				e.Serving = e.Ready
				if c.Serving != nil {
					e.Serving = *c.Serving
				}
				if c.Terminating != nil {
					e.Terminating = *c.Terminating
				}
				if ep.NodeName != nil {
					e.NodeName = *ep.NodeName
					e.IsLocal = e.NodeName == t.nodeName
				}
				if ep.Zone != nil {
					e.Zone = *ep.Zone
				}
				out[name] = appendEndpoint(out[name], e)
			}
		}
	}
	for name, eps := range out {
		slices.SortFunc(eps, func(a, b *Endpoint) int {
			if c := a.IP.Compare(b.IP); c != 0 {
				return c
			}
			return int(a.Port - b.Port)
		})
		out[name] = eps
	}
	return out
}

func appendEndpoint(eps []*Endpoint, e *Endpoint) []*Endpoint {
	for i, o := range eps {
		if o.IP == e.IP && o.Port == e.Port {
			if e.Ready && !o.Ready {
				eps[i] = e
			}
			return eps
		}
	}
	return append(eps, e)
}
