package validation

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Addresses used below: 10.244.1.0/24 and fd00:10:244:1::/64 as pod addresses.

func newSlice(addressType discoveryv1.AddressType, mods ...func(*discoveryv1.EndpointSlice)) *discoveryv1.EndpointSlice {
	address := map[discoveryv1.AddressType]string{
		discoveryv1.AddressTypeIPv4: "10.244.1.5",
		discoveryv1.AddressTypeIPv6: "fd00:10:244:1::5",
		discoveryv1.AddressTypeFQDN: "web-0.example.com",
	}[addressType]
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-abcde", Namespace: "default"},
		AddressType: addressType,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{address},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			NodeName:   ptr.To("node-1"),
			Zone:       ptr.To("zone-a"),
		}},
		Ports: []discoveryv1.EndpointPort{slicePort("http", 8080)},
	}
	for _, mod := range mods {
		mod(slice)
	}
	return slice
}

func slicePort(name string, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr.To(name), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}
}

func withSliceAddresses(addresses ...string) func(*discoveryv1.EndpointSlice) {
	return func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].Addresses = addresses }
}

func withSlicePorts(ports ...discoveryv1.EndpointPort) func(*discoveryv1.EndpointSlice) {
	return func(s *discoveryv1.EndpointSlice) { s.Ports = ports }
}

func withHints(hints discoveryv1.EndpointHints) func(*discoveryv1.EndpointSlice) {
	return func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].Hints = &hints }
}

func zones(names ...string) []discoveryv1.ForZone {
	var out []discoveryv1.ForZone
	for _, n := range names {
		out = append(out, discoveryv1.ForZone{Name: n})
	}
	return out
}

func nodes(names ...string) []discoveryv1.ForNode {
	var out []discoveryv1.ForNode
	for _, n := range names {
		out = append(out, discoveryv1.ForNode{Name: n})
	}
	return out
}

func manyEndpoints(n int) func(*discoveryv1.EndpointSlice) {
	return func(s *discoveryv1.EndpointSlice) {
		s.Endpoints = nil
		for i := range n {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.244.%d.%d", i/250, i%250+1)}})
		}
	}
}

func manyAddresses(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("10.244.1.%d", i+1))
	}
	return out
}

func manyPorts(n int) func(*discoveryv1.EndpointSlice) {
	return func(s *discoveryv1.EndpointSlice) {
		s.Ports = nil
		for i := range n {
			s.Ports = append(s.Ports, slicePort(fmt.Sprintf("p%d", i), int32(i%65535+1)))
		}
	}
}

