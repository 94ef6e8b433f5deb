package nftables

// Addresses used by the tests: Services in 10.96.0.0/12 (ClusterIPs), external IPs in
// 192.0.2.0/24 (TEST-NET-1, only ever inside rules and fresh namespaces), LoadBalancer IPs in
// 10.251.0.0/24, Pods (endpoints) in 10.244.0.0/16 with this node's Pods in 10.244.1.0/24,
// the node at 10.250.0.11, an outside client at 10.250.0.200.

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/svcplane/svcplane/pkg/proxy"
)

const testNode = "node1"

type svcOpt func(*corev1.Service)

func makeService(name, clusterIP string, port int32, proto corev1.Protocol, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP, ClusterIPs: []string{clusterIP},
			Ports: []corev1.ServicePort{{Name: "p", Port: port, Protocol: proto}}},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

type ep struct {
	ip          string
	node        string
	ready       bool
	terminating bool
}

func makeSlice(svc string, port int32, proto corev1.Protocol, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: svc + "-abc", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("p"), Port: ptr.To(port), Protocol: ptr.To(proto)}},
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.ip}, NodeName: ptr.To(e.node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(e.ready), Serving: ptr.To(e.ready || e.terminating), Terminating: ptr.To(e.terminating)}})
	}
	return s
}

func testConfig() Config {
	return Config{Family: corev1.IPv4Protocol, ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		NodePortAddresses: []netip.Addr{netip.MustParseAddr("10.250.0.11")}}
}

// recorder is a Kernel that keeps the last transaction.
type recorder struct{ txs []*transaction }

func (r *recorder) Apply(tx *transaction) error { r.txs = append(r.txs, tx); return nil }

// scale returns a tracker holding n Services of e endpoints each.
func scale(n, e int) *proxy.Tracker {
	tr := proxy.NewTracker(corev1.IPv4Protocol, testNode, nil)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("svc%05d", i)
		tr.OnServiceAdd(makeService(name, fmt.Sprintf("10.96.%d.%d", i/250, i%250+1), 80, corev1.ProtocolTCP))
		var eps []ep
		for j := 0; j < e; j++ {
			k := i*e + j
			eps = append(eps, ep{ip: fmt.Sprintf("10.%d.%d.%d", 128+k/65536, (k/256)%256, k%256), node: "node2", ready: true})
		}
		tr.OnEndpointSliceAdd(makeSlice(name, 8080, corev1.ProtocolTCP, eps...))
	}
	tr.OnServiceSynced()
	tr.OnEndpointSlicesSynced()
	return tr
}
