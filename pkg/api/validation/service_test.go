package validation

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Addresses used below: 10.96.0.0/12 and fd00:10:96::/108 as service ranges, 192.0.2.0/24 and
// 2001:db8::/32 (documentation ranges) as external and load-balancer addresses.

// newService returns a Service as validation sees it after defaulting and allocation: a
// single-stack IPv4 ClusterIP Service with one TCP port.
func newService(mods ...func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			ClusterIP:             "10.96.0.10",
			ClusterIPs:            []string{"10.96.0.10"},
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
			IPFamilyPolicy:        ptr.To(corev1.IPFamilyPolicySingleStack),
			Ports:                 []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}},
			Selector:              map[string]string{"app": "web"},
			SessionAffinity:       corev1.ServiceAffinityNone,
			InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyCluster),
		},
	}
	for _, mod := range mods {
		mod(svc)
	}
	return svc
}

func asNodePort(svc *corev1.Service) {
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	for i := range svc.Spec.Ports {
		svc.Spec.Ports[i].NodePort = int32(30080 + i)
	}
}

func asLoadBalancer(svc *corev1.Service) {
	asNodePort(svc)
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.AllocateLoadBalancerNodePorts = ptr.To(true)
}

func asLocalLoadBalancer(svc *corev1.Service) {
	asLoadBalancer(svc)
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	svc.Spec.HealthCheckNodePort = 31000
}

func asExternalName(svc *corev1.Service) {
	svc.Spec.Type = corev1.ServiceTypeExternalName
	svc.Spec.ExternalName = "db.example.com"
	svc.Spec.ClusterIP = ""
	svc.Spec.ClusterIPs = nil
	svc.Spec.IPFamilies = nil
	svc.Spec.IPFamilyPolicy = nil
	svc.Spec.InternalTrafficPolicy = nil
}

func asHeadless(svc *corev1.Service) {
	svc.Spec.ClusterIP = corev1.ClusterIPNone
	svc.Spec.ClusterIPs = []string{corev1.ClusterIPNone}
}

func asDualStack(svc *corev1.Service) {
	svc.Spec.ClusterIPs = []string{"10.96.0.10", "fd00:10:96::10"}
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
}

func withPorts(ports ...corev1.ServicePort) func(*corev1.Service) {
	return func(svc *corev1.Service) { svc.Spec.Ports = ports }
}

func withClusterIPs(ips ...string) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		svc.Spec.ClusterIP = ""
		if len(ips) > 0 {
			svc.Spec.ClusterIP = ips[0]
		}
		svc.Spec.ClusterIPs = ips
	}
}

func withExternalIPs(ips ...string) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		svc.Spec.ExternalIPs = ips
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	}
}

func tcp(name string, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(port)}
}

func udp(name string, port int32) corev1.ServicePort {
	p := tcp(name, port)
	p.Protocol = corev1.ProtocolUDP
	return p
}

func targeting(p corev1.ServicePort, target intstr.IntOrString) corev1.ServicePort {
	p.TargetPort = target
	return p
}

