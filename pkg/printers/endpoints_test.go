package printers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

func addresses(ips ...string) []corev1.EndpointAddress {
	var as []corev1.EndpointAddress
	for _, ip := range ips {
		as = append(as, corev1.EndpointAddress{IP: ip})
	}
	return as
}

func TestEndpointsCells(t *testing.T) {
	http := []corev1.EndpointPort{{Name: "http", Port: 80}}
	for _, tc := range []struct {
		name    string
		subsets []corev1.EndpointSubset
		want    string
	}{
		{"no subsets shows none", nil, "<none>"},
		{"up to three addresses are listed", []corev1.EndpointSubset{{Addresses: addresses("10.0.0.1", "10.0.0.2", "10.0.0.3"), Ports: http}}, "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80"},
		{"more than three are summarised", []corev1.EndpointSubset{{Addresses: addresses("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"), Ports: http}}, "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more..."},
		{"every port is paired with every address, port by port", []corev1.EndpointSubset{{
			Addresses: addresses("10.0.0.1", "10.0.0.2"),
			Ports:     []corev1.EndpointPort{{Name: "http", Port: 80}, {Name: "https", Port: 443}},
		}}, "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."},
		{"not-ready addresses are not listed", []corev1.EndpointSubset{{Addresses: addresses("10.0.0.1"), NotReadyAddresses: addresses("10.0.0.2"), Ports: http}}, "10.0.0.1:80"},
		{"subsets are listed in order", []corev1.EndpointSubset{
			{Addresses: addresses("10.0.0.1"), Ports: http},
			{Addresses: addresses("10.0.0.9"), Ports: []corev1.EndpointPort{{Port: 8080}}},
		}, "10.0.0.1:80,10.0.0.9:8080"},
		{"headless subset without ports lists bare IPs", []corev1.EndpointSubset{{Addresses: addresses("10.0.0.1", "10.0.0.2")}}, "10.0.0.1,10.0.0.2"},
		{"IPv6 addresses are bracketed", []corev1.EndpointSubset{{Addresses: addresses("fd00::1"), Ports: http}}, "[fd00::1]:80"},
		{"subsets without ready addresses print empty", []corev1.EndpointSubset{{NotReadyAddresses: addresses("10.0.0.2"), Ports: http}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := &corev1.Endpoints{ObjectMeta: objectMeta("web", 10*time.Minute), Subsets: tc.subsets}
			table, err := ForEndpoints().ConvertToTable(t.Context(), ep, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := table.Rows[0].Cells
			if got[0] != "web" || got[1] != tc.want {
				t.Errorf("cells %#v, want endpoints %q", got, tc.want)
			}
		})
	}
}

func TestEndpointSliceCells(t *testing.T) {
	port := func(p int32) discoveryv1.EndpointPort { return discoveryv1.EndpointPort{Port: &p} }
	named := func(n string) discoveryv1.EndpointPort { return discoveryv1.EndpointPort{Name: &n} }
	endpoint := func(addrs ...string) discoveryv1.Endpoint { return discoveryv1.Endpoint{Addresses: addrs} }
	for _, tc := range []struct {
		name      string
		ports     []discoveryv1.EndpointPort
		endpoints []discoveryv1.Endpoint
		want      []any
	}{
		{
			name:      "ports and endpoint addresses are listed",
			ports:     []discoveryv1.EndpointPort{port(80), port(443)},
			endpoints: []discoveryv1.Endpoint{endpoint("10.0.0.1"), endpoint("10.0.0.2")},
			want:      []any{"web-abc12", "IPv4", "80,443", "10.0.0.1,10.0.0.2", "10m"},
		},
		{
			name:  "port without number shows its name, without either shows a star",
			ports: []discoveryv1.EndpointPort{named("http"), {}},
			want:  []any{"web-abc12", "IPv4", "http,*", "<unset>", "10m"},
		},
		{
			name:      "nothing set shows unset",
			endpoints: []discoveryv1.Endpoint{},
			want:      []any{"web-abc12", "IPv4", "<unset>", "<unset>", "10m"},
		},
		{
			name:      "more than three are summarised across endpoints",
			ports:     []discoveryv1.EndpointPort{port(1), port(2), port(3), port(4)},
			endpoints: []discoveryv1.Endpoint{endpoint("10.0.0.1", "10.0.0.2"), endpoint("10.0.0.3"), endpoint("10.0.0.4", "10.0.0.5")},
			want:      []any{"web-abc12", "IPv4", "1,2,3 + 1 more...", "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more...", "10m"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			slice := &discoveryv1.EndpointSlice{ObjectMeta: objectMeta("web-abc12", 10*time.Minute), AddressType: discoveryv1.AddressTypeIPv4, Ports: tc.ports, Endpoints: tc.endpoints}
			assertCells(t, endpointSliceCells(slice, testNow), tc.want)
		})
	}
}
