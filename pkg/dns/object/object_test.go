package object

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ptr[T any](v T) *T { return &v }

func TestToServiceKeepsOnlyWhatDNSAnswers(t *testing.T) {
	cases := []struct {
		rule string
		in   corev1.Service
		want Service
	}{
		{
			rule: "ClusterIP Service: addresses of both families, lower-case port names",
			in: corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", Labels: map[string]string{"dropped": "yes"}},
				Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.5", ClusterIPs: []string{"10.96.0.5", "fd00::5"},
					Ports: []corev1.ServicePort{{Name: "HTTP", Protocol: corev1.ProtocolTCP, Port: 80}}},
			},
			want: Service{Namespace: "ns", Name: "web", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.5"), netip.MustParseAddr("fd00::5")},
				Ports: []Port{{Name: "http", Protocol: "tcp", Port: 80}}},
		},
		{
			rule: "only the singular clusterIP field (old clients)",
			in:   corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "old", Namespace: "ns"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.6"}},
			want: Service{Namespace: "ns", Name: "old", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.6")}},
		},
		{
			rule: "headless",
			in: corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "ns"},
				Spec: corev1.ServiceSpec{ClusterIP: "None", ClusterIPs: []string{"None"}, PublishNotReadyAddresses: true}},
			want: Service{Namespace: "ns", Name: "db", Headless: true, PublishNotReady: true},
		},
		{
			rule: "ExternalName is fully qualified and lower case",
			in: corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext", Namespace: "ns"},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "WWW.Example.org"}},
			want: Service{Namespace: "ns", Name: "ext", ExternalName: "www.example.org."},
		},
	}
	for _, tc := range cases {
		t.Run(tc.rule, func(t *testing.T) {
			if got := ToService(&tc.in); !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

func TestToEndpointSliceTreatsUnknownReadinessAsReady(t *testing.T) {
	in := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "db-abc", Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("PG"), Port: ptr(int32(5432))}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.1"}, Hostname: ptr("DB-0")},
			{Addresses: []string{"10.0.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}},
			{Addresses: []string{"not-an-ip"}},
		},
	}
	want := EndpointSlice{Namespace: "ns", Name: "db-abc", Service: "db",
		Ports: []Port{{Name: "pg", Protocol: "tcp", Port: 5432}},
		Endpoints: []Endpoint{
			{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Hostname: "db-0", Ready: true},
			{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.2")}},
		}}
	if got := ToEndpointSlice(in); !reflect.DeepEqual(*got, want) {
		t.Errorf("got %+v\nwant %+v", *got, want)
	}
}

func TestEndpointNameWithoutHostnameIsTheDashedAddress(t *testing.T) {
	for addr, want := range map[string]string{
		"10.244.1.5": "10-244-1-5",
		"fd00::5":    "fd00--5",
		"fd00::":     "fd00--0", // a label must not end with '-'
	} {
		if got := EndpointName(&Endpoint{}, netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: got %q, want %q", addr, got, want)
		}
	}
	if got := EndpointName(&Endpoint{Hostname: "db-0"}, netip.MustParseAddr("10.0.0.1")); got != "db-0" {
		t.Errorf("hostname: got %q", got)
	}
}
