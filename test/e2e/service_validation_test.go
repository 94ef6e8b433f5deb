package e2e

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/svcplane/svcplane/test/testserver"
)

// The tables below are what a user sees when pasting a manifest into kubectl: the HTTP status
// and the field paths of a 422, each as Kubernetes 1.37 answers (worked out from upstream's
// validation, defaulting and allocation order; the rule is named in the comment).
//
// Cases marked alloc depend on the Service registry normalizing clusterIP into clusterIPs and
// allocating IPs and ports before validation, as upstream's store does; they are skipped while
// the server does not allocate cluster IPs yet.

type validationCase struct {
	name   string // also the object's name unless meta overrides it
	spec   string // YAML flow mapping of the Service spec
	meta   string // extra YAML lines under metadata (two-space indented), or a "name: x" override
	code   int
	fields []string
	alloc  bool
}

func serviceManifest(c validationCase) string {
	meta := "  name: " + c.name + "\n"
	if strings.HasPrefix(c.meta, "  name:") {
		meta = c.meta + "\n"
	} else if c.meta != "" {
		meta += c.meta + "\n"
	}
	return "apiVersion: v1\nkind: Service\nmetadata:\n" + meta + "spec: " + c.spec + "\n"
}

var serviceCreateCases = []validationCase{
	// --- names (ValidateServiceCreate; 1.37 RelaxedServiceNameValidation: RFC 1123 labels) ---
	{name: "c-minimal", spec: `{ports: [{port: 80}]}`, code: 201},
	{name: "c-digit-name", meta: "  name: 1web", spec: `{ports: [{port: 80}]}`, code: 201},
	{name: "c-upper-name", meta: "  name: Web", spec: `{ports: [{port: 80}]}`, code: 422, fields: []string{"metadata.name"}},
	{name: "c-dot-name", meta: "  name: web.v1", spec: `{ports: [{port: 80}]}`, code: 422, fields: []string{"metadata.name"}},
	{name: "c-long-name", meta: "  name: " + strings.Repeat("a", 64), spec: `{ports: [{port: 80}]}`, code: 422, fields: []string{"metadata.name"}},
	{name: "c-63-name", meta: "  name: " + strings.Repeat("b", 63), spec: `{ports: [{port: 80}]}`, code: 201},
	// --- ports (validateServicePort; targetPort defaults to port) ---
	{name: "c-port-0", spec: `{ports: [{port: 0}]}`, code: 422, fields: []string{"spec.ports[0].port", "spec.ports[0].targetPort"}},
	{name: "c-port-65536", spec: `{ports: [{port: 65536}]}`, code: 422, fields: []string{"spec.ports[0].port", "spec.ports[0].targetPort"}},
	{name: "c-port-65535", spec: `{ports: [{port: 65535}]}`, code: 201},
	{name: "c-target-0-defaults", spec: `{ports: [{port: 80, targetPort: 0}]}`, code: 201},
	{name: "c-target-65536", spec: `{ports: [{port: 80, targetPort: 65536}]}`, code: 422, fields: []string{"spec.ports[0].targetPort"}},
	{name: "c-target-name", spec: `{ports: [{port: 80, targetPort: http}]}`, code: 201},
	{name: "c-target-digits", spec: `{ports: [{port: 80, targetPort: "8080"}]}`, code: 422, fields: []string{"spec.ports[0].targetPort"}},
	{name: "c-target-underscore", spec: `{ports: [{port: 80, targetPort: my_port}]}`, code: 422, fields: []string{"spec.ports[0].targetPort"}},
	{name: "c-target-16-chars", spec: `{ports: [{port: 80, targetPort: abcdefghijklmnop}]}`, code: 422, fields: []string{"spec.ports[0].targetPort"}},
	{name: "c-udp", spec: `{ports: [{port: 53, protocol: UDP}]}`, code: 201},
	{name: "c-sctp", spec: `{ports: [{port: 9000, protocol: SCTP}]}`, code: 201},
	{name: "c-icmp", spec: `{ports: [{port: 80, protocol: ICMP}]}`, code: 422, fields: []string{"spec.ports[0].protocol"}},
	{name: "c-lower-tcp", spec: `{ports: [{port: 80, protocol: tcp}]}`, code: 422, fields: []string{"spec.ports[0].protocol"}},
	{name: "c-two-unnamed", spec: `{ports: [{port: 80}, {port: 443}]}`, code: 422, fields: []string{"spec.ports[0].name", "spec.ports[1].name"}},
	{name: "c-one-unnamed", spec: `{ports: [{name: http, port: 80}, {port: 443}]}`, code: 422, fields: []string{"spec.ports[1].name"}},
	{name: "c-names-ok", spec: `{ports: [{name: 123-abc, port: 80}, {name: web, port: 81}]}`, code: 201},
	{name: "c-name-underscore", spec: `{ports: [{name: 123_abc, port: 80}]}`, code: 422, fields: []string{"spec.ports[0].name"}},
	{name: "c-name-dash", spec: `{ports: [{name: -web, port: 80}]}`, code: 422, fields: []string{"spec.ports[0].name"}},
	{name: "c-name-upper", spec: `{ports: [{name: Web, port: 80}]}`, code: 422, fields: []string{"spec.ports[0].name"}},
	{name: "c-name-63", spec: `{ports: [{name: ` + strings.Repeat("p", 63) + `, port: 80}]}`, code: 201},
	{name: "c-name-64", spec: `{ports: [{name: ` + strings.Repeat("p", 64) + `, port: 80}]}`, code: 422, fields: []string{"spec.ports[0].name"}},
	{name: "c-dup-names", spec: `{ports: [{name: web, port: 80}, {name: web, port: 81}]}`, code: 422, fields: []string{"spec.ports[1].name"}},
	{name: "c-dup-port-proto", spec: `{ports: [{name: a, port: 80}, {name: b, port: 80}]}`, code: 422, fields: []string{"spec.ports[1]"}},
	{name: "c-same-port-two-protos", spec: `{ports: [{name: dns-tcp, port: 53}, {name: dns, port: 53, protocol: UDP}]}`, code: 201},
	{name: "c-app-protocol", spec: `{ports: [{port: 80, appProtocol: kubernetes.io/h2c}]}`, code: 201},
	{name: "c-bad-app-protocol", spec: `{ports: [{port: 80, appProtocol: -h2c}]}`, code: 422, fields: []string{"spec.ports[0].appProtocol"}},
	{name: "c-no-ports", spec: `{selector: {app: web}}`, code: 422, fields: []string{"spec.ports"}},
	// --- type (ValidateService) ---
	{name: "c-type-foo", spec: `{type: Ingress, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.type"}},
	{name: "c-nodeport", spec: `{type: NodePort, ports: [{port: 80}]}`, code: 201},
	{name: "c-nodeport-explicit", spec: `{type: NodePort, ports: [{port: 80, nodePort: 30080}]}`, code: 201},
	{name: "c-nodeport-on-clusterip", spec: `{ports: [{port: 80, nodePort: 30081}]}`, code: 422, fields: []string{"spec.ports[0].nodePort"}},
	{name: "c-nodeport-dup", spec: `{type: NodePort, ports: [{name: a, port: 80, nodePort: 30082}, {name: b, port: 81, nodePort: 30082}]}`, code: 422, fields: []string{"spec.ports[1].nodePort"}},
	// upstream: the node-port allocator rejects a port outside --service-node-port-range.
	{name: "c-nodeport-out-of-range", spec: `{type: NodePort, ports: [{port: 80, nodePort: 70000}]}`, code: 422, fields: []string{"spec.ports[0].nodePort"}, alloc: true},
	{name: "c-loadbalancer", spec: `{type: LoadBalancer, ports: [{port: 80}]}`, code: 201},
	{name: "c-lb-no-nodeports", spec: `{type: LoadBalancer, allocateLoadBalancerNodePorts: false, ports: [{port: 80}]}`, code: 201},
	{name: "c-alloc-lb-np-on-cip", spec: `{allocateLoadBalancerNodePorts: true, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.allocateLoadBalancerNodePorts"}},
	// --- traffic policies (validateServiceExternalTrafficPolicy, ...InternalTrafficFieldsValue) ---
	{name: "c-lb-local", spec: `{type: LoadBalancer, externalTrafficPolicy: Local, ports: [{port: 80}]}`, code: 201, alloc: true},
	{name: "c-np-local", spec: `{type: NodePort, externalTrafficPolicy: Local, ports: [{port: 80}]}`, code: 201},
	{name: "c-etp-on-cip", spec: `{externalTrafficPolicy: Cluster, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.externalTrafficPolicy"}},
	{name: "c-etp-foo", spec: `{type: NodePort, externalTrafficPolicy: Global, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.externalTrafficPolicy"}},
	{name: "c-hcnp-on-np", spec: `{type: NodePort, healthCheckNodePort: 31000, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.healthCheckNodePort"}},
	{name: "c-itp-local", spec: `{internalTrafficPolicy: Local, ports: [{port: 80}]}`, code: 201},
	{name: "c-itp-foo", spec: `{internalTrafficPolicy: Node, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.internalTrafficPolicy"}},
	{name: "c-td-preferclose", spec: `{trafficDistribution: PreferClose, ports: [{port: 80}]}`, code: 201},
	{name: "c-td-samenode", spec: `{trafficDistribution: PreferSameNode, ports: [{port: 80}]}`, code: 201},
	{name: "c-td-foo", spec: `{trafficDistribution: Nearest, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.trafficDistribution"}},
	// --- session affinity (validateClientIPAffinityConfig; defaulting adds 10800 s) ---
	{name: "c-clientip", spec: `{sessionAffinity: ClientIP, ports: [{port: 80}]}`, code: 201},
	{name: "c-clientip-1", spec: `{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 1}}, ports: [{port: 80}]}`, code: 201},
	{name: "c-clientip-86400", spec: `{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 86400}}, ports: [{port: 80}]}`, code: 201},
	{name: "c-clientip-0", spec: `{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.sessionAffinityConfig.clientIP.timeoutSeconds"}},
	{name: "c-clientip-86401", spec: `{sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.sessionAffinityConfig.clientIP.timeoutSeconds"}},
	{name: "c-affinity-cookie", spec: `{sessionAffinity: Cookie, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.sessionAffinity"}},
	{name: "c-none-with-config", spec: `{sessionAffinity: None, sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}, ports: [{port: 80}]}`, code: 201},
	// --- externalIPs (ValidateService: IsValidIPForLegacyField strict + ValidateEndpointIP) ---
	{name: "c-extip", spec: `{externalIPs: [192.0.2.10], ports: [{port: 80}]}`, code: 201},
	{name: "c-extip-local", spec: `{externalIPs: [192.0.2.11], externalTrafficPolicy: Local, ports: [{port: 80}]}`, code: 201},
	{name: "c-extip-loopback", spec: `{externalIPs: [127.0.0.1], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.externalIPs[0]"}},
	{name: "c-extip-linklocal", spec: `{externalIPs: [169.254.1.1], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.externalIPs[0]"}},
	{name: "c-extip-leading-zero", spec: `{externalIPs: [010.1.2.3], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.externalIPs[0]"}},
	{name: "c-extip-name", spec: `{externalIPs: [example.com], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.externalIPs[0]"}},
	{name: "c-extip-mapped", spec: `{externalIPs: ["::ffff:192.0.2.1"], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.externalIPs[0]"}},
	{name: "c-extip-mcast", spec: `{externalIPs: [224.0.0.5], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.externalIPs[0]"}},
	{name: "c-extip-unspecified", spec: `{externalIPs: [0.0.0.0], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.externalIPs[0]"}},
	{name: "c-extip-ff02", spec: `{externalIPs: ["2001:db8::1", "ff02::1"], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.externalIPs[1]"}},
	// --- load balancer fields ---
	{name: "c-lb-ranges", spec: `{type: LoadBalancer, loadBalancerSourceRanges: [192.0.2.0/24], ports: [{port: 80}]}`, code: 201},
	{name: "c-ranges-on-cip", spec: `{loadBalancerSourceRanges: [192.0.2.0/24], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.LoadBalancerSourceRanges"}},
	{name: "c-ranges-host-bits", spec: `{type: LoadBalancer, loadBalancerSourceRanges: [192.0.2.1/24], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.LoadBalancerSourceRanges[0]"}},
	{name: "c-ranges-garbage", spec: `{type: LoadBalancer, loadBalancerSourceRanges: [office], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.LoadBalancerSourceRanges[0]"}},
	{name: "c-ranges-annotation-cip", meta: "  annotations: {service.beta.kubernetes.io/load-balancer-source-ranges: 192.0.2.0/24}", spec: `{ports: [{port: 80}]}`,
		code: 422, fields: []string{"metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]"}},
	{name: "c-lb-class", spec: `{type: LoadBalancer, loadBalancerClass: example.com/lb, ports: [{port: 80}]}`, code: 201},
	{name: "c-lb-class-on-cip", spec: `{loadBalancerClass: example.com/lb, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.loadBalancerClass"}},
	{name: "c-lb-class-bad", spec: `{type: LoadBalancer, loadBalancerClass: example.com/-lb, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.loadBalancerClass"}},
	// --- ExternalName ---
	{name: "c-extname", spec: `{type: ExternalName, externalName: db.example.com}`, code: 201},
	{name: "c-extname-dot", spec: `{type: ExternalName, externalName: db.example.com.}`, code: 201},
	{name: "c-extname-missing", spec: `{type: ExternalName}`, code: 422, fields: []string{"spec.externalName"}},
	{name: "c-extname-underscore", spec: `{type: ExternalName, externalName: db_1.example.com}`, code: 422, fields: []string{"spec.externalName"}},
	{name: "c-extname-families", spec: `{type: ExternalName, externalName: db.example.com, ipFamilies: [IPv4]}`, code: 422, fields: []string{"spec.ipFamilies"}},
	{name: "c-extname-policy", spec: `{type: ExternalName, externalName: db.example.com, ipFamilyPolicy: SingleStack}`, code: 422, fields: []string{"spec.ipFamilyPolicy"}},
	{name: "c-extname-clusterip", spec: `{type: ExternalName, externalName: db.example.com, clusterIP: 10.96.0.50}`, code: 422, fields: []string{"spec.clusterIPs"}, alloc: true},
	// --- cluster IPs and families (allocation first, then ValidateServiceClusterIPsRelatedFields) ---
	{name: "c-headless", spec: `{clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}`, code: 201, alloc: true},
	{name: "c-headless-no-ports", spec: `{clusterIP: None, selector: {app: db}}`, code: 201, alloc: true},
	{name: "c-headless-lb", spec: `{type: LoadBalancer, clusterIP: None, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.clusterIPs[0]"}, alloc: true},
	{name: "c-clusterip-explicit", spec: `{clusterIP: 10.96.0.50, ports: [{port: 80}]}`, code: 201, alloc: true},
	{name: "c-clusterip-garbage", spec: `{clusterIP: 10.96.0, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.clusterIPs[0]"}, alloc: true},
	// upstream normalizeClusterIPs fills clusterIPs from clusterIP, never the other way round.
	{name: "c-clusterips-only", spec: `{clusterIPs: [10.96.0.51], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.clusterIPs"}},
	{name: "c-clusterip-mismatch", spec: `{clusterIP: 10.96.0.52, clusterIPs: [10.96.0.53], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.clusterIPs"}},
	{name: "c-family-foo", spec: `{ipFamilies: [IPv5], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.ipFamilies[0]"}},
	{name: "c-family-dup", spec: `{ipFamilies: [IPv4, IPv4], ports: [{port: 80}]}`, code: 422, fields: []string{"spec.ipFamilies[1]"}},
	{name: "c-policy-foo", spec: `{ipFamilyPolicy: DualStack, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.ipFamilyPolicy"}},
	// --- metadata rules specific to Services ---
	{name: "c-bad-selector", spec: `{selector: {app: -web}, ports: [{port: 80}]}`, code: 422, fields: []string{"spec.selector"}},
	{name: "c-topology-conflict", meta: "  annotations: {service.kubernetes.io/topology-aware-hints: Auto, service.kubernetes.io/topology-mode: Disabled}",
		spec: `{ports: [{port: 80}]}`, code: 422, fields: []string{"metadata.annotations[service.kubernetes.io/topology-mode]"}},
	// --- several errors at once ---
	{name: "c-many", spec: `{sessionAffinity: Cookie, ports: [{port: 0, protocol: ICMP}]}`, code: 422,
		fields: []string{"spec.ports[0].port", "spec.ports[0].protocol", "spec.ports[0].targetPort", "spec.sessionAffinity"}},
}

type updateCase struct {
	name   string
	base   string // YAML flow mapping of the spec the Service is created with
	patch  string // JSON merge patch
	code   int
	fields []string
	alloc  bool
}

var serviceUpdateCases = []updateCase{
	{name: "u-change-port", base: `{ports: [{port: 80}]}`, patch: `{"spec":{"ports":[{"port":81}]}}`, code: 200},
	{name: "u-bad-port", base: `{ports: [{port: 80}]}`, patch: `{"spec":{"ports":[{"port":0,"targetPort":80}]}}`, code: 422, fields: []string{"spec.ports[0].port"}},
	{name: "u-no-ports", base: `{ports: [{port: 80}]}`, patch: `{"spec":{"ports":null}}`, code: 422, fields: []string{"spec.ports"}},
	{name: "u-clientip", base: `{ports: [{port: 80}]}`, patch: `{"spec":{"sessionAffinity":"ClientIP"}}`, code: 200},
	{name: "u-bad-extip", base: `{ports: [{port: 80}]}`, patch: `{"spec":{"externalIPs":["127.0.0.1"]}}`, code: 422, fields: []string{"spec.externalIPs[0]"}},
	{name: "u-to-nodeport", base: `{ports: [{port: 80}]}`, patch: `{"spec":{"type":"NodePort"}}`, code: 200},
	// upstream: validateLoadBalancerClassField, immutable while a LoadBalancer.
	{name: "u-lb-class-change", base: `{type: LoadBalancer, loadBalancerClass: example.com/a, ports: [{port: 80}]}`,
		patch: `{"spec":{"loadBalancerClass":"example.com/b"}}`, code: 422, fields: []string{"spec.loadBalancerClass"}},
	{name: "u-lb-class-add", base: `{type: LoadBalancer, ports: [{port: 80}]}`,
		patch: `{"spec":{"loadBalancerClass":"example.com/a"}}`, code: 422, fields: []string{"spec.loadBalancerClass"}},
	{name: "u-to-externalname", base: `{ports: [{port: 80}]}`,
		patch: `{"spec":{"type":"ExternalName","externalName":"db.example.com","clusterIP":null,"clusterIPs":null,"ipFamilies":null,"ipFamilyPolicy":null}}`, code: 200},
	{name: "u-from-externalname", base: `{type: ExternalName, externalName: db.example.com, ports: [{port: 80}]}`,
		patch: `{"spec":{"type":"ClusterIP","externalName":null}}`, code: 200},
	// upstream: validateUpgradeDowngradeClusterIPs, the primary clusterIP is immutable.
	{name: "u-change-clusterip", base: `{ports: [{port: 80}]}`, patch: `{"spec":{"clusterIP":"10.96.0.99","clusterIPs":["10.96.0.99"]}}`,
		code: 422, fields: []string{"spec.clusterIPs[0]"}, alloc: true},
	// upstream: the strategy drops node ports and the traffic policy on a type change.
	{name: "u-nodeport-to-clusterip", base: `{type: NodePort, ports: [{port: 80}]}`, patch: `{"spec":{"type":"ClusterIP"}}`, code: 200, alloc: true},
	// upstream: validateServiceExternalTrafficFieldsUpdate.
	{name: "u-change-hcnp", base: `{type: LoadBalancer, externalTrafficPolicy: Local, ports: [{port: 80}]}`,
		patch: `{"spec":{"healthCheckNodePort":32555}}`, code: 422, fields: []string{"spec.healthCheckNodePort"}, alloc: true},
}

type objectCase struct {
	name     string
	manifest string
	code     int
	fields   []string
}

const endpointsTemplate = `apiVersion: v1
kind: Endpoints
metadata: {name: %s}
subsets: [{addresses: [{ip: "%s"}], ports: [{port: 8080}]}]
`

const sliceTemplate = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %s}
addressType: %s
endpoints: [{addresses: ["%s"]}]
ports: [{name: http, port: 8080}]
`

var endpointCases = []objectCase{
	// upstream: validateEndpointAddress + ValidateEndpointIP.
	{name: "ep-ok", manifest: fmt.Sprintf(endpointsTemplate, "ep-ok", "10.244.1.5"), code: 201},
	{name: "ep-loopback", manifest: fmt.Sprintf(endpointsTemplate, "ep-loopback", "127.0.0.1"), code: 422, fields: []string{"subsets[0].addresses[0].ip"}},
	{name: "ep-linklocal", manifest: fmt.Sprintf(endpointsTemplate, "ep-linklocal", "169.254.169.254"), code: 422, fields: []string{"subsets[0].addresses[0].ip"}},
	{name: "ep-fe80", manifest: fmt.Sprintf(endpointsTemplate, "ep-fe80", "fe80::1"), code: 422, fields: []string{"subsets[0].addresses[0].ip"}},
	{name: "ep-mcast", manifest: fmt.Sprintf(endpointsTemplate, "ep-mcast", "224.0.0.251"), code: 422, fields: []string{"subsets[0].addresses[0].ip"}},
	{name: "ep-ff02", manifest: fmt.Sprintf(endpointsTemplate, "ep-ff02", "ff02::2"), code: 422, fields: []string{"subsets[0].addresses[0].ip"}},
	{name: "ep-leading-zero", manifest: fmt.Sprintf(endpointsTemplate, "ep-leading-zero", "10.244.1.05"), code: 422, fields: []string{"subsets[0].addresses[0].ip"}},
	{name: "ep-garbage", manifest: fmt.Sprintf(endpointsTemplate, "ep-garbage", "pod-a"), code: 422, fields: []string{"subsets[0].addresses[0].ip", "subsets[0].addresses[0].ip"}},
	// upstream: discovery validateEndpoints / validateAddressType.
	{name: "eps-ok", manifest: fmt.Sprintf(sliceTemplate, "eps-ok", "IPv4", "10.244.1.5"), code: 201},
	{name: "eps-v6-ok", manifest: fmt.Sprintf(sliceTemplate, "eps-v6-ok", "IPv6", "fd00:10:244:1::5"), code: 201},
	{name: "eps-type-ip", manifest: fmt.Sprintf(sliceTemplate, "eps-type-ip", "IP", "10.244.1.5"), code: 422, fields: []string{"addressType"}},
	{name: "eps-family", manifest: fmt.Sprintf(sliceTemplate, "eps-family", "IPv4", "fd00:10:244:1::5"), code: 422, fields: []string{"endpoints[0].addresses[0]"}},
	{name: "eps-loopback", manifest: fmt.Sprintf(sliceTemplate, "eps-loopback", "IPv4", "127.0.0.1"), code: 422, fields: []string{"endpoints[0].addresses[0]"}},
	{name: "eps-ff02", manifest: fmt.Sprintf(sliceTemplate, "eps-ff02", "IPv6", "ff02::1"), code: 422, fields: []string{"endpoints[0].addresses[0]"}},
	{name: "eps-fqdn", manifest: fmt.Sprintf(sliceTemplate, "eps-fqdn", "FQDN", "web-0.example.com"), code: 201},
	{name: "eps-fqdn-bad", manifest: fmt.Sprintf(sliceTemplate, "eps-fqdn-bad", "FQDN", "web"), code: 422, fields: []string{"endpoints[0].addresses[0]"}},
}

// statusPattern finds the HTTP status in kubectl's -v=6 request log.
var statusPattern = regexp.MustCompile(`status="(\d{3})|\s(\d{3}) [A-Z][A-Za-z ]+ in \d+ milliseconds`)

// kubectlResult runs kubectl -v=6 and returns the last HTTP status it logged and the field
// paths of an Invalid error it printed.
func kubectlResult(t *testing.T, s *testserver.Server, input string, args ...string) (int, []string, string) {
	t.Helper()
	_, stderr, _ := s.KubectlWithInput(t, input, append(args, "-v=6")...)
	code := 0
	for _, m := range statusPattern.FindAllStringSubmatch(stderr, -1) {
		for _, g := range m[1:] {
			if g != "" {
				code, _ = strconv.Atoi(g)
			}
		}
	}
	return code, invalidFields(stderr), stderr
}

// invalidFields pulls the field paths out of kubectl's rendering of a 422:
// `The Service "x" is invalid: path: ...` or one `* path: ...` line per cause.
func invalidFields(stderr string) []string {
	var fields []string
	for _, line := range strings.Split(stderr, "\n") {
		if _, rest, ok := strings.Cut(line, " is invalid: "); ok && strings.HasPrefix(line, "The ") {
			if path, _, ok := strings.Cut(rest, ": "); ok && rest != "" {
				fields = append(fields, path)
			}
			continue
		}
		if rest, ok := strings.CutPrefix(line, "* "); ok {
			if path, _, ok := strings.Cut(rest, ": "); ok {
				fields = append(fields, path)
			}
		}
	}
	return fields
}

func sameFields(got, want []string) bool {
	a, b := slices.Clone(got), slices.Clone(want)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// serverAllocates reports whether the server fills in spec.clusterIP on create.
func serverAllocates(t *testing.T, s *testserver.Server) bool {
	t.Helper()
	in := serviceManifest(validationCase{name: "alloc-probe", spec: `{ports: [{port: 80}]}`})
	if _, stderr, err := s.KubectlWithInput(t, in, "create", "-f", "-"); err != nil {
		t.Fatalf("creating the probe Service: %v\n%s", err, stderr)
	}
	out, _, err := s.Kubectl(t, "get", "svc", "alloc-probe", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out) != ""
}

// TestServiceValidationThroughKubectl creates and updates Services, Endpoints and EndpointSlices
// with kubectl, as a user pasting manifests would, and checks each answer against upstream's.
func TestServiceValidationThroughKubectl(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	allocates := serverAllocates(t, s)

	check := func(t *testing.T, code int, fields []string, stderr string, wantCode int, wantFields []string) {
		t.Helper()
		if code != wantCode {
			t.Fatalf("status %d, want %d\n%s", code, wantCode, tailLines(stderr, 8))
		}
		if wantCode == 422 && !sameFields(fields, wantFields) {
			t.Errorf("invalid fields %q, want %q\n%s", fields, wantFields, tailLines(stderr, 8))
		}
	}

	t.Run("create", func(t *testing.T) {
		for _, c := range serviceCreateCases {
			t.Run(c.name, func(t *testing.T) {
				if c.alloc && !allocates {
					t.Skip("needs ClusterIP/NodePort allocation before validation")
				}
				code, fields, stderr := kubectlResult(t, s, serviceManifest(c), "create", "-f", "-")
				check(t, code, fields, stderr, c.code, c.fields)
			})
		}
	})
	t.Run("update", func(t *testing.T) {
		for _, c := range serviceUpdateCases {
			t.Run(c.name, func(t *testing.T) {
				if c.alloc && !allocates {
					t.Skip("needs ClusterIP/NodePort allocation before validation")
				}
				base := serviceManifest(validationCase{name: c.name, spec: c.base})
				if _, stderr, err := s.KubectlWithInput(t, base, "create", "-f", "-"); err != nil {
					t.Fatalf("creating the Service to update: %v\n%s", err, stderr)
				}
				code, fields, stderr := kubectlResult(t, s, "", "patch", "service", c.name, "--type=merge", "-p", c.patch)
				check(t, code, fields, stderr, c.code, c.fields)
			})
		}
	})
	t.Run("endpoints", func(t *testing.T) {
		for _, c := range endpointCases {
			t.Run(c.name, func(t *testing.T) {
				code, fields, stderr := kubectlResult(t, s, c.manifest, "create", "-f", "-")
				check(t, code, fields, stderr, c.code, c.fields)
			})
		}
	})
	t.Run("endpointslice-addressType-immutable", func(t *testing.T) {
		if _, stderr, err := s.KubectlWithInput(t, fmt.Sprintf(sliceTemplate, "eps-immutable", "IPv4", "10.244.1.7"), "create", "-f", "-"); err != nil {
			t.Fatalf("creating the slice: %v\n%s", err, stderr)
		}
		code, fields, stderr := kubectlResult(t, s, "", "patch", "endpointslice", "eps-immutable", "--type=merge",
			"-p", `{"addressType":"IPv6","endpoints":[{"addresses":["fd00:10:244:1::7"]}]}`)
		check(t, code, fields, stderr, 422, []string{"addressType"})
	})
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
