package nftables

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

type testService struct {
	svc   *corev1.Service
	slice *discoveryv1.EndpointSlice
}

// ruleTestServices covers every kind of rule the proxier generates.
func ruleTestServices() []testService {
	nodePort := func(np int32) svcOpt {
		return func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort; s.Spec.Ports[0].NodePort = np }
	}
	local := func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 32000
	}
	return []testService{
		{makeService("web", "10.96.0.1", 80, corev1.ProtocolTCP),
			makeSlice("web", 8080, corev1.ProtocolTCP, ep{"10.244.1.2", testNode, true, false}, ep{"10.244.2.2", "node2", true, false}, ep{"10.244.2.3", "node2", false, false})},
		{makeService("single", "10.96.0.2", 80, corev1.ProtocolTCP, func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"192.0.2.7"} }),
			makeSlice("single", 8080, corev1.ProtocolTCP, ep{"10.244.2.4", "node2", true, false})},
		{makeService("empty", "10.96.0.3", 80, corev1.ProtocolTCP), nil},
		{makeService("np", "10.96.0.4", 80, corev1.ProtocolTCP, nodePort(30080)),
			makeSlice("np", 8080, corev1.ProtocolTCP, ep{"10.244.2.5", "node2", true, false}, ep{"10.244.3.5", "node3", true, false})},
		{makeService("udp", "10.96.0.5", 53, corev1.ProtocolUDP), makeSlice("udp", 5353, corev1.ProtocolUDP, ep{"10.244.1.5", testNode, true, false})},
		{makeService("sctp", "10.96.0.6", 9, corev1.ProtocolSCTP), makeSlice("sctp", 9, corev1.ProtocolSCTP, ep{"10.244.2.6", "node2", true, false})},
		{makeService("local", "10.96.0.7", 80, corev1.ProtocolTCP, func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.Ports[0].NodePort = 30081
			local(s)
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.251.0.1"}}
		}), makeSlice("local", 8080, corev1.ProtocolTCP, ep{"10.244.1.7", testNode, true, false}, ep{"10.244.2.7", "node2", true, false})},
		{makeService("remote-only", "10.96.0.8", 80, corev1.ProtocolTCP, nodePort(30082), local),
			makeSlice("remote-only", 8080, corev1.ProtocolTCP, ep{"10.244.2.8", "node2", true, false})},
		{makeService("affinity", "10.96.0.9", 80, corev1.ProtocolTCP, func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](10)}}
		}), makeSlice("affinity", 8080, corev1.ProtocolTCP, ep{"10.244.1.9", testNode, true, false}, ep{"10.244.2.9", "node2", true, false})},
		{makeService("draining", "10.96.0.10", 80, corev1.ProtocolTCP),
			makeSlice("draining", 8080, corev1.ProtocolTCP, ep{"10.244.2.10", "node2", false, true}, ep{"10.244.2.11", "node2", false, false})},
		{makeService("itp-local", "10.96.0.11", 80, corev1.ProtocolTCP, func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
		}), makeSlice("itp-local", 8080, corev1.ProtocolTCP, ep{"10.244.1.11", testNode, true, false}, ep{"10.244.2.12", "node2", true, false})},
	}
}