func TestValidateService(t *testing.T) {
	tests := []struct {
		name string
		svc  *corev1.Service
		want []wantErr
	}{
		// --- accepted ---
		{name: "plain ClusterIP Service", svc: newService()},
		// upstream: validateServicePort, one port may be unnamed.
		{name: "single unnamed port", svc: newService(withPorts(tcp("", 80)))},
		// upstream: isHeadlessService, headless Services need no ports.
		{name: "headless without ports", svc: newService(asHeadless, withPorts())},
		{name: "headless with ports", svc: newService(asHeadless)},
		// upstream: validateServicePort tolerates any targetPort on headless Services.
		{name: "headless with different targetPort", svc: newService(asHeadless, withPorts(targeting(tcp("", 80), intstr.FromString("web"))))},
		{name: "ExternalName", svc: newService(asExternalName)},
		// upstream: ValidateService, a trailing dot marks the name as fully qualified.
		{name: "ExternalName with trailing dot", svc: newService(asExternalName, func(s *corev1.Service) { s.Spec.ExternalName = "db.example.com." })},
		{name: "ExternalName without ports", svc: newService(asExternalName, withPorts())},
		{name: "NodePort", svc: newService(asNodePort)},
		{name: "LoadBalancer", svc: newService(asLoadBalancer)},
		{name: "LoadBalancer without node ports", svc: newService(asLoadBalancer, func(s *corev1.Service) {
			s.Spec.AllocateLoadBalancerNodePorts = ptr.To(false)
			s.Spec.Ports[0].NodePort = 0
		})},
		{name: "LoadBalancer with externalTrafficPolicy Local", svc: newService(asLocalLoadBalancer)},
		// upstream: NeedsHealthCheck is only LoadBalancer, so NodePort Local has no health-check port.
		{name: "NodePort with externalTrafficPolicy Local", svc: newService(asNodePort, func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		})},
		{name: "dual-stack", svc: newService(asDualStack)},
		{name: "dual-stack IPv6 first", svc: newService(func(s *corev1.Service) {
			s.Spec.ClusterIP = "fd00:10:96::10"
			s.Spec.ClusterIPs = []string{"fd00:10:96::10", "10.96.0.10"}
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
			s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack)
		})},
		// upstream: IsValidIPForLegacyField, legacy fields accept non-canonical IPv6 (only a warning).
		{name: "non-canonical IPv6 clusterIP", svc: newService(withClusterIPs("fd00:10:96:0:0::10"), func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		})},
		// upstream: validateServicePort, names are DNS labels (1.37 allows a leading digit).
		{name: "port names 123-abc and web", svc: newService(withPorts(tcp("123-abc", 80), tcp("web", 81)))},
		{name: "named targetPort", svc: newService(withPorts(targeting(tcp("", 80), intstr.FromString("http"))))},
		// upstream: ports are unique by (protocol, port), so DNS on 53/TCP and 53/UDP is fine.
		{name: "same port, different protocols", svc: newService(withPorts(tcp("dns-tcp", 53), udp("dns", 53)))},
		{name: "SCTP port", svc: newService(withPorts(corev1.ServicePort{Port: 9000, Protocol: corev1.ProtocolSCTP, TargetPort: intstr.FromInt32(9000)}))},
		{name: "appProtocol", svc: newService(func(s *corev1.Service) { s.Spec.Ports[0].AppProtocol = ptr.To("kubernetes.io/h2c") })},
		// upstream: validateAffinityTimeout, 1..86400 inclusive.
		{name: "ClientIP timeout 1", svc: newService(clientIP(1))},
		{name: "ClientIP timeout 86400", svc: newService(clientIP(86400))},
		{name: "externalIPs", svc: newService(withExternalIPs("192.0.2.10", "2001:db8::10"))},
		{name: "loadBalancerSourceRanges", svc: newService(asLoadBalancer, withSourceRanges("192.0.2.0/24", "2001:db8::/64"))},
		// upstream: ValidateService, source ranges may be space-padded (a leftover of the annotation).
		{name: "space-padded loadBalancerSourceRanges", svc: newService(asLoadBalancer, withSourceRanges(" 192.0.2.0/24 "))},
		{name: "source-range annotation", svc: newService(asLoadBalancer, withAnnotation(corev1.AnnotationLoadBalancerSourceRangesKey, "192.0.2.0/24, 198.51.100.0/24"))},
		{name: "loadBalancerClass", svc: newService(asLoadBalancer, func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/lb") })},
		{name: "trafficDistribution PreferClose", svc: newService(withTrafficDistribution("PreferClose"))},
		{name: "trafficDistribution PreferSameZone", svc: newService(withTrafficDistribution("PreferSameZone"))},
		{name: "trafficDistribution PreferSameNode", svc: newService(withTrafficDistribution("PreferSameNode"))},
		{name: "internalTrafficPolicy Local", svc: newService(func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
		})},
		// upstream: validateServiceInternalTrafficFieldsValue does not require it for ExternalName.
		{name: "ExternalName without internalTrafficPolicy", svc: newService(asExternalName)},
		{name: "no selector", svc: newService(func(s *corev1.Service) { s.Spec.Selector = nil })},
		// upstream: the two topology annotations may both be set if they agree.
		{name: "matching topology annotations", svc: newService(
			withAnnotation(corev1.DeprecatedAnnotationTopologyAwareHints, "Auto"),
			withAnnotation(corev1.AnnotationTopologyMode, "Auto"))},

		// --- ports ---
		// upstream: ValidateService, a non-headless, non-ExternalName Service needs ports.
		{name: "no ports", svc: newService(withPorts()), want: []wantErr{required("spec.ports")}},
		// upstream: validateServicePort, port must be 1-65535.
		{name: "port 0", svc: newService(withPorts(targeting(tcp("", 0), intstr.FromInt32(80)))),
			want: []wantErr{invalid("spec.ports[0].port", "Invalid value: 0: must be between 1 and 65535, inclusive")}},
		{name: "port 65536", svc: newService(withPorts(targeting(tcp("", 65536), intstr.FromInt32(80)))),
			want: []wantErr{invalid("spec.ports[0].port", "must be between 1 and 65535")}},
		{name: "negative port", svc: newService(withPorts(targeting(tcp("", -1), intstr.FromInt32(80)))),
			want: []wantErr{invalid("spec.ports[0].port")}},
		// upstream: validateServicePort, protocol required and TCP/UDP/SCTP.
		{name: "no protocol", svc: newService(func(s *corev1.Service) { s.Spec.Ports[0].Protocol = "" }),
			want: []wantErr{required("spec.ports[0].protocol")}},
		{name: "ICMP protocol", svc: newService(func(s *corev1.Service) { s.Spec.Ports[0].Protocol = "ICMP" }),
			want: []wantErr{unsupported("spec.ports[0].protocol", `supported values: "SCTP", "TCP", "UDP"`)}},
		{name: "lowercase protocol", svc: newService(func(s *corev1.Service) { s.Spec.Ports[0].Protocol = "tcp" }),
			want: []wantErr{unsupported("spec.ports[0].protocol")}},
		// upstream: validateServicePort, with more than one port every port is named.
		{name: "second port unnamed", svc: newService(withPorts(tcp("http", 80), tcp("", 443))),
			want: []wantErr{required("spec.ports[1].name")}},
		{name: "both ports unnamed", svc: newService(withPorts(tcp("", 80), tcp("", 443))),
			want: []wantErr{required("spec.ports[0].name"), required("spec.ports[1].name")}},
		// upstream: validateServicePort, port names are DNS-1123 labels.
		{name: "port name with underscore", svc: newService(withPorts(tcp("123_abc", 80))),
			want: []wantErr{invalid("spec.ports[0].name", "a lowercase RFC 1123 label must consist of")}},
		{name: "port name with leading dash", svc: newService(withPorts(tcp("-web", 80))),
			want: []wantErr{invalid("spec.ports[0].name")}},
		{name: "port name with trailing dash", svc: newService(withPorts(tcp("web-", 80))),
			want: []wantErr{invalid("spec.ports[0].name")}},
		{name: "uppercase port name", svc: newService(withPorts(tcp("Web", 80))),
			want: []wantErr{invalid("spec.ports[0].name")}},
		{name: "port name with dot", svc: newService(withPorts(tcp("web.1", 80))),
			want: []wantErr{invalid("spec.ports[0].name", "must not contain dots")}},
		{name: "64-character port name", svc: newService(withPorts(tcp(strings.Repeat("a", 64), 80))),
			want: []wantErr{invalid("spec.ports[0].name", "must be no more than 63 characters")}},
		// upstream: validateServicePort, names are unique.
		{name: "duplicate port names", svc: newService(withPorts(tcp("web", 80), tcp("web", 81))),
			want: []wantErr{duplicate("spec.ports[1].name", `Duplicate value: "web"`)}},
		// upstream: ValidatePortNumOrName, a numeric targetPort is 1-65535.
		{name: "targetPort 0", svc: newService(withPorts(targeting(tcp("", 80), intstr.FromInt32(0)))),
			want: []wantErr{invalid("spec.ports[0].targetPort", "Invalid value: 0: must be between 1 and 65535")}},
		{name: "targetPort 70000", svc: newService(withPorts(targeting(tcp("", 80), intstr.FromInt32(70000)))),
			want: []wantErr{invalid("spec.ports[0].targetPort")}},
		// upstream: ValidatePortNumOrName, a named targetPort is an IANA service name.
		{name: "targetPort name without a letter", svc: newService(withPorts(targeting(tcp("", 80), intstr.FromString("8080")))),
			want: []wantErr{invalid("spec.ports[0].targetPort", "must contain at least one letter (a-z)")}},
		{name: "targetPort name over 15 characters", svc: newService(withPorts(targeting(tcp("", 80), intstr.FromString("abcdefghijklmnop")))),
			want: []wantErr{invalid("spec.ports[0].targetPort", "must be no more than 15 characters")}},
		{name: "targetPort name with double hyphen", svc: newService(withPorts(targeting(tcp("", 80), intstr.FromString("a--b")))),
			want: []wantErr{invalid("spec.ports[0].targetPort", "must not contain consecutive hyphens")}},
		{name: "targetPort name with leading hyphen", svc: newService(withPorts(targeting(tcp("", 80), intstr.FromString("-http")))),
			want: []wantErr{invalid("spec.ports[0].targetPort", "must not begin or end with a hyphen")}},
		{name: "targetPort name with underscore", svc: newService(withPorts(targeting(tcp("", 80), intstr.FromString("my_port")))),
			want: []wantErr{invalid("spec.ports[0].targetPort", "must contain only alpha-numeric characters")}},
		// upstream: ValidateService, (protocol, port) pairs are unique.
		{name: "duplicate port and protocol", svc: newService(withPorts(tcp("a", 80), targeting(tcp("b", 80), intstr.FromInt32(81)))),
			want: []wantErr{duplicate("spec.ports[1]", `{"Name":"","Protocol":"TCP","AppProtocol":null,"Port":80,"TargetPort":0,"NodePort":0}`)}},
		// upstream: validateServicePort, appProtocol is a qualified name.
		{name: "invalid appProtocol", svc: newService(func(s *corev1.Service) { s.Spec.Ports[0].AppProtocol = ptr.To("-h2c") }),
			want: []wantErr{invalid("spec.ports[0].appProtocol")}},

		// --- node ports ---
		// upstream: ValidateService, ClusterIP Services have no node ports.
		{name: "nodePort on ClusterIP", svc: newService(func(s *corev1.Service) { s.Spec.Ports[0].NodePort = 30080 }),
			want: []wantErr{forbidden("spec.ports[0].nodePort", "may not be used when `type` is 'ClusterIP'")}},
		// upstream: ValidateService, (protocol, nodePort) pairs are unique.
		{name: "duplicate nodePort", svc: newService(asNodePort, withPorts(tcp("a", 80), tcp("b", 81)), func(s *corev1.Service) {
			s.Spec.Ports[0].NodePort = 30080
			s.Spec.Ports[1].NodePort = 30080
		}), want: []wantErr{duplicate("spec.ports[1].nodePort", "Duplicate value: 30080")}},
		{name: "same nodePort, different protocols", svc: newService(asNodePort, withPorts(tcp("a", 53), udp("b", 53)), func(s *corev1.Service) {
			s.Spec.Ports[0].NodePort = 30053
			s.Spec.Ports[1].NodePort = 30053
		})},

		// --- type ---
		// upstream: ValidateService, type required and one of four.
		{name: "no type", svc: newService(func(s *corev1.Service) { s.Spec.Type = "" }),
			want: []wantErr{required("spec.type")}},
		{name: "unknown type", svc: newService(func(s *corev1.Service) { s.Spec.Type = "Ingress" }),
			want: []wantErr{unsupported("spec.type", `supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"`)}},

		// --- ExternalName ---
		{name: "ExternalName without a name", svc: newService(asExternalName, func(s *corev1.Service) { s.Spec.ExternalName = "" }),
			want: []wantErr{required("spec.externalName")}},
		{name: "ExternalName of a single dot", svc: newService(asExternalName, func(s *corev1.Service) { s.Spec.ExternalName = "." }),
			want: []wantErr{required("spec.externalName")}},
		{name: "ExternalName with underscore", svc: newService(asExternalName, func(s *corev1.Service) { s.Spec.ExternalName = "db_1.example.com" }),
			want: []wantErr{invalid("spec.externalName", "a lowercase RFC 1123 subdomain")}},
		{name: "ExternalName uppercase", svc: newService(asExternalName, func(s *corev1.Service) { s.Spec.ExternalName = "DB.example.com" }),
			want: []wantErr{invalid("spec.externalName")}},
		// upstream: ValidateService, ExternalName gets no cluster IP.
		{name: "ExternalName with clusterIP", svc: newService(asExternalName, withClusterIPs("10.96.0.10")),
			want: []wantErr{forbidden("spec.clusterIPs", "may not be set for ExternalName services")}},
		{name: "ExternalName with ipFamilies", svc: newService(asExternalName, func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		}), want: []wantErr{forbidden("spec.ipFamilies")}},
		{name: "ExternalName with ipFamilyPolicy", svc: newService(asExternalName, func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
		}), want: []wantErr{forbidden("spec.ipFamilyPolicy")}},

		// --- headless ---
		// upstream: ValidateService, headless only for ClusterIP.
		{name: "headless LoadBalancer", svc: newService(asLoadBalancer, asHeadless),
			want: []wantErr{invalid("spec.clusterIPs[0]", "may not be set to 'None' for LoadBalancer services")}},
		{name: "headless NodePort", svc: newService(asNodePort, asHeadless),
			want: []wantErr{invalid("spec.clusterIPs[0]", "may not be set to 'None' for NodePort services")}},
		// upstream: ValidateServiceClusterIPsRelatedFields, None only alone.
		{name: "None with a second IP", svc: newService(withClusterIPs("None", "fd00:10:96::10")),
			want: []wantErr{invalid("spec.clusterIPs", "'None' must be the first and only value")}},

		// --- clusterIP / clusterIPs / families ---
		// upstream: ValidateServiceClusterIPsRelatedFields, clusterIP and clusterIPs agree.
		{name: "clusterIP without clusterIPs", svc: newService(func(s *corev1.Service) { s.Spec.ClusterIPs = nil }),
			want: []wantErr{required("spec.clusterIPs")}},
		{name: "clusterIPs[0] differs from clusterIP", svc: newService(func(s *corev1.Service) { s.Spec.ClusterIPs = []string{"10.96.0.11"} }),
			want: []wantErr{invalid("spec.clusterIPs", "first value must match `clusterIP`")}},
		{name: "clusterIPs without clusterIP", svc: newService(func(s *corev1.Service) { s.Spec.ClusterIP = "" }),
			want: []wantErr{invalid("spec.clusterIPs", "must be empty when `clusterIP` is not specified")}},
		{name: "clusterIP not an IP", svc: newService(withClusterIPs("10.96.0")),
			want: []wantErr{invalid("spec.clusterIPs[0]", "must be a valid IP address")}},
		// upstream: IsValidIPForLegacyField with StrictIPCIDRValidation (on since 1.36).
		{name: "clusterIP with leading zeros", svc: newService(withClusterIPs("010.096.000.010")),
			want: []wantErr{invalid("spec.clusterIPs[0]", "must not have leading 0s")}},
		{name: "IPv4-mapped IPv6 clusterIP", svc: newService(withClusterIPs("::ffff:10.96.0.10")),
			want: []wantErr{invalid("spec.clusterIPs[0]", "must not be an IPv4-mapped IPv6 address")}},
		// upstream: ValidateServiceClusterIPsRelatedFields, at most two, one per family.
		{name: "three clusterIPs", svc: newService(withClusterIPs("10.96.0.10", "fd00:10:96::10", "10.96.0.11")),
			want: []wantErr{invalid("spec.clusterIPs", "may only hold up to 2 values")}},
		{name: "two IPv4 clusterIPs", svc: newService(withClusterIPs("10.96.0.10", "10.96.0.11")),
			want: []wantErr{invalid("spec.clusterIPs", "may specify no more than one IP for each IP family")}},
		// upstream: ValidateServiceClusterIPsRelatedFields, each IP matches its family.
		{name: "IPv6 clusterIP with IPv4 family", svc: newService(withClusterIPs("fd00:10:96::10")),
			want: []wantErr{invalid("spec.clusterIPs[0]", "expected an IPv4 value as indicated by `ipFamilies[0]`")}},
		{name: "IPv4 secondary with IPv6 family", svc: newService(asDualStack, func(s *corev1.Service) {
			s.Spec.ClusterIPs = []string{"10.96.0.10", "fd00:10:96::10"}
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
		}), want: []wantErr{
			invalid("spec.clusterIPs[0]", "expected an IPv6 value as indicated by `ipFamilies[0]`"),
			invalid("spec.clusterIPs[1]", "expected an IPv4 value as indicated by `ipFamilies[1]`"),
		}},
		{name: "unknown IP family", svc: newService(func(s *corev1.Service) { s.Spec.IPFamilies = []corev1.IPFamily{"IPv5"} }),
			want: []wantErr{unsupported("spec.ipFamilies[0]", `supported values: "IPv4", "IPv6"`)}},
		{name: "duplicate IP family", svc: newService(func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv4Protocol}
		}), want: []wantErr{duplicate("spec.ipFamilies[1]")}},
		{name: "unknown ipFamilyPolicy", svc: newService(func(s *corev1.Service) { s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicy("DualStack")) }),
			want: []wantErr{unsupported("spec.ipFamilyPolicy", `"PreferDualStack", "RequireDualStack", "SingleStack"`)}},

		// --- externalIPs ---
		// upstream: ValidateService, externalIPs are valid, non-special IPs.
		{name: "externalIP not an IP", svc: newService(withExternalIPs("example.com")),
			want: []wantErr{invalid("spec.externalIPs[0]", "must be a valid IP address")}},
		{name: "externalIP with leading zeros", svc: newService(withExternalIPs("192.0.2.010")),
			want: []wantErr{invalid("spec.externalIPs[0]", "must not have leading 0s")}},
		{name: "loopback externalIP", svc: newService(withExternalIPs("127.0.0.1")),
			want: []wantErr{invalid("spec.externalIPs[0]", "may not be in the loopback range (127.0.0.0/8, ::1/128)")}},
		{name: "IPv6 loopback externalIP", svc: newService(withExternalIPs("::1")),
			want: []wantErr{invalid("spec.externalIPs[0]", "loopback")}},
		{name: "unspecified externalIP", svc: newService(withExternalIPs("0.0.0.0")),
			want: []wantErr{invalid("spec.externalIPs[0]", "may not be unspecified (0.0.0.0)")}},
		{name: "link-local externalIP", svc: newService(withExternalIPs("169.254.169.254")),
			want: []wantErr{invalid("spec.externalIPs[0]", "may not be in the link-local range (169.254.0.0/16, fe80::/10)")}},
		{name: "multicast link-local externalIP", svc: newService(withExternalIPs("224.0.0.251")),
			want: []wantErr{invalid("spec.externalIPs[0]", "link-local multicast range")}},
		{name: "second externalIP bad", svc: newService(withExternalIPs("192.0.2.10", "fe80::1")),
			want: []wantErr{invalid("spec.externalIPs[1]", "link-local range")}},
		// upstream: validateServiceExternalTrafficPolicy, externalIPs make a ClusterIP externally accessible.
		{name: "externalIPs without externalTrafficPolicy", svc: newService(withExternalIPs("192.0.2.10"), func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = ""
		}), want: []wantErr{required("spec.externalTrafficPolicy")}},

		// --- session affinity ---
		// upstream: ValidateService, sessionAffinity required, ClientIP or None.
		{name: "no sessionAffinity", svc: newService(func(s *corev1.Service) { s.Spec.SessionAffinity = "" }),
			want: []wantErr{required("spec.sessionAffinity")}},
		{name: "unknown sessionAffinity", svc: newService(func(s *corev1.Service) { s.Spec.SessionAffinity = "Cookie" }),
			want: []wantErr{unsupported("spec.sessionAffinity", `supported values: "ClientIP", "None"`)}},
		// upstream: validateClientIPAffinityConfig.
		{name: "ClientIP without config", svc: newService(func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }),
			want: []wantErr{required("spec.sessionAffinityConfig", "when session affinity type is ClientIP")}},
		{name: "ClientIP without clientIP", svc: newService(func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{}
		}), want: []wantErr{required("spec.sessionAffinityConfig.clientIP")}},
		{name: "ClientIP without timeout", svc: newService(func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{}}
		}), want: []wantErr{required("spec.sessionAffinityConfig.clientIP.timeoutSeconds")}},
		// upstream: validateAffinityTimeout, 1..86400.
		{name: "ClientIP timeout 0", svc: newService(clientIP(0)),
			want: []wantErr{invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "Invalid value: 0: must be greater than 0 and less than 86400")}},
		{name: "ClientIP timeout 86401", svc: newService(clientIP(86401)),
			want: []wantErr{invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds")}},
		{name: "ClientIP timeout negative", svc: newService(clientIP(-5)),
			want: []wantErr{invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds")}},
		// upstream: ValidateService, no config with affinity None.
		{name: "None with config", svc: newService(func(s *corev1.Service) {
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(int32(60))}}
		}), want: []wantErr{forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None")}},

		// --- load balancer fields ---
		// upstream: ValidateService, source ranges only on LoadBalancer, each a CIDR.
		{name: "source ranges on ClusterIP", svc: newService(withSourceRanges("192.0.2.0/24")),
			want: []wantErr{forbidden("spec.LoadBalancerSourceRanges", "may only be used when `type` is 'LoadBalancer'")}},
		{name: "source range not a CIDR", svc: newService(asLoadBalancer, withSourceRanges("192.0.2.0")),
			want: []wantErr{invalid("spec.LoadBalancerSourceRanges[0]", "must be a valid CIDR value")}},
		// upstream: IsValidCIDRForLegacyField with strict validation.
		{name: "source range with host bits", svc: newService(asLoadBalancer, withSourceRanges("192.0.2.5/24")),
			want: []wantErr{invalid("spec.LoadBalancerSourceRanges[0]", "must not have bits set beyond the prefix length")}},
		{name: "source range with leading zeros", svc: newService(asLoadBalancer, withSourceRanges("192.000.2.0/24")),
			want: []wantErr{invalid("spec.LoadBalancerSourceRanges[0]", "must not have leading 0s")}},
		{name: "bad source range annotation", svc: newService(asLoadBalancer, withAnnotation(corev1.AnnotationLoadBalancerSourceRangesKey, "192.0.2.0/24,nope")),
			want: []wantErr{invalid("metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]")}},
		{name: "source range annotation on NodePort", svc: newService(asNodePort, withAnnotation(corev1.AnnotationLoadBalancerSourceRangesKey, "192.0.2.0/24")),
			want: []wantErr{forbidden("metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]")}},
		// upstream: ValidateService, the field wins over the annotation, which is then not checked.
		{name: "field shadows annotation", svc: newService(asLoadBalancer, withSourceRanges("192.0.2.0/24"),
			withAnnotation(corev1.AnnotationLoadBalancerSourceRangesKey, "nope"))},
		// upstream: ValidateService, allocateLoadBalancerNodePorts only and always on LoadBalancer.
		{name: "allocateLoadBalancerNodePorts on NodePort", svc: newService(asNodePort, func(s *corev1.Service) {
			s.Spec.AllocateLoadBalancerNodePorts = ptr.To(true)
		}), want: []wantErr{forbidden("spec.allocateLoadBalancerNodePorts")}},
		// upstream quirk: this path has no "spec." prefix.
		{name: "LoadBalancer without allocateLoadBalancerNodePorts", svc: newService(asLoadBalancer, func(s *corev1.Service) {
			s.Spec.AllocateLoadBalancerNodePorts = nil
		}), want: []wantErr{required("allocateLoadBalancerNodePorts")}},
		// upstream: validateLoadBalancerClassField.
		{name: "loadBalancerClass on ClusterIP", svc: newService(func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/lb") }),
			want: []wantErr{forbidden("spec.loadBalancerClass", "may only be used when `type` is 'LoadBalancer'")}},
		{name: "invalid loadBalancerClass", svc: newService(asLoadBalancer, func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/-lb") }),
			want: []wantErr{invalid("spec.loadBalancerClass")}},

		// --- traffic policies ---
		// upstream: validateServiceExternalTrafficPolicy.
		{name: "externalTrafficPolicy on plain ClusterIP", svc: newService(func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
		}), want: []wantErr{invalid("spec.externalTrafficPolicy", "may only be set for externally-accessible services")}},
		{name: "NodePort without externalTrafficPolicy", svc: newService(asNodePort, func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = "" }),
			want: []wantErr{required("spec.externalTrafficPolicy")}},
		{name: "unknown externalTrafficPolicy", svc: newService(asNodePort, func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = "Global" }),
			want: []wantErr{unsupported("spec.externalTrafficPolicy", `supported values: "Cluster", "Local"`)}},
		{name: "healthCheckNodePort on Cluster policy", svc: newService(asLoadBalancer, func(s *corev1.Service) { s.Spec.HealthCheckNodePort = 31000 }),
			want: []wantErr{invalid("spec.healthCheckNodePort", "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")}},
		{name: "healthCheckNodePort on NodePort Local", svc: newService(asNodePort, func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Spec.HealthCheckNodePort = 31000
		}), want: []wantErr{invalid("spec.healthCheckNodePort")}},
		{name: "LoadBalancer Local without healthCheckNodePort", svc: newService(asLocalLoadBalancer, func(s *corev1.Service) { s.Spec.HealthCheckNodePort = 0 }),
			want: []wantErr{required("spec.healthCheckNodePort")}},
		{name: "healthCheckNodePort out of range", svc: newService(asLocalLoadBalancer, func(s *corev1.Service) { s.Spec.HealthCheckNodePort = 70000 }),
			want: []wantErr{invalid("spec.healthCheckNodePort", "must be between 1 and 65535")}},
		// upstream: validateServiceInternalTrafficFieldsValue.
		{name: "no internalTrafficPolicy", svc: newService(func(s *corev1.Service) { s.Spec.InternalTrafficPolicy = nil }),
			want: []wantErr{required("spec.internalTrafficPolicy")}},
		{name: "unknown internalTrafficPolicy", svc: newService(func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicy("Node"))
		}), want: []wantErr{unsupported("spec.internalTrafficPolicy", `supported values: "Cluster", "Local"`)}},
		// upstream: validateServiceTrafficDistribution.
		{name: "unknown trafficDistribution", svc: newService(withTrafficDistribution("Nearest")),
			want: []wantErr{unsupported("spec.trafficDistribution", `supported values: "PreferClose", "PreferSameZone", "PreferSameNode"`)}},

		// --- metadata specific to Services ---
		// upstream: ValidateService, selector is a label set.
		{name: "invalid selector value", svc: newService(func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "-web"} }),
			want: []wantErr{invalid("spec.selector")}},
		{name: "invalid selector key", svc: newService(func(s *corev1.Service) { s.Spec.Selector = map[string]string{"a/b/c": "web"} }),
			want: []wantErr{invalid("spec.selector")}},
		// upstream: ValidateService, topology-mode must agree with the deprecated hints annotation.
		{name: "conflicting topology annotations", svc: newService(
			withAnnotation(corev1.DeprecatedAnnotationTopologyAwareHints, "Auto"),
			withAnnotation(corev1.AnnotationTopologyMode, "Disabled")),
			want: []wantErr{invalid("metadata.annotations[service.kubernetes.io/topology-mode]", "must match annotations[service.kubernetes.io/topology-aware-hints]")}},

		// --- several at once, in upstream's order ---
		{name: "errors come in upstream order", svc: newService(asNodePort, func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{tcp("", 0), tcp("", 0)}
			s.Spec.SessionAffinity = "Cookie"
			s.Spec.ExternalIPs = []string{"127.0.0.1"}
			s.Spec.InternalTrafficPolicy = nil
		}), want: []wantErr{
			required("spec.ports[0].name"), invalid("spec.ports[0].port"), invalid("spec.ports[0].targetPort"),
			required("spec.ports[1].name"), invalid("spec.ports[1].port"), invalid("spec.ports[1].targetPort"),
			unsupported("spec.sessionAffinity"),
			invalid("spec.externalIPs[0]"),
			duplicate("spec.ports[1]"),
			required("spec.internalTrafficPolicy"),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expectErrors(t, ValidateService(tc.svc), tc.want)
		})
	}
}

