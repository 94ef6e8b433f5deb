package scheme

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// TestServiceDefaults pins the Service defaults against upstream's SetDefaults_Service
// (pkg/apis/core/v1/defaults.go). IP families and allocated values are the registry's job and
// are not set here.
func TestServiceDefaults(t *testing.T) {
	cluster := ptr.To(corev1.ServiceInternalTrafficPolicyCluster)
	clientIP3h := &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(10800))}}
	tests := []struct {
		name string
		in   corev1.ServiceSpec
		want corev1.ServiceSpec
	}{{
		// upstream: type ClusterIP, protocol TCP, targetPort = port, sessionAffinity None,
		// internalTrafficPolicy Cluster.
		name: "empty spec gets ClusterIP defaults",
		in:   corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		want: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			Ports:                 []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(80)}},
			SessionAffinity:       corev1.ServiceAffinityNone,
			InternalTrafficPolicy: cluster,
		},
	}, {
		// upstream: targetPort "" counts as unset too.
		name: "empty named targetPort becomes the port",
		in:   corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromString("")}}},
		want: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			Ports:                 []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)}},
			SessionAffinity:       corev1.ServiceAffinityNone,
			InternalTrafficPolicy: cluster,
		},
	}, {
		// upstream: a named targetPort is kept.
		name: "named targetPort is kept",
		in:   corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromString("http")}}},
		want: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			Ports:                 []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("http")}},
			SessionAffinity:       corev1.ServiceAffinityNone,
			InternalTrafficPolicy: cluster,
		},
	}, {
		// upstream: ClientIP affinity gets a 10800 s timeout.
		name: "ClientIP affinity gets a 3 hour timeout",
		in:   corev1.ServiceSpec{SessionAffinity: corev1.ServiceAffinityClientIP},
		want: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			SessionAffinity:       corev1.ServiceAffinityClientIP,
			SessionAffinityConfig: clientIP3h,
			InternalTrafficPolicy: cluster,
		},
	}, {
		// upstream: an explicit timeout is kept.
		name: "explicit ClientIP timeout is kept",
		in: corev1.ServiceSpec{SessionAffinity: corev1.ServiceAffinityClientIP,
			SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(60))}}},
		want: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			SessionAffinity:       corev1.ServiceAffinityClientIP,
			SessionAffinityConfig: &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(60))}},
			InternalTrafficPolicy: cluster,
		},
	}, {
		// upstream: with affinity None the config is dropped.
		name: "affinity None drops a config",
		in:   corev1.ServiceSpec{SessionAffinityConfig: clientIP3h},
		want: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			SessionAffinity:       corev1.ServiceAffinityNone,
			InternalTrafficPolicy: cluster,
		},
	}, {
		// upstream: externalTrafficPolicy Cluster for NodePort.
		name: "NodePort gets externalTrafficPolicy Cluster",
		in:   corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort},
		want: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeNodePort,
			SessionAffinity:       corev1.ServiceAffinityNone,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
			InternalTrafficPolicy: cluster,
		},
	}, {
		// upstream: LoadBalancer also gets allocateLoadBalancerNodePorts true.
		name: "LoadBalancer gets allocateLoadBalancerNodePorts",
		in:   corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
		want: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			SessionAffinity:               corev1.ServiceAffinityNone,
			ExternalTrafficPolicy:         corev1.ServiceExternalTrafficPolicyCluster,
			InternalTrafficPolicy:         cluster,
			AllocateLoadBalancerNodePorts: ptr.To(true),
		},
	}, {
		// upstream: explicit values are kept.
		name: "LoadBalancer keeps explicit policies",
		in: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyLocal), AllocateLoadBalancerNodePorts: ptr.To(false)},
		want: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			SessionAffinity:               corev1.ServiceAffinityNone,
			ExternalTrafficPolicy:         corev1.ServiceExternalTrafficPolicyLocal,
			InternalTrafficPolicy:         ptr.To(corev1.ServiceInternalTrafficPolicyLocal),
			AllocateLoadBalancerNodePorts: ptr.To(false),
		},
	}, {
		// upstream: ExternallyAccessible includes a ClusterIP Service with externalIPs.
		name: "ClusterIP with externalIPs gets externalTrafficPolicy",
		in:   corev1.ServiceSpec{ExternalIPs: []string{"192.0.2.10"}},
		want: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			ExternalIPs:           []string{"192.0.2.10"},
			SessionAffinity:       corev1.ServiceAffinityNone,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
			InternalTrafficPolicy: cluster,
		},
	}, {
		// upstream: ExternalName gets no traffic policies.
		name: "ExternalName gets no traffic policies",
		in:   corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"},
		want: corev1.ServiceSpec{
			Type:            corev1.ServiceTypeExternalName,
			ExternalName:    "example.com",
			SessionAffinity: corev1.ServiceAffinityNone,
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := &corev1.Service{Spec: *tc.in.DeepCopy()}
			Scheme.Default(svc)
			if diff := cmp.Diff(tc.want, svc.Spec); diff != "" {
				t.Errorf("defaulted spec differs (-want +got):\n%s", diff)
			}
		})
	}
}

// TestServiceStatusDefaults: upstream sets ipMode VIP on LoadBalancer ingress IPs.
func TestServiceStatusDefaults(t *testing.T) {
	svc := &corev1.Service{
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
			{IP: "192.0.2.1"}, {Hostname: "lb.example.com"},
		}}},
	}
	Scheme.Default(svc)
	ingress := svc.Status.LoadBalancer.Ingress
	if ingress[0].IPMode == nil || *ingress[0].IPMode != corev1.LoadBalancerIPModeVIP {
		t.Errorf("ingress[0].ipMode = %v, want VIP", ingress[0].IPMode)
	}
	if ingress[1].IPMode != nil {
		t.Errorf("ingress[1].ipMode = %v, want unset for a hostname", *ingress[1].IPMode)
	}
}

// TestEndpointDefaults: upstream SetDefaults_Endpoints and SetDefaults_EndpointPort (discovery).
func TestEndpointDefaults(t *testing.T) {
	ep := &corev1.Endpoints{Subsets: []corev1.EndpointSubset{{Ports: []corev1.EndpointPort{{Port: 80}}}}}
	Scheme.Default(ep)
	if got := ep.Subsets[0].Ports[0].Protocol; got != corev1.ProtocolTCP {
		t.Errorf("endpoints port protocol = %q, want TCP", got)
	}
	slice := &discoveryv1.EndpointSlice{Ports: []discoveryv1.EndpointPort{{Port: ptr.To(int32(80))}}}
	Scheme.Default(slice)
	if p := slice.Ports[0]; p.Name == nil || *p.Name != "" || p.Protocol == nil || *p.Protocol != corev1.ProtocolTCP {
		t.Errorf("slice port = %+v, want name \"\" and protocol TCP", p)
	}
}
