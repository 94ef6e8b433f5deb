package loadbalancer

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

func TestRequestedAddresses(t *testing.T) {
	c := &Controller{namespaces: corelisters.NewNamespaceLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}))}
	dual := []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	for _, tc := range []struct {
		name        string
		annotation  string
		legacy      string
		families    []corev1.IPFamily
		want        []string
		wantProblem string
	}{
		{name: "annotation", annotation: "10.251.0.5", want: []string{"10.251.0.5"}},
		{name: "annotation wins over spec.loadBalancerIP", annotation: "10.251.0.5", legacy: "10.251.0.6", want: []string{"10.251.0.5"}},
		{name: "spec.loadBalancerIP alone", legacy: "10.251.0.6", want: []string{"10.251.0.6"}},
		{name: "one per family", annotation: "10.251.0.5, fd00:251::5", families: dual, want: []string{"10.251.0.5", "fd00:251::5"}},
		{name: "not an IP", annotation: "10.251.0.x", wantProblem: `annotation svcplane.io/load-balancer-ips: "10.251.0.x" is not an IP address`},
		{name: "family the Service lacks", annotation: "fd00:251::5", wantProblem: "is IPv6 but the Service's ipFamilies are [IPv4]"},
		{name: "two of one family", annotation: "10.251.0.5,10.251.0.6", wantProblem: "more than one IPv4 address requested"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Annotations: map[string]string{}},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerIP: tc.legacy, IPFamilies: tc.families,
					Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
			}
			if tc.annotation != "" {
				svc.Annotations["svcplane.io/load-balancer-ips"] = tc.annotation
			}
			r, problems := c.requestFor(svc)
			if tc.wantProblem != "" {
				if len(problems) != 1 || !strings.Contains(problems[0], tc.wantProblem) {
					t.Fatalf("problems = %q, want %q", problems, tc.wantProblem)
				}
				return
			}
			if len(problems) > 0 {
				t.Fatalf("problems = %q", problems)
			}
			var got []string
			for _, f := range r.families {
				if ip, ok := r.requested[f]; ok {
					got = append(got, ip.String())
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("requested = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOursHonoursLoadBalancerClass(t *testing.T) {
	lb := func(class *string) *corev1.Service {
		return &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: class}}
	}
	if !ours(lb(nil)) || !ours(lb(ptr.To("svcplane.io/lb"))) {
		t.Error("a LoadBalancer without a class or with ours must be ours")
	}
	if ours(lb(ptr.To("example.com/other"))) {
		t.Error("another class's LoadBalancer must be left alone")
	}
	if ours(&corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort}}) {
		t.Error("a NodePort Service is not a LoadBalancer")
	}
}
