package endpointslicemirroring

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilnet "k8s.io/utils/net"
)

// group is the content of one mirrored slice: the endpoints that share an address type and a
// port list.
type group struct {
	key         string
	addressType discoveryv1.AddressType
	ports       []discoveryv1.EndpointPort
	endpoints   []discoveryv1.Endpoint
	seen        map[string]bool
}

// plan is what one Endpoints object mirrors to, plus what had to be left out.
type plan struct {
	groups  []*group // sorted by key
	invalid int      // addresses that are not IPs
	over    int      // addresses past the per-subset limit
}

// planMirror turns the subsets of endpoints into slice contents. As upstream: at most limit
// addresses of a subset are mirrored (ready ones first), an address that does not parse as an
// IP is skipped, IPv4 and IPv6 addresses go to separate slices, and subsets with the same ports
// share a slice.
func planMirror(endpoints *corev1.Endpoints, limit int) plan {
	var p plan
	byKey := map[string]*group{}
	for _, subset := range endpoints.Subsets {
		ports := mirrorPorts(subset.Ports)
		added := 0
		addAll := func(addresses []corev1.EndpointAddress, ready bool) {
			for _, address := range addresses {
				if added >= limit {
					p.over++
					continue
				}
				ip := utilnet.ParseIPSloppy(address.IP)
				if ip == nil {
					p.invalid++
					continue
				}
				addressType := discoveryv1.AddressTypeIPv4
				if ip.To4() == nil {
					addressType = discoveryv1.AddressTypeIPv6
				}
				key := string(addressType) + "|" + portsKey(ports)
				g := byKey[key]
				if g == nil {
					g = &group{key: key, addressType: addressType, ports: ports, seen: map[string]bool{}}
					byKey[key] = g
				}
				if len(g.endpoints) >= limit {
					p.over++
					continue
				}
				endpoint := mirrorEndpoint(address, ip.String(), ready)
				if id := endpointID(&endpoint); !g.seen[id] {
					g.seen[id] = true
					g.endpoints = append(g.endpoints, endpoint)
				}
				added++
			}
		}
		addAll(subset.Addresses, true)
		addAll(subset.NotReadyAddresses, false)
	}
	for _, g := range byKey {
		slices.SortFunc(g.endpoints, compareEndpoints)
		p.groups = append(p.groups, g)
	}
	slices.SortFunc(p.groups, func(a, b *group) int { return cmp.Compare(a.key, b.key) })
	return p
}

func mirrorEndpoint(address corev1.EndpointAddress, ip string, ready bool) discoveryv1.Endpoint {
	endpoint := discoveryv1.Endpoint{
		// Re-stringified so that legacy spellings ("010.1.2.3") become what slices require.
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		NodeName:   address.NodeName,
	}
	if address.TargetRef != nil {
		ref := *address.TargetRef
		endpoint.TargetRef = &ref
	}
	if address.Hostname != "" {
		hostname := address.Hostname
		endpoint.Hostname = &hostname
	}
	return endpoint
}

func mirrorPorts(ports []corev1.EndpointPort) []discoveryv1.EndpointPort {
	out := make([]discoveryv1.EndpointPort, 0, len(ports))
	for _, p := range ports {
		out = append(out, discoveryv1.EndpointPort{Name: &p.Name, Port: &p.Port, Protocol: &p.Protocol, AppProtocol: p.AppProtocol})
	}
	slices.SortFunc(out, func(a, b discoveryv1.EndpointPort) int {
		return cmp.Or(cmp.Compare(*a.Name, *b.Name), cmp.Compare(*a.Protocol, *b.Protocol), cmp.Compare(*a.Port, *b.Port))
	})
	return out
}

// portsKey identifies a port list regardless of order.
func portsKey(ports []discoveryv1.EndpointPort) string {
	parts := make([]string, 0, len(ports))
	for _, p := range ports {
		var name, protocol, appProtocol string
		var number int32
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			protocol = string(*p.Protocol)
		}
		if p.Port != nil {
			number = *p.Port
		}
		if p.AppProtocol != nil {
			appProtocol = *p.AppProtocol
		}
		parts = append(parts, fmt.Sprintf("%s/%s/%d/%s", name, protocol, number, appProtocol))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func endpointID(e *discoveryv1.Endpoint) string {
	var hostname, ref string
	if e.Hostname != nil {
		hostname = *e.Hostname
	}
	if e.TargetRef != nil {
		ref = e.TargetRef.Namespace + "/" + e.TargetRef.Name
	}
	return strings.Join(e.Addresses, ",") + "|" + hostname + "|" + ref
}

func compareEndpoints(a, b discoveryv1.Endpoint) int {
	return cmp.Compare(endpointID(&a), endpointID(&b))
}

// sliceLabels are the Endpoints' labels with the two that make the slice ours and tie it to its
// Service.
func sliceLabels(endpoints *corev1.Endpoints) map[string]string {
	out := maps.Clone(endpoints.Labels)
	if out == nil {
		out = map[string]string{}
	}
	out[discoveryv1.LabelServiceName] = endpoints.Name
	out[discoveryv1.LabelManagedBy] = ControllerName
	return out
}

// sliceAnnotations are the Endpoints' annotations minus those that describe the Endpoints object
// itself rather than its content.
func sliceAnnotations(endpoints *corev1.Endpoints) map[string]string {
	out := maps.Clone(endpoints.Annotations)
	delete(out, corev1.EndpointsLastChangeTriggerTime)
	delete(out, corev1.LastAppliedConfigAnnotation)
	if len(out) == 0 {
		return nil
	}
	return out
}

// newSlice builds the slice for g; name is empty for a slice to create.
func newSlice(endpoints *corev1.Endpoints, g *group, name string) *discoveryv1.EndpointSlice {
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   endpoints.Namespace,
			Labels:      sliceLabels(endpoints),
			Annotations: sliceAnnotations(endpoints),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(endpoints,
				schema.GroupVersionKind{Version: "v1", Kind: "Endpoints"})},
		},
		AddressType: g.addressType,
		Ports:       g.ports,
		Endpoints:   g.endpoints,
	}
	if name == "" {
		slice.GenerateName = endpoints.Name + "-"
	}
	return slice
}