func TestValidateEndpointSlice(t *testing.T) {
	tests := []struct {
		name  string
		slice *discoveryv1.EndpointSlice
		want  []wantErr
	}{
		{name: "IPv4 slice", slice: newSlice(discoveryv1.AddressTypeIPv4)},
		{name: "IPv6 slice", slice: newSlice(discoveryv1.AddressTypeIPv6)},
		{name: "FQDN slice", slice: newSlice(discoveryv1.AddressTypeFQDN)},
		// upstream: IsFullyQualifiedDomainName accepts a trailing dot.
		{name: "FQDN with trailing dot", slice: newSlice(discoveryv1.AddressTypeFQDN, withSliceAddresses("web-0.example.com."))},
		{name: "no endpoints, no ports", slice: newSlice(discoveryv1.AddressTypeIPv4, func(s *discoveryv1.EndpointSlice) {
			s.Endpoints, s.Ports = nil, nil
		})},
		// upstream: maxEndpoints = 1000, maxAddresses = 100, maxPorts = 20000.
		{name: "1000 endpoints", slice: newSlice(discoveryv1.AddressTypeIPv4, manyEndpoints(1000))},
		{name: "100 addresses", slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses(manyAddresses(100)...))},
		{name: "20000 ports", slice: newSlice(discoveryv1.AddressTypeIPv4, manyPorts(20000))},
		// upstream: validatePorts, one unnamed port is a unique name "".
		{name: "unnamed port", slice: newSlice(discoveryv1.AddressTypeIPv4, withSlicePorts(slicePort("", 80)))},
		{name: "unnamed and named ports", slice: newSlice(discoveryv1.AddressTypeIPv4, withSlicePorts(slicePort("", 80), slicePort("https", 443)))},
		{name: "UDP and SCTP ports", slice: newSlice(discoveryv1.AddressTypeIPv4, withSlicePorts(
			discoveryv1.EndpointPort{Name: ptr.To("dns"), Port: ptr.To(int32(53)), Protocol: ptr.To(corev1.ProtocolUDP)},
			discoveryv1.EndpointPort{Name: ptr.To("sctp"), Port: ptr.To(int32(9000)), Protocol: ptr.To(corev1.ProtocolSCTP)}))},
		{name: "appProtocol", slice: newSlice(discoveryv1.AddressTypeIPv4, func(s *discoveryv1.EndpointSlice) {
			s.Ports[0].AppProtocol = ptr.To("kubernetes.io/h2c")
		})},
		{name: "hostname", slice: newSlice(discoveryv1.AddressTypeIPv4, func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].Hostname = ptr.To("web-0") })},
		{name: "zone and node hints", slice: newSlice(discoveryv1.AddressTypeIPv4, withHints(discoveryv1.EndpointHints{
			ForZones: zones("zone-a", "zone-b"), ForNodes: nodes("node-1")}))},
		{name: "8 zone hints", slice: newSlice(discoveryv1.AddressTypeIPv4, withHints(discoveryv1.EndpointHints{
			ForZones: zones("a", "b", "c", "d", "e", "f", "g", "h")}))},

		// upstream: validateAddressType.
		{name: "no addressType", slice: newSlice("", withSliceAddresses("10.244.1.5")),
			want: []wantErr{required("addressType")}},
		{name: "deprecated addressType IP", slice: newSlice("IP", withSliceAddresses("10.244.1.5")),
			want: []wantErr{unsupported("addressType", `supported values: "FQDN", "IPv4", "IPv6"`)}},
		// upstream: validateEndpoints, limits.
		{name: "1001 endpoints", slice: newSlice(discoveryv1.AddressTypeIPv4, manyEndpoints(1001)),
			want: []wantErr{tooMany("endpoints", "must have at most 1000 items")}},
		{name: "endpoint without addresses", slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses()),
			want: []wantErr{required("endpoints[0].addresses", "must contain at least 1 address")}},
		{name: "101 addresses", slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses(manyAddresses(101)...)),
			want: []wantErr{tooMany("endpoints[0].addresses", "must have at most 100 items")}},
		// upstream: validateEndpoints, addresses of the slice's family, not special.
		{name: "IPv6 address in IPv4 slice", slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses("fd00:10:244:1::5")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "must be an IPv4 address")}},
		{name: "IPv4 address in IPv6 slice", slice: newSlice(discoveryv1.AddressTypeIPv6, withSliceAddresses("10.244.1.5")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "must be an IPv6 address")}},
		{name: "not an IP", slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses("10.244.1")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "must be a valid IP address")}},
		{name: "leading zeros", slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses("10.244.001.5")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "must not have leading 0s")}},
		{name: "IPv4-mapped in IPv6 slice", slice: newSlice(discoveryv1.AddressTypeIPv6, withSliceAddresses("::ffff:10.244.1.5")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "must not be an IPv4-mapped IPv6 address")}},
		{name: "loopback", slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses("127.0.0.53")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "loopback range")}},
		{name: "link-local", slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses("169.254.10.10")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "link-local range")}},
		{name: "IPv6 link-local", slice: newSlice(discoveryv1.AddressTypeIPv6, withSliceAddresses("fe80::abcd")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "link-local range")}},
		{name: "link-local multicast", slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses("224.0.0.18")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "link-local multicast range")}},
		{name: "IPv6 link-local multicast", slice: newSlice(discoveryv1.AddressTypeIPv6, withSliceAddresses("ff02::1")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "link-local multicast range")}},
		{name: "unspecified IPv6", slice: newSlice(discoveryv1.AddressTypeIPv6, withSliceAddresses("::")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "may not be unspecified")}},
		{name: "second address bad", slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses("10.244.1.5", "127.0.0.1")),
			want: []wantErr{invalid("endpoints[0].addresses[1]")}},
		// upstream: IsFullyQualifiedDomainName for FQDN slices.
		{name: "FQDN with one label", slice: newSlice(discoveryv1.AddressTypeFQDN, withSliceAddresses("web")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "should be a domain with at least two segments separated by dots")}},
		{name: "FQDN with wildcard", slice: newSlice(discoveryv1.AddressTypeFQDN, withSliceAddresses("*.example.com")),
			want: []wantErr{invalid("endpoints[0].addresses[0]")}},
		{name: "FQDN uppercase", slice: newSlice(discoveryv1.AddressTypeFQDN, withSliceAddresses("WEB.example.com")),
			want: []wantErr{invalid("endpoints[0].addresses[0]")}},
		// upstream: validateEndpoints, nodeName a node name, hostname a DNS label.
		{name: "invalid nodeName", slice: newSlice(discoveryv1.AddressTypeIPv4, func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].NodeName = ptr.To("node_1") }),
			want: []wantErr{invalid("endpoints[0].nodeName")}},
		{name: "invalid hostname", slice: newSlice(discoveryv1.AddressTypeIPv4, func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].Hostname = ptr.To("--web") }),
			want: []wantErr{invalid("endpoints[0].hostname")}},
		// upstream: validateHints.
		{name: "9 zone hints", slice: newSlice(discoveryv1.AddressTypeIPv4, withHints(discoveryv1.EndpointHints{
			ForZones: zones("a", "b", "c", "d", "e", "f", "g", "h", "i")})),
			want: []wantErr{tooMany("endpoints[0].hints.forZones", "must have at most 8 items")}},
		{name: "duplicate zone hint", slice: newSlice(discoveryv1.AddressTypeIPv4, withHints(discoveryv1.EndpointHints{ForZones: zones("zone-a", "zone-b", "zone-a")})),
			want: []wantErr{duplicate("endpoints[0].hints.forZones[2].name", `Duplicate value: "zone-a"`)}},
		{name: "invalid zone hint", slice: newSlice(discoveryv1.AddressTypeIPv4, withHints(discoveryv1.EndpointHints{ForZones: zones("inv@lid")})),
			want: []wantErr{invalid("endpoints[0].hints.forZones[0].name")}},
		{name: "9 node hints", slice: newSlice(discoveryv1.AddressTypeIPv4, withHints(discoveryv1.EndpointHints{
			ForNodes: nodes("a", "b", "c", "d", "e", "f", "g", "h", "i")})),
			want: []wantErr{tooMany("endpoints[0].hints.forNodes")}},
		{name: "duplicate node hint", slice: newSlice(discoveryv1.AddressTypeIPv4, withHints(discoveryv1.EndpointHints{ForNodes: nodes("node-1", "node-1")})),
			want: []wantErr{duplicate("endpoints[0].hints.forNodes[1].name")}},
		{name: "invalid node hint", slice: newSlice(discoveryv1.AddressTypeIPv4, withHints(discoveryv1.EndpointHints{ForNodes: nodes("Node 1")})),
			want: []wantErr{invalid("endpoints[0].hints.forNodes[0].name")}},
		// upstream: validatePorts.
		{name: "20001 ports", slice: newSlice(discoveryv1.AddressTypeIPv4, manyPorts(20001)),
			want: []wantErr{tooMany("ports", "must have at most 20000 items")}},
		{name: "two unnamed ports", slice: newSlice(discoveryv1.AddressTypeIPv4, withSlicePorts(slicePort("", 80), slicePort("", 81))),
			want: []wantErr{duplicate("ports[1].name", `Duplicate value: ""`)}},
		{name: "duplicate port names", slice: newSlice(discoveryv1.AddressTypeIPv4, withSlicePorts(slicePort("http", 80), slicePort("http", 81))),
			want: []wantErr{duplicate("ports[1].name")}},
		{name: "port name with underscore", slice: newSlice(discoveryv1.AddressTypeIPv4, withSlicePorts(slicePort("almost_valid", 80))),
			want: []wantErr{invalid("ports[0].name")}},
		{name: "64-character port name", slice: newSlice(discoveryv1.AddressTypeIPv4, withSlicePorts(slicePort(strings.Repeat("a", 64), 80))),
			want: []wantErr{invalid("ports[0].name")}},
		{name: "no protocol", slice: newSlice(discoveryv1.AddressTypeIPv4, func(s *discoveryv1.EndpointSlice) { s.Ports[0].Protocol = nil }),
			want: []wantErr{required("ports[0].protocol")}},
		{name: "unknown protocol", slice: newSlice(discoveryv1.AddressTypeIPv4, func(s *discoveryv1.EndpointSlice) { s.Ports[0].Protocol = ptr.To(corev1.Protocol("foo")) }),
			want: []wantErr{unsupported("ports[0].protocol")}},
		{name: "invalid appProtocol", slice: newSlice(discoveryv1.AddressTypeIPv4, func(s *discoveryv1.EndpointSlice) { s.Ports[0].AppProtocol = ptr.To("--") }),
			want: []wantErr{invalid("ports[0].appProtocol")}},
		{name: "empty slice object", slice: &discoveryv1.EndpointSlice{},
			want: []wantErr{required("addressType")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expectErrors(t, ValidateEndpointSlice(tc.slice), tc.want)
		})
	}
}

