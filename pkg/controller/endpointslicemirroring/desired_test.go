package endpointslicemirroring

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func renderPlan(p plan) string {
	var lines []string
	for _, g := range p.groups {
		var eps []string
		for _, e := range g.endpoints {
			eps = append(eps, fmt.Sprintf("%s/%v", e.Addresses[0], *e.Conditions.Ready))
		}
		lines = append(lines, fmt.Sprintf("%s %s: %s", g.addressType, portsKey(g.ports), strings.Join(eps, " ")))
	}
	return fmt.Sprintf("%s (invalid %d, over %d)", strings.Join(lines, "; "), p.invalid, p.over)
}

func ips(list ...string) []corev1.EndpointAddress {
	out := make([]corev1.EndpointAddress, len(list))
	for i, ip := range list {
		out[i].IP = ip
	}
	return out
}

func TestPlanMirror(t *testing.T) {
	http := []corev1.EndpointPort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}
	dns := []corev1.EndpointPort{{Name: "udp", Port: 53, Protocol: corev1.ProtocolUDP}, {Name: "tcp", Port: 53, Protocol: corev1.ProtocolTCP}}
	for _, tc := range []struct {
		name    string
		subsets []corev1.EndpointSubset
		limit   int
		want    string
	}{{
		name:    "ready and not-ready addresses keep their readiness; IPv4 and IPv6 split",
		subsets: []corev1.EndpointSubset{{Addresses: ips("10.0.0.1", "fd00::1"), NotReadyAddresses: ips("10.0.0.2"), Ports: http}},
		limit:   1000,
		want:    "IPv4 http/TCP/80/: 10.0.0.1/true 10.0.0.2/false; IPv6 http/TCP/80/: fd00::1/true (invalid 0, over 0)",
	}, {
		name:    "addresses that are not IPs are skipped and legacy spellings normalised",
		subsets: []corev1.EndpointSubset{{Addresses: ips("not-an-ip", "010.000.000.001"), Ports: http}},
		limit:   1000,
		want:    "IPv4 http/TCP/80/: 10.0.0.1/true (invalid 1, over 0)",
	}, {
		name:    "at most limit addresses of a subset are mirrored, ready ones first",
		subsets: []corev1.EndpointSubset{{Addresses: ips("10.0.0.1", "10.0.0.2"), NotReadyAddresses: ips("10.0.0.3"), Ports: http}},
		limit:   2,
		want:    "IPv4 http/TCP/80/: 10.0.0.1/true 10.0.0.2/true (invalid 0, over 1)",
	}, {
		name: "subsets with the same ports in any order share a slice; duplicates collapse",
		subsets: []corev1.EndpointSubset{
			{Addresses: ips("10.0.0.1"), Ports: dns},
			{Addresses: ips("10.0.0.2", "10.0.0.1"), Ports: []corev1.EndpointPort{dns[1], dns[0]}},
			{Addresses: ips("10.0.0.3"), Ports: http},
		},
		limit: 1000,
		want:  "IPv4 http/TCP/80/: 10.0.0.3/true; IPv4 tcp/TCP/53/,udp/UDP/53/: 10.0.0.1/true 10.0.0.2/true (invalid 0, over 0)",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "svc", Namespace: "ns"}, Subsets: tc.subsets}
			if got := renderPlan(planMirror(ep, tc.limit)); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestMirroredSliceMetadata(t *testing.T) {
	ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: "svc", Namespace: "ns", UID: "u1",
		Labels: map[string]string{"app": "db", discoveryv1.LabelManagedBy: "someone"},
		Annotations: map[string]string{"note": "kept", corev1.EndpointsLastChangeTriggerTime: "x",
			corev1.LastAppliedConfigAnnotation: "{}"}},
		Subsets: []corev1.EndpointSubset{{Addresses: ips("10.0.0.1"), Ports: []corev1.EndpointPort{{Port: 80, Protocol: corev1.ProtocolTCP}}}}}
	p := planMirror(ep, 1000)
	slice := newSlice(ep, p.groups[0], "")
	if slice.GenerateName != "svc-" || slice.Labels[discoveryv1.LabelManagedBy] != ControllerName ||
		slice.Labels[discoveryv1.LabelServiceName] != "svc" || slice.Labels["app"] != "db" {
		t.Errorf("labels %v, generateName %q", slice.Labels, slice.GenerateName)
	}
	if len(slice.Annotations) != 1 || slice.Annotations["note"] != "kept" {
		t.Errorf("annotations %v, want only the Endpoints' own content annotations", slice.Annotations)
	}
	if ref := slice.OwnerReferences; len(ref) != 1 || ref[0].Kind != "Endpoints" || ref[0].UID != "u1" {
		t.Errorf("owner references %v, want the Endpoints object", ref)
	}
	if !sameContent(slice, newSlice(ep, planMirror(ep, 1000).groups[0], "")) {
		t.Error("the same Endpoints planned twice compare different")
	}
}