func clientIP(timeout int32) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(timeout)}}
	}
}

func withSourceRanges(ranges ...string) func(*corev1.Service) {
	return func(svc *corev1.Service) { svc.Spec.LoadBalancerSourceRanges = ranges }
}

func withAnnotation(key, value string) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		if svc.Annotations == nil {
			svc.Annotations = map[string]string{}
		}
		svc.Annotations[key] = value
	}
}

func withTrafficDistribution(value string) func(*corev1.Service) {
	return func(svc *corev1.Service) { svc.Spec.TrafficDistribution = ptr.To(value) }
}

func TestValidateServiceUpdate(t *testing.T) {
	tests := []struct {
		name     string
		old, svc *corev1.Service
		want     []wantErr
	}{
		{name: "no change", old: newService(), svc: newService()},
		{name: "change ports and selector", old: newService(), svc: newService(withPorts(tcp("", 443)), func(s *corev1.Service) {
			s.Spec.Selector = map[string]string{"app": "api"}
		})},
		// upstream: validateUpgradeDowngradeClusterIPs, the primary clusterIP may not change.
		{name: "change clusterIP", old: newService(), svc: newService(withClusterIPs("10.96.0.11")),
			want: []wantErr{invalid("spec.clusterIPs[0]", "may not change once set")}},
		{name: "unset clusterIP", old: newService(), svc: newService(withClusterIPs()),
			want: []wantErr{invalid("spec.clusterIPs[0]", "primary clusterIP can not be unset")}},
		// upstream: ValidateServiceUpdate, anything goes to and from ExternalName.
		{name: "ClusterIP to ExternalName", old: newService(), svc: newService(asExternalName)},
		{name: "ExternalName to ClusterIP", old: newService(asExternalName), svc: newService(withClusterIPs("10.96.0.99"))},
		{name: "ClusterIP to headless", old: newService(), svc: newService(asHeadless),
			want: []wantErr{invalid("spec.clusterIPs[0]", "may not change once set")}},
		{name: "headless stays headless with new families", old: newService(asHeadless), svc: newService(asHeadless, func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		})},
		// upstream: validateUpgradeDowngradeClusterIPs, a secondary IP may be added.
		{name: "upgrade to dual-stack", old: newService(), svc: newService(asDualStack)},
		// upstream: ... and released only together with SingleStack.
		{name: "downgrade to single-stack", old: newService(asDualStack), svc: newService()},
		{name: "downgrade without SingleStack", old: newService(asDualStack), svc: newService(func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack)
		}), want: []wantErr{
			invalid("spec.ipFamilyPolicy", "must be set to 'SingleStack' when releasing the secondary clusterIP"),
			invalid("spec.ipFamilyPolicy", "must be set to 'SingleStack' when releasing the secondary ipFamily"),
		}},
		{name: "swap secondary IP", old: newService(asDualStack), svc: newService(asDualStack, func(s *corev1.Service) {
			s.Spec.ClusterIPs[1] = "fd00:10:96::11"
		}), want: []wantErr{invalid("spec.clusterIPs[1]", "may not change once set")}},
		// upstream: validateUpgradeDowngradeIPFamilies, the primary family may not change.
		{name: "change primary family", old: newService(), svc: newService(func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		}), want: []wantErr{
			invalid("spec.ipFamilies[0]", "may not change once set"),
			invalid("spec.clusterIPs[0]", "expected an IPv6 value"),
		}},
		// upstream: validateLoadBalancerClassField, immutable while a LoadBalancer.
		{name: "change loadBalancerClass", old: newService(asLoadBalancer, func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/a") }),
			svc:  newService(asLoadBalancer, func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/b") }),
			want: []wantErr{invalid("spec.loadBalancerClass", "may not change once set")}},
		{name: "add loadBalancerClass to a LoadBalancer", old: newService(asLoadBalancer),
			svc:  newService(asLoadBalancer, func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/a") }),
			want: []wantErr{invalid("spec.loadBalancerClass", "may not change once set")}},
		{name: "set loadBalancerClass while becoming a LoadBalancer", old: newService(),
			svc: newService(asLoadBalancer, func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/a") })},
		// upstream: validateServiceExternalTrafficFieldsUpdate.
		{name: "change healthCheckNodePort", old: newService(asLocalLoadBalancer), svc: newService(asLocalLoadBalancer, func(s *corev1.Service) {
			s.Spec.HealthCheckNodePort = 31001
		}), want: []wantErr{forbidden("spec.healthCheckNodePort", "field is immutable")}},
		{name: "switch to Cluster drops healthCheckNodePort", old: newService(asLocalLoadBalancer), svc: newService(asLoadBalancer)},
		// upstream (KEP-4858): values already stored stay acceptable.
		{name: "stored leading-zero externalIP kept", old: newService(withExternalIPs("192.0.2.010")), svc: newService(withExternalIPs("192.0.2.010"), withPorts(tcp("", 81)))},
		{name: "new leading-zero externalIP", old: newService(withExternalIPs("192.0.2.10")), svc: newService(withExternalIPs("192.0.2.10", "192.0.2.011")),
			want: []wantErr{invalid("spec.externalIPs[1]", "must not have leading 0s")}},
		{name: "stored leading-zero clusterIP kept", old: newService(withClusterIPs("010.96.0.10")), svc: newService(withClusterIPs("010.96.0.10"))},
		{name: "stored ambiguous source range kept", old: newService(asLoadBalancer, withSourceRanges("192.0.2.5/24")),
			svc: newService(asLoadBalancer, withSourceRanges("192.0.2.5/24", "198.51.100.0/24"))},
		// the update still applies every create rule.
		{name: "update applies create rules", old: newService(), svc: newService(withPorts(tcp("", 0))),
			want: []wantErr{invalid("spec.ports[0].port"), invalid("spec.ports[0].targetPort")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expectErrors(t, ValidateServiceUpdate(tc.svc, tc.old), tc.want)
		})
	}
}

func TestValidateServiceStatusUpdate(t *testing.T) {
	withIngress := func(ingress ...corev1.LoadBalancerIngress) func(*corev1.Service) {
		return func(svc *corev1.Service) { svc.Status.LoadBalancer.Ingress = ingress }
	}
	vip := ptr.To(corev1.LoadBalancerIPModeVIP)
	tests := []struct {
		name     string
		old, svc *corev1.Service
		want     []wantErr
	}{
		{name: "IP with VIP mode", old: newService(asLoadBalancer), svc: newService(asLoadBalancer, withIngress(corev1.LoadBalancerIngress{IP: "192.0.2.1", IPMode: vip}))},
		{name: "IP with Proxy mode", old: newService(asLoadBalancer), svc: newService(asLoadBalancer, withIngress(corev1.LoadBalancerIngress{
			IP: "2001:db8::1", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)}))},
		{name: "hostname", old: newService(asLoadBalancer), svc: newService(asLoadBalancer, withIngress(corev1.LoadBalancerIngress{Hostname: "lb.example.com"}))},
		// upstream: ValidateLoadBalancerStatus, only LoadBalancer Services have ingress.
		{name: "ingress on ClusterIP", old: newService(), svc: newService(withIngress(corev1.LoadBalancerIngress{IP: "192.0.2.1", IPMode: vip})),
			want: []wantErr{forbidden("status.loadBalancer.ingress", "may only be used when `spec.type` is 'LoadBalancer'")}},
		{name: "invalid ingress IP", old: newService(asLoadBalancer), svc: newService(asLoadBalancer, withIngress(corev1.LoadBalancerIngress{IP: "192.0.2", IPMode: vip})),
			want: []wantErr{invalid("status.loadBalancer.ingress[0].ip")}},
		{name: "leading-zero ingress IP", old: newService(asLoadBalancer), svc: newService(asLoadBalancer, withIngress(corev1.LoadBalancerIngress{IP: "192.0.2.01", IPMode: vip})),
			want: []wantErr{invalid("status.loadBalancer.ingress[0].ip", "must not have leading 0s")}},
		{name: "stored leading-zero ingress IP kept", old: newService(asLoadBalancer, withIngress(corev1.LoadBalancerIngress{IP: "192.0.2.01", IPMode: vip})),
			svc: newService(asLoadBalancer, withIngress(corev1.LoadBalancerIngress{IP: "192.0.2.01", IPMode: vip}))},
		// upstream: ValidateLoadBalancerStatus with LoadBalancerIPMode GA.
		{name: "IP without ipMode", old: newService(asLoadBalancer), svc: newService(asLoadBalancer, withIngress(corev1.LoadBalancerIngress{IP: "192.0.2.1"})),
			want: []wantErr{required("status.loadBalancer.ingress[0].ipMode", "must be specified when `ip` is set")}},
		{name: "ipMode without IP", old: newService(asLoadBalancer), svc: newService(asLoadBalancer, withIngress(corev1.LoadBalancerIngress{Hostname: "lb.example.com", IPMode: vip})),
			want: []wantErr{forbidden("status.loadBalancer.ingress[0].ipMode", "may not be specified when `ip` is not set")}},
		{name: "unknown ipMode", old: newService(asLoadBalancer), svc: newService(asLoadBalancer, withIngress(corev1.LoadBalancerIngress{
			IP: "192.0.2.1", IPMode: ptr.To(corev1.LoadBalancerIPMode("DSR"))})),
			want: []wantErr{unsupported("status.loadBalancer.ingress[0].ipMode", `supported values: "Proxy", "VIP"`)}},
		{name: "hostname that is an IP", old: newService(asLoadBalancer), svc: newService(asLoadBalancer, withIngress(corev1.LoadBalancerIngress{Hostname: "192.0.2.1"})),
			want: []wantErr{invalid("status.loadBalancer.ingress[0].hostname", "must be a DNS name, not an IP address")}},
		{name: "invalid hostname", old: newService(asLoadBalancer), svc: newService(asLoadBalancer, withIngress(corev1.LoadBalancerIngress{Hostname: "lb_1.example.com"})),
			want: []wantErr{invalid("status.loadBalancer.ingress[0].hostname")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expectErrors(t, ValidateServiceStatusUpdate(tc.svc, tc.old), tc.want)
		})
	}
}
