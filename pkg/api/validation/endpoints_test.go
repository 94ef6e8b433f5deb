package validation

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Addresses used below: 10.244.1.0/24 and fd00:10:244:1::/64 as pod addresses.

func newEndpoints(mods ...func(*corev1.EndpointSubset)) *corev1.Endpoints {
	subset := corev1.EndpointSubset{
		Addresses: []corev1.EndpointAddress{{IP: "10.244.1.5", NodeName: ptr.To("node-1")}},
		Ports:     []corev1.EndpointPort{{Port: 8080, Protocol: corev1.ProtocolTCP}},
	}
	for _, mod := range mods {
		mod(&subset)
	}
	return &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Subsets:    []corev1.EndpointSubset{subset},
	}
}

func withAddress(ip string) func(*corev1.EndpointSubset) {
	return func(s *corev1.EndpointSubset) { s.Addresses = []corev1.EndpointAddress{{IP: ip}} }
}

func withEndpointPorts(ports ...corev1.EndpointPort) func(*corev1.EndpointSubset) {
	return func(s *corev1.EndpointSubset) { s.Ports = ports }
}

func TestValidateEndpoints(t *testing.T) {
	tests := []struct {
		name string
		ep   *corev1.Endpoints
		want []wantErr
	}{
		{name: "one address, one port", ep: newEndpoints()},
		{name: "no subsets", ep: &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}}},
		{name: "IPv6 address", ep: newEndpoints(withAddress("fd00:10:244:1::5"))},
		// upstream: validateEndpointSubsets, headless Services' subsets may lack ports.
		{name: "no ports", ep: newEndpoints(withEndpointPorts())},
		{name: "only notReadyAddresses", ep: newEndpoints(func(s *corev1.EndpointSubset) {
			s.NotReadyAddresses, s.Addresses = s.Addresses, nil
		})},
		{name: "hostname", ep: newEndpoints(func(s *corev1.EndpointSubset) { s.Addresses[0].Hostname = "web-0" })},
		// upstream: validateEndpointPort checks no uniqueness of names.
		{name: "duplicate port names", ep: newEndpoints(withEndpointPorts(
			corev1.EndpointPort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
			corev1.EndpointPort{Name: "http", Port: 81, Protocol: corev1.ProtocolTCP}))},
		{name: "appProtocol", ep: newEndpoints(func(s *corev1.EndpointSubset) { s.Ports[0].AppProtocol = ptr.To("http") })},

		// upstream: validateEndpointSubsets, each subset has an address.
		{name: "subset without addresses", ep: newEndpoints(func(s *corev1.EndpointSubset) { s.Addresses = nil }),
			want: []wantErr{required("subsets[0]", "must specify `addresses` or `notReadyAddresses`")}},
		// upstream: validateEndpointAddress, parse and special-range checks both report a bad IP.
		{name: "address not an IP", ep: newEndpoints(withAddress("pod-a")),
			want: []wantErr{
				invalid("subsets[0].addresses[0].ip", "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
				invalid("subsets[0].addresses[0].ip", "must be a valid IP address"),
			}},
		{name: "address with leading zeros", ep: newEndpoints(withAddress("10.244.1.05")),
			want: []wantErr{invalid("subsets[0].addresses[0].ip", "must not have leading 0s")}},
		{name: "IPv4-mapped IPv6 address", ep: newEndpoints(withAddress("::ffff:10.244.1.5")),
			want: []wantErr{invalid("subsets[0].addresses[0].ip", "must not be an IPv4-mapped IPv6 address")}},
		// upstream: ValidateEndpointIP, no loopback, link-local or link-local multicast.
		{name: "loopback address", ep: newEndpoints(withAddress("127.0.0.1")),
			want: []wantErr{invalid("subsets[0].addresses[0].ip", "loopback range")}},
		{name: "IPv6 loopback address", ep: newEndpoints(withAddress("::1")),
			want: []wantErr{invalid("subsets[0].addresses[0].ip", "loopback range")}},
		{name: "unspecified address", ep: newEndpoints(withAddress("::")),
			want: []wantErr{invalid("subsets[0].addresses[0].ip", "may not be unspecified")}},
		{name: "link-local 169.254/16", ep: newEndpoints(withAddress("169.254.0.1")),
			want: []wantErr{invalid("subsets[0].addresses[0].ip", "link-local range (169.254.0.0/16, fe80::/10)")}},
		{name: "link-local fe80::/10", ep: newEndpoints(withAddress("fe80::1")),
			want: []wantErr{invalid("subsets[0].addresses[0].ip", "link-local range")}},
		{name: "link-local fe80::/10 outside fe80::/64", ep: newEndpoints(withAddress("febf::1")),
			want: []wantErr{invalid("subsets[0].addresses[0].ip", "link-local range")}},
		{name: "link-local multicast 224.0.0.0/24", ep: newEndpoints(withAddress("224.0.0.1")),
			want: []wantErr{invalid("subsets[0].addresses[0].ip", "link-local multicast range (224.0.0.0/24, ff02::/10)")}},
		{name: "link-local multicast ff02::/16", ep: newEndpoints(withAddress("ff02::fb")),
			want: []wantErr{invalid("subsets[0].addresses[0].ip", "link-local multicast range")}},
		// upstream: only those ranges; other multicast passes.
		{name: "global multicast passes", ep: newEndpoints(withAddress("239.1.1.1"))},
		{name: "bad notReadyAddress", ep: newEndpoints(func(s *corev1.EndpointSubset) {
			s.NotReadyAddresses = []corev1.EndpointAddress{{IP: "127.0.0.2"}}
		}), want: []wantErr{invalid("subsets[0].notReadyAddresses[0].ip")}},
		// upstream: validateEndpointAddress, hostname is a DNS label, nodeName a DNS subdomain.
		{name: "invalid hostname", ep: newEndpoints(func(s *corev1.EndpointSubset) { s.Addresses[0].Hostname = "web.0" }),
			want: []wantErr{invalid("subsets[0].addresses[0].hostname", "must not contain dots")}},
		{name: "invalid nodeName", ep: newEndpoints(func(s *corev1.EndpointSubset) { s.Addresses[0].NodeName = ptr.To("Node_1") }),
			want: []wantErr{invalid("subsets[0].addresses[0].nodeName")}},
		// upstream: validateEndpointPort.
		{name: "second port unnamed", ep: newEndpoints(withEndpointPorts(
			corev1.EndpointPort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
			corev1.EndpointPort{Port: 81, Protocol: corev1.ProtocolTCP})),
			want: []wantErr{required("subsets[0].ports[1].name")}},
		{name: "invalid port name", ep: newEndpoints(withEndpointPorts(corev1.EndpointPort{Name: "HTTP", Port: 80, Protocol: corev1.ProtocolTCP})),
			want: []wantErr{invalid("subsets[0].ports[0].name")}},
		{name: "port 0", ep: newEndpoints(withEndpointPorts(corev1.EndpointPort{Port: 0, Protocol: corev1.ProtocolTCP})),
			want: []wantErr{invalid("subsets[0].ports[0].port", "must be between 1 and 65535")}},
		{name: "no protocol", ep: newEndpoints(withEndpointPorts(corev1.EndpointPort{Port: 80})),
			want: []wantErr{required("subsets[0].ports[0].protocol")}},
		{name: "unknown protocol", ep: newEndpoints(withEndpointPorts(corev1.EndpointPort{Port: 80, Protocol: "QUIC"})),
			want: []wantErr{unsupported("subsets[0].ports[0].protocol", `supported values: "SCTP", "TCP", "UDP"`)}},
		{name: "invalid appProtocol", ep: newEndpoints(func(s *corev1.EndpointSubset) { s.Ports[0].AppProtocol = ptr.To("a b") }),
			want: []wantErr{invalid("subsets[0].ports[0].appProtocol")}},
		{name: "second subset bad", ep: func() *corev1.Endpoints {
			ep := newEndpoints()
			ep.Subsets = append(ep.Subsets, corev1.EndpointSubset{Addresses: []corev1.EndpointAddress{{IP: "10.244.1.6"}, {IP: "169.254.1.1"}}})
			return ep
		}(), want: []wantErr{invalid("subsets[1].addresses[1].ip")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expectErrors(t, ValidateEndpoints(tc.ep), tc.want)
		})
	}
}

