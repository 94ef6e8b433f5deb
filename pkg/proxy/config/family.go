package config

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// FamilyHandler is a Handler that serves one IP family (a pkg/proxy Tracker of that family).
type FamilyHandler struct {
	Family  corev1.IPFamily
	Handler Handler
}

// PerFamily returns a Handler that delivers every event to one handler per IP family, so that
// one set of informers feeds both tables of a dual-stack node. Each handler sees only the
// Services with a ClusterIP of its family, as kube-proxy's per-family trackers do: a node must
// not hold (and sync) every IPv4-only Service a second time in its IPv6 tracker. A Service
// whose families change in an update (SingleStack to PreferDualStack, or back) is added to, or
// deleted from, the handler of the family it gained or lost. EndpointSlices go to every
// handler; a Tracker keeps only the slices of its own address type.
func PerFamily(handlers ...FamilyHandler) Handler {
	return perFamily(handlers)
}

type perFamily []FamilyHandler

func (p perFamily) OnServiceAdd(s *corev1.Service) {
	for _, h := range p {
		if hasClusterIPOf(s, h.Family) {
			h.Handler.OnServiceAdd(s)
		}
	}
}

func (p perFamily) OnServiceUpdate(old, cur *corev1.Service) {
	for _, h := range p {
		was, is := hasClusterIPOf(old, h.Family), hasClusterIPOf(cur, h.Family)
		switch {
		case was && is:
			h.Handler.OnServiceUpdate(old, cur)
		case is:
			h.Handler.OnServiceAdd(cur)
		case was:
			h.Handler.OnServiceDelete(old)
		}
	}
}

func (p perFamily) OnServiceDelete(s *corev1.Service) {
	for _, h := range p {
		if hasClusterIPOf(s, h.Family) {
			h.Handler.OnServiceDelete(s)
		}
	}
}

func (p perFamily) OnServiceSynced() {
	for _, h := range p {
		h.Handler.OnServiceSynced()
	}
}

func (p perFamily) OnEndpointSliceAdd(s *discoveryv1.EndpointSlice) {
	for _, h := range p {
		h.Handler.OnEndpointSliceAdd(s)
	}
}

func (p perFamily) OnEndpointSliceUpdate(old, cur *discoveryv1.EndpointSlice) {
	for _, h := range p {
		h.Handler.OnEndpointSliceUpdate(old, cur)
	}
}

func (p perFamily) OnEndpointSliceDelete(s *discoveryv1.EndpointSlice) {
	for _, h := range p {
		h.Handler.OnEndpointSliceDelete(s)
	}
}

func (p perFamily) OnEndpointSlicesSynced() {
	for _, h := range p {
		h.Handler.OnEndpointSlicesSynced()
	}
}

// hasClusterIPOf says whether s has a ClusterIP of family. Objects written before
// spec.clusterIPs existed carry only spec.clusterIP. Headless and ExternalName Services have
// none, and no proxy serves them.
func hasClusterIPOf(s *corev1.Service, family corev1.IPFamily) bool {
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	for _, raw := range ips {
		a, err := netip.ParseAddr(raw)
		if err != nil {
			continue
		}
		if a.Unmap().Is4() == (family == corev1.IPv4Protocol) {
			return true
		}
	}
	return false
}
