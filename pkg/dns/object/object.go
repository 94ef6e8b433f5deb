// Package object holds the slim copies of Services, EndpointSlices, Pods and Namespaces that the
// DNS index keeps. Conversion happens as each object arrives from the API, so the full objects
// (labels, annotations, managed fields, status) are garbage right after the watch event decodes;
// at 10,000 Services and 50,000 endpoints this is the difference between tens and hundreds of MB.
// Inside the API server the full objects are its watch cache's own: the conversions only read
// them, and keep nothing of theirs but strings.
//
// Keep these structs small: every field added here is multiplied by the size of the cluster.
package object

import (
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Port is a named port of a Service or of an EndpointSlice. Name and Protocol are lower case so
// that DNS labels (already lower-cased by the resolver) compare with ==.
type Port struct {
	Name     string
	Protocol string
	Port     uint16
}

// Service is what DNS needs of a v1.Service.
type Service struct {
	Namespace string
	Name      string
	// ClusterIPs is empty for headless and ExternalName Services.
	ClusterIPs []netip.Addr
	Headless   bool
	// ExternalName is the CNAME target as a fully qualified, lower-case name.
	ExternalName    string
	Ports           []Port
	PublishNotReady bool
}

// Endpoint is one endpoint of an EndpointSlice.
type Endpoint struct {
	Addresses []netip.Addr
	Hostname  string
	Ready     bool
}

// EndpointSlice is what DNS needs of a discovery/v1 EndpointSlice.
type EndpointSlice struct {
	Namespace string
	Name      string
	// Service is the value of the kubernetes.io/service-name label; slices without it belong to
	// no Service and are ignored.
	Service   string
	Ports     []Port
	Endpoints []Endpoint
}

// Pod is what DNS needs of a Pod for --pod-records=verified.
type Pod struct {
	Namespace string
	Name      string
	IPs       []netip.Addr
}

// ToService slims a v1.Service.
func ToService(s *corev1.Service) *Service {
	out := &Service{
		Namespace:       s.Namespace,
		Name:            s.Name,
		PublishNotReady: s.Spec.PublishNotReadyAddresses,
	}
	switch {
	case s.Spec.Type == corev1.ServiceTypeExternalName:
		out.ExternalName = fqdn(s.Spec.ExternalName)
	case s.Spec.ClusterIP == corev1.ClusterIPNone:
		out.Headless = true
	default:
		ips := s.Spec.ClusterIPs
		if len(ips) == 0 && s.Spec.ClusterIP != "" {
			// Objects written by old clients may carry only the singular field.
			ips = []string{s.Spec.ClusterIP}
		}
		out.ClusterIPs = parseAddrs(ips)
	}
	if len(s.Spec.Ports) > 0 {
		out.Ports = make([]Port, 0, len(s.Spec.Ports))
		for _, p := range s.Spec.Ports {
			out.Ports = append(out.Ports, Port{Name: strings.ToLower(p.Name), Protocol: strings.ToLower(string(p.Protocol)), Port: uint16(p.Port)})
		}
	}
	return out
}

// ToEndpointSlice slims a discovery/v1 EndpointSlice. Endpoints without a usable address are
// dropped; a nil ready condition counts as ready, as the EndpointSlice API defines.
func ToEndpointSlice(s *discoveryv1.EndpointSlice) *EndpointSlice {
	out := &EndpointSlice{
		Namespace: s.Namespace,
		Name:      s.Name,
		Service:   s.Labels[discoveryv1.LabelServiceName],
	}
	if s.AddressType == discoveryv1.AddressTypeFQDN {
		// FQDN slices name hosts, not addresses; DNS cannot publish them as A/AAAA records.
		return out
	}
	for _, p := range s.Ports {
		port := Port{Protocol: "tcp"}
		if p.Name != nil {
			port.Name = strings.ToLower(*p.Name)
		}
		if p.Protocol != nil {
			port.Protocol = strings.ToLower(string(*p.Protocol))
		}
		if p.Port != nil {
			port.Port = uint16(*p.Port)
		}
		out.Ports = append(out.Ports, port)
	}
	if len(s.Endpoints) > 0 {
		out.Endpoints = make([]Endpoint, 0, len(s.Endpoints))
	}
	for _, e := range s.Endpoints {
		addrs := parseAddrs(e.Addresses)
		if len(addrs) == 0 {
			continue
		}
		ep := Endpoint{Addresses: addrs, Ready: e.Conditions.Ready == nil || *e.Conditions.Ready}
		if e.Hostname != nil {
			ep.Hostname = strings.ToLower(*e.Hostname)
		}
		out.Endpoints = append(out.Endpoints, ep)
	}
	return out
}

// ToPod slims a v1.Pod to its namespace and IPs.
func ToPod(p *corev1.Pod) *Pod {
	ips := make([]string, 0, len(p.Status.PodIPs)+1)
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = append(ips, p.Status.PodIP)
	}
	return &Pod{Namespace: p.Namespace, Name: p.Name, IPs: parseAddrs(ips)}
}

// EndpointName is the DNS label of an endpoint: its hostname, or else its address with dashes
// for separators — the "system-assigned identifier" the specification leaves open, chosen to be
// the one CoreDNS answers to so clients see the same names from either server.
func EndpointName(e *Endpoint, addr netip.Addr) string {
	if e.Hostname != "" {
		return e.Hostname
	}
	return DashedAddr(addr)
}

// DashedAddr writes an address with '-' for '.' or ':'; an IPv6 address ending in "::" gets a
// trailing 0 because a DNS label cannot end with a hyphen.
func DashedAddr(addr netip.Addr) string {
	s := addr.String()
	if addr.Is4() {
		return strings.ReplaceAll(s, ".", "-")
	}
	s = strings.ReplaceAll(s, ":", "-")
	if strings.HasSuffix(s, "-") {
		s += "0"
	}
	return s
}

func parseAddrs(in []string) []netip.Addr {
	if len(in) == 0 {
		return nil
	}
	out := make([]netip.Addr, 0, len(in))
	for _, s := range in {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func fqdn(name string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	if name == "" || strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}