func TestValidateEndpointsUpdate(t *testing.T) {
	legacy := newEndpoints(withAddress("10.244.1.05"))
	relabeled := legacy.DeepCopy()
	relabeled.Labels = map[string]string{"edited": "true"}
	tests := []struct {
		name    string
		old, ep *corev1.Endpoints
		want    []wantErr
	}{
		{name: "change addresses", old: newEndpoints(), ep: newEndpoints(withAddress("10.244.1.6"))},
		// upstream: ValidateEndpointsUpdate allows nodeName changes (reused node IPs).
		{name: "change nodeName", old: newEndpoints(), ep: newEndpoints(func(s *corev1.EndpointSubset) { s.Addresses[0].NodeName = ptr.To("node-2") })},
		// upstream (KEP-4858): stored invalid IPs stay while subsets are untouched...
		{name: "label edit keeps stored leading-zero IP", old: legacy, ep: relabeled},
		// ... and must be fixed once subsets change.
		{name: "subset change revalidates stored IP", old: legacy, ep: newEndpoints(withAddress("10.244.1.05"), withEndpointPorts()),
			want: []wantErr{invalid("subsets[0].addresses[0].ip", "must not have leading 0s")}},
		{name: "update applies create rules", old: newEndpoints(), ep: newEndpoints(withAddress("127.0.0.1")),
			want: []wantErr{invalid("subsets[0].addresses[0].ip")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expectErrors(t, ValidateEndpointsUpdate(tc.ep, tc.old), tc.want)
		})
	}
}
