package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ServicePortName identifies one port of one Service: the unit a proxy programs. Port is the
// port's name in the Service spec ("" for a single unnamed port); EndpointSlice ports carry the
// same name, which is how endpoints are matched to service ports.
type ServicePortName struct {
	types.NamespacedName
	Port     string
	Protocol corev1.Protocol
}

func (n ServicePortName) String() string {
	if n.Port == "" {
		return n.NamespacedName.String() + "/" + string(n.Protocol)
	}
	return n.NamespacedName.String() + ":" + n.Port + "/" + string(n.Protocol)
}

// ServicePort is what a proxy needs of one port of one Service, for one IP family.
// Addresses of the other family are left out by the Tracker.
type ServicePort struct {
	Name ServicePortName
	// ClusterIP is invalid (zero) for a headless Service or one without an address of this
	// family; such ports still get NodePorts if they have them (they never do for headless).
	ClusterIP netip.Addr
	Port      int32
	Protocol  corev1.Protocol
	// NodePort is 0 unless the Service is of type NodePort or LoadBalancer.
	NodePort int32
	// ExternalIPs are spec.externalIPs, LoadBalancerIPs status.loadBalancer.ingress[].ip.
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr
	// LoadBalancerSourceRanges is spec.loadBalancerSourceRanges (empty: anyone).
	LoadBalancerSourceRanges []netip.Prefix
	// StickyTimeout is non-zero for sessionAffinity: ClientIP: how long a client stays with
	// the endpoint it was sent to after its last new connection.
	StickyTimeout time.Duration
	// ExternalPolicyLocal is externalTrafficPolicy: Local (only for Services reachable from
	// outside); InternalPolicyLocal is internalTrafficPolicy: Local.
	ExternalPolicyLocal bool
	InternalPolicyLocal bool
	// HealthCheckNodePort is served with the local endpoint count when ExternalPolicyLocal.
	HealthCheckNodePort int32
	// Annotations keeps only the Service's svcplane.io/* annotations (e.g.
	// svcplane.io/scheduler, svcplane.io/proxy-protocol for the userspace mode).
	Annotations map[string]string
}

// ExternallyAccessible reports whether the port is reachable by addresses other than the
// ClusterIP: a NodePort, external IPs or LoadBalancer IPs. Only such ports use
// ExternalPolicyLocal.
func (p *ServicePort) ExternallyAccessible() bool {
	return p.NodePort != 0 || len(p.ExternalIPs) > 0 || len(p.LoadBalancerIPs) > 0
}

// Equal reports whether two ServicePorts would be programmed identically.
func (p *ServicePort) Equal(o *ServicePort) bool {
	if p == nil || o == nil {
		return p == o
	}
	return p.Name == o.Name && p.ClusterIP == o.ClusterIP && p.Port == o.Port &&
		p.Protocol == o.Protocol && p.NodePort == o.NodePort &&
		slices.Equal(p.ExternalIPs, o.ExternalIPs) && slices.Equal(p.LoadBalancerIPs, o.LoadBalancerIPs) &&
		slices.Equal(p.LoadBalancerSourceRanges, o.LoadBalancerSourceRanges) &&
		p.StickyTimeout == o.StickyTimeout && p.ExternalPolicyLocal == o.ExternalPolicyLocal &&
		p.InternalPolicyLocal == o.InternalPolicyLocal && p.HealthCheckNodePort == o.HealthCheckNodePort &&
		mapsEqual(p.Annotations, o.Annotations)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Endpoint is one backend address of one ServicePort, from an EndpointSlice.
type Endpoint struct {
	IP   netip.Addr
	Port int32
	// Ready, Serving and Terminating are the EndpointSlice conditions with upstream's
	// defaults applied (ready unset → true; serving unset → ready; terminating unset → false).
	Ready, Serving, Terminating bool
	NodeName                    string
	Zone                        string
	// IsLocal is NodeName == the proxy's node.
	IsLocal bool
}

// AddrPort is the endpoint as an address and port.
func (e *Endpoint) AddrPort() netip.AddrPort { return netip.AddrPortFrom(e.IP, uint16(e.Port)) }

func (e *Endpoint) String() string {
	return netip.AddrPortFrom(e.IP, uint16(e.Port)).String()
}

func (e *Endpoint) equal(o *Endpoint) bool { return *e == *o }

// ServicePortMap holds every ServicePort by name.
type ServicePortMap map[ServicePortName]*ServicePort

// EndpointsMap holds the endpoints of every ServicePort, sorted by IP then port so that
// generated rules are stable.
type EndpointsMap map[ServicePortName][]*Endpoint

// UsableEndpoints applies the traffic policies and the serving-terminating fallback: it
// returns the endpoints traffic to the ClusterIP may go to, and those traffic to the NodePort,
// external IPs and LoadBalancer IPs may go to, plus how many endpoints on this node are
// usable (what healthCheckNodePort reports).
//
// As upstream (KEP-1669): ready endpoints are used; only when none is ready are serving,
// terminating ones used, so connections drain instead of failing during a rollout.
func UsableEndpoints(p *ServicePort, eps []*Endpoint) (cluster, external []*Endpoint, localCount int) {
	all := readyOrServing(eps, false)
	local := readyOrServing(eps, true)
	cluster = all
	if p.InternalPolicyLocal {
		cluster = local
	}
	external = all
	if p.ExternalPolicyLocal && p.ExternallyAccessible() {
		external = local
	}
	return cluster, external, len(local)
}

func readyOrServing(eps []*Endpoint, localOnly bool) []*Endpoint {
	var ready, terminating []*Endpoint
	for _, e := range eps {
		if localOnly && !e.IsLocal {
			continue
		}
		switch {
		case e.Ready:
			ready = append(ready, e)
		case e.Serving && e.Terminating:
			terminating = append(terminating, e)
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return terminating
}

// ShortHash is a stable, short name for a ServicePort, usable in kernel object names
// (nftables chain names are limited to 255 bytes, but short names keep transactions small).
func (n ServicePortName) ShortHash() string {
	// FNV-1a 64: collisions among 10^5 names are ~10^-9 likely; names also carry the
	// readable prefix so a collision would be visible in a dump.
	h := uint64(14695981039346656037)
	for _, s := range []string{n.Namespace, "/", n.Name, ":", n.Port, "/", string(n.Protocol)} {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= 1099511628211
		}
	}
	return fmt.Sprintf("%016x", h)
}

// ChangeTime is when an object change that a sync programs was made, for the
// network-programming latency metric.
type ChangeTime = time.Time