func TestValidateEndpointSliceUpdate(t *testing.T) {
	legacy := newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses("10.244.1.05"))
	relabeled := legacy.DeepCopy()
	relabeled.Labels = map[string]string{"edited": "true"}
	tests := []struct {
		name       string
		old, slice *discoveryv1.EndpointSlice
		want       []wantErr
	}{
		{name: "change endpoints", old: newSlice(discoveryv1.AddressTypeIPv4), slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses("10.244.1.6"))},
		// upstream: ValidateEndpointSliceUpdate, addressType is immutable.
		{name: "change addressType", old: newSlice(discoveryv1.AddressTypeIPv4), slice: newSlice(discoveryv1.AddressTypeIPv6),
			want: []wantErr{invalid("addressType", "field is immutable")}},
		{name: "change addressType to FQDN", old: newSlice(discoveryv1.AddressTypeIPv6), slice: newSlice(discoveryv1.AddressTypeFQDN),
			want: []wantErr{invalid("addressType", "field is immutable")}},
		// upstream (KEP-4858): stored invalid IPs stay while endpoints are untouched...
		{name: "label edit keeps stored leading-zero IP", old: legacy, slice: relabeled},
		// ... and must be fixed once endpoints change.
		{name: "endpoint change revalidates stored IP", old: legacy, slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses("10.244.1.05", "10.244.1.6")),
			want: []wantErr{invalid("endpoints[0].addresses[0]", "must not have leading 0s")}},
		{name: "update applies create rules", old: newSlice(discoveryv1.AddressTypeIPv4), slice: newSlice(discoveryv1.AddressTypeIPv4, withSliceAddresses("169.254.1.1")),
			want: []wantErr{invalid("endpoints[0].addresses[0]")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expectErrors(t, ValidateEndpointSliceUpdate(tc.slice, tc.old), tc.want)
		})
	}
}
