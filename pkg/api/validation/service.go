package validation

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	netutils "k8s.io/utils/net"
)

// MaxClientIPAffinitySeconds is the longest ClientIP session affinity upstream accepts (one day).
const MaxClientIPAffinitySeconds = int32(86400)

var (
	supportedServiceTypes = sets.New(corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort,
		corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName)
	supportedSessionAffinities = sets.New(corev1.ServiceAffinityClientIP, corev1.ServiceAffinityNone)
	supportedIPFamilies        = sets.New(corev1.IPv4Protocol, corev1.IPv6Protocol)
	supportedIPFamilyPolicies  = sets.New(corev1.IPFamilyPolicySingleStack,
		corev1.IPFamilyPolicyPreferDualStack, corev1.IPFamilyPolicyRequireDualStack)
	supportedExternalTrafficPolicies = sets.New(corev1.ServiceExternalTrafficPolicyCluster,
		corev1.ServiceExternalTrafficPolicyLocal)
	supportedInternalTrafficPolicies = sets.New(corev1.ServiceInternalTrafficPolicyCluster,
		corev1.ServiceInternalTrafficPolicyLocal)
	supportedLoadBalancerIPModes = sets.New(corev1.LoadBalancerIPModeVIP, corev1.LoadBalancerIPModeProxy)
	// Upstream lists these in this order (not sorted) in its "supported values" message.
	supportedTrafficDistributions = []string{corev1.ServiceTrafficDistributionPreferClose,
		corev1.ServiceTrafficDistributionPreferSameZone, corev1.ServiceTrafficDistributionPreferSameNode}
)

var (
	specPath   = field.NewPath("spec")
	statusPath = field.NewPath("status")
)

// ValidateService checks a Service being created (upstream ValidateServiceCreate, minus
// ObjectMeta). It expects a defaulted object whose clusterIPs were already normalized from
// clusterIP and whose IPs, IP families and node ports were already allocated: upstream allocates
// in the store's BeginCreate, before the strategy validates.
func ValidateService(svc *corev1.Service) field.ErrorList {
	return validateService(svc, nil)
}

// ValidateServiceUpdate checks an update of a Service's spec (upstream ValidateServiceUpdate,
// minus ObjectMeta): the create rules on the new object, plus which fields may change.
func ValidateServiceUpdate(svc, old *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	// Primary clusterIP and IP family are fixed; dual-stack may add or drop the secondary. Both
	// are free to change when the Service moves to or from ExternalName.
	errs = append(errs, validateClusterIPsUpdate(old, svc)...)
	errs = append(errs, validateIPFamiliesUpdate(old, svc)...)
	errs = append(errs, validateLoadBalancerClass(old, svc)...)
	if needsHealthCheck(old) && needsHealthCheck(svc) &&
		svc.Spec.HealthCheckNodePort != old.Spec.HealthCheckNodePort {
		errs = append(errs, field.Forbidden(specPath.Child("healthCheckNodePort"), "field is immutable"))
	}
	return append(errs, validateService(svc, old)...)
}

// ValidateServiceStatusUpdate checks an update of a Service's status (upstream
// ValidateServiceStatusUpdate, minus ObjectMeta).
func ValidateServiceStatusUpdate(svc, old *corev1.Service) field.ErrorList {
	var stored []string
	for _, ingress := range old.Status.LoadBalancer.Ingress {
		stored = append(stored, ingress.IP)
	}
	return validateLoadBalancerStatus(&svc.Status.LoadBalancer, statusPath.Child("loadBalancer"), &svc.Spec, stored)
}

// validateService is upstream's ValidateService; old, when set, is the stored object whose IP
// strings stay acceptable even where they would not be today.
func validateService(svc, old *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	spec := &svc.Spec

	hints, hintsSet := svc.Annotations[corev1.DeprecatedAnnotationTopologyAwareHints]
	mode, modeSet := svc.Annotations[corev1.AnnotationTopologyMode]
	if hintsSet && modeSet && hints != mode {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "annotations").Key(corev1.AnnotationTopologyMode), mode,
			fmt.Sprintf("must match annotations[%s] when both are specified", corev1.DeprecatedAnnotationTopologyAwareHints)))
	}

	headless := isHeadless(svc)
	if len(spec.Ports) == 0 && !headless && spec.Type != corev1.ServiceTypeExternalName {
		errs = append(errs, field.Required(specPath.Child("ports"), ""))
	}
	switch spec.Type {
	case corev1.ServiceTypeLoadBalancer:
		if headless {
			errs = append(errs, field.Invalid(specPath.Child("clusterIPs").Index(0), spec.ClusterIPs[0],
				"may not be set to 'None' for LoadBalancer services"))
		}
	case corev1.ServiceTypeNodePort:
		if headless {
			errs = append(errs, field.Invalid(specPath.Child("clusterIPs").Index(0), spec.ClusterIPs[0],
				"may not be set to 'None' for NodePort services"))
		}
	case corev1.ServiceTypeExternalName:
		errs = append(errs, validateExternalName(spec)...)
	}

	portNames := sets.New[string]()
	for i := range spec.Ports {
		errs = append(errs, validateServicePort(&spec.Ports[i], len(spec.Ports) > 1, portNames, specPath.Child("ports").Index(i))...)
	}

	if spec.Selector != nil {
		errs = append(errs, metav1validation.ValidateLabels(spec.Selector, specPath.Child("selector"))...)
	}

	errs = append(errs, validateSessionAffinity(spec)...)

	var oldClusterIPs, oldExternalIPs, oldSourceRanges []string
	if old != nil {
		oldClusterIPs = old.Spec.ClusterIPs
		oldExternalIPs = old.Spec.ExternalIPs
		oldSourceRanges = old.Spec.LoadBalancerSourceRanges
	}
	errs = append(errs, validateClusterIPsRelatedFields(svc, oldClusterIPs)...)

	for i, ip := range spec.ExternalIPs {
		path := specPath.Child("externalIPs").Index(i)
		if ipErrs := legacyIP(path, ip, oldExternalIPs); len(ipErrs) > 0 {
			errs = append(errs, ipErrs...)
		} else {
			errs = append(errs, endpointIP(ip, path)...)
		}
	}

	if spec.Type == "" {
		errs = append(errs, field.Required(specPath.Child("type"), ""))
	} else if !supportedServiceTypes.Has(spec.Type) {
		errs = append(errs, field.NotSupported(specPath.Child("type"), spec.Type, sets.List(supportedServiceTypes)))
	}

	errs = append(errs, validateNodePorts(spec)...)

	// Two ports may not share a (protocol, port) pair.
	type protoPort struct {
		protocol corev1.Protocol
		port     int32
	}
	seenPorts := map[protoPort]bool{}
	for i, port := range spec.Ports {
		key := protoPort{port.Protocol, port.Port}
		if seenPorts[key] {
			errs = append(errs, field.Duplicate(specPath.Child("ports").Index(i), duplicatePortValue{Protocol: port.Protocol, Port: port.Port}))
		}
		seenPorts[key] = true
	}

	errs = append(errs, validateSourceRanges(svc, oldSourceRanges)...)

	if spec.AllocateLoadBalancerNodePorts != nil && spec.Type != corev1.ServiceTypeLoadBalancer {
		errs = append(errs, field.Forbidden(specPath.Child("allocateLoadBalancerNodePorts"), "may only be used when `type` is 'LoadBalancer'"))
	}
	if spec.Type == corev1.ServiceTypeLoadBalancer && spec.AllocateLoadBalancerNodePorts == nil {
		// Upstream's path here lacks the "spec." prefix; kept for identical responses.
		errs = append(errs, field.Required(field.NewPath("allocateLoadBalancerNodePorts"), ""))
	}

	errs = append(errs, validateLoadBalancerClass(nil, svc)...)
	errs = append(errs, validateExternalTrafficPolicy(svc)...)
	errs = append(errs, validateInternalTrafficPolicy(spec)...)
	errs = append(errs, validateTrafficDistribution(spec)...)
	return errs
}

// duplicatePortValue is what upstream reports as the bad value of a duplicate (protocol, port)
// pair: its internal core.ServicePort, whose fields carry no JSON tags. This struct has the same
// fields in the same order, so the message renders byte for byte the same, e.g.
// Duplicate value: {"Name":"","Protocol":"TCP","AppProtocol":null,"Port":80,"TargetPort":0,"NodePort":0}.
type duplicatePortValue struct {
	Name        string
	Protocol    corev1.Protocol
	AppProtocol *string
	Port        int32
	TargetPort  intstr.IntOrString
	NodePort    int32
}

// validateExternalName: an ExternalName Service is only a DNS CNAME, so it has no cluster IPs
// or families, and the name must be a DNS subdomain (a trailing dot is allowed).
func validateExternalName(spec *corev1.ServiceSpec) field.ErrorList {
	var errs field.ErrorList
	if len(spec.ClusterIPs) > 0 {
		errs = append(errs, field.Forbidden(specPath.Child("clusterIPs"), "may not be set for ExternalName services"))
	}
	if len(spec.IPFamilies) > 0 {
		errs = append(errs, field.Forbidden(specPath.Child("ipFamilies"), "may not be set for ExternalName services"))
	}
	if spec.IPFamilyPolicy != nil {
		errs = append(errs, field.Forbidden(specPath.Child("ipFamilyPolicy"), "may not be set for ExternalName services"))
	}
	cname := strings.TrimSuffix(spec.ExternalName, ".")
	if cname == "" {
		errs = append(errs, field.Required(specPath.Child("externalName"), ""))
	} else {
		errs = append(errs, dnsSubdomain(cname, specPath.Child("externalName"))...)
	}
	return errs
}

// validateServicePort is upstream's validateServicePort: names are DNS labels, required and
// unique once there is more than one port.
func validateServicePort(port *corev1.ServicePort, requireName bool, names sets.Set[string], path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if requireName && port.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), ""))
	} else if port.Name != "" {
		errs = append(errs, dnsLabel(port.Name, path.Child("name"))...)
		if names.Has(port.Name) {
			errs = append(errs, field.Duplicate(path.Child("name"), port.Name))
		} else {
			names.Insert(port.Name)
		}
	}
	errs = append(errs, invalidEach(path.Child("port"), port.Port, utilvalidation.IsValidPortNum(int(port.Port)))...)
	if port.Protocol == "" {
		errs = append(errs, field.Required(path.Child("protocol"), ""))
	} else if !supportedProtocols.Has(port.Protocol) {
		errs = append(errs, field.NotSupported(path.Child("protocol"), port.Protocol, sets.List(supportedProtocols)))
	}
	errs = append(errs, portNumOrName(port.TargetPort, path.Child("targetPort"))...)
	if port.AppProtocol != nil {
		errs = append(errs, qualifiedName(*port.AppProtocol, path.Child("appProtocol"))...)
	}
	// Upstream tolerates any targetPort on headless Services for v1 compatibility.
	return errs
}

func validateSessionAffinity(spec *corev1.ServiceSpec) field.ErrorList {
	var errs field.ErrorList
	path := specPath.Child("sessionAffinity")
	if spec.SessionAffinity == "" {
		errs = append(errs, field.Required(path, ""))
	} else if !supportedSessionAffinities.Has(spec.SessionAffinity) {
		errs = append(errs, field.NotSupported(path, spec.SessionAffinity, sets.List(supportedSessionAffinities)))
	}

	configPath := specPath.Child("sessionAffinityConfig")
	switch spec.SessionAffinity {
	case corev1.ServiceAffinityClientIP:
		why := fmt.Sprintf("when session affinity type is %s", corev1.ServiceAffinityClientIP)
		config := spec.SessionAffinityConfig
		switch {
		case config == nil:
			errs = append(errs, field.Required(configPath, why))
		case config.ClientIP == nil:
			errs = append(errs, field.Required(configPath.Child("clientIP"), why))
		case config.ClientIP.TimeoutSeconds == nil:
			errs = append(errs, field.Required(configPath.Child("clientIP", "timeoutSeconds"), why))
		default:
			if timeout := *config.ClientIP.TimeoutSeconds; timeout <= 0 || timeout > MaxClientIPAffinitySeconds {
				errs = append(errs, field.Invalid(configPath.Child("clientIP", "timeoutSeconds"), timeout,
					fmt.Sprintf("must be greater than 0 and less than %d", MaxClientIPAffinitySeconds)))
			}
		}
	case corev1.ServiceAffinityNone:
		if spec.SessionAffinityConfig != nil {
			errs = append(errs, field.Forbidden(configPath, fmt.Sprintf("must not be set when session affinity is %s", corev1.ServiceAffinityNone)))
		}
	}
	return errs
}

// validateClusterIPsRelatedFields is upstream's ValidateServiceClusterIPsRelatedFields: clusterIP
// and clusterIPs agree, families and policy are known values, the IPs are valid, at most one per
// family, and each matches the family listed at its index.
func validateClusterIPsRelatedFields(svc *corev1.Service, storedClusterIPs []string) field.ErrorList {
	spec := &svc.Spec
	// ExternalName was checked (all of these must be empty) in validateExternalName.
	if spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	var errs field.ErrorList
	clusterIPsPath := specPath.Child("clusterIPs")
	familiesPath := specPath.Child("ipFamilies")

	if spec.ClusterIP != "" {
		if len(spec.ClusterIPs) == 0 {
			errs = append(errs, field.Required(clusterIPsPath, ""))
		} else if spec.ClusterIPs[0] != spec.ClusterIP {
			errs = append(errs, field.Invalid(clusterIPsPath, spec.ClusterIPs, "first value must match `clusterIP`"))
		}
	} else if len(spec.ClusterIPs) != 0 {
		errs = append(errs, field.Invalid(clusterIPsPath, spec.ClusterIPs, "must be empty when `clusterIP` is not specified"))
	}

	seenFamilies := sets.New[corev1.IPFamily]()
	for i, family := range spec.IPFamilies {
		if !supportedIPFamilies.Has(family) {
			errs = append(errs, field.NotSupported(familiesPath.Index(i), family, sets.List(supportedIPFamilies)))
		}
		if seenFamilies.Has(family) {
			errs = append(errs, field.Duplicate(familiesPath.Index(i), family))
		}
		seenFamilies.Insert(family)
	}

	if spec.IPFamilyPolicy != nil && !supportedIPFamilyPolicies.Has(*spec.IPFamilyPolicy) {
		errs = append(errs, field.NotSupported(specPath.Child("ipFamilyPolicy"), spec.IPFamilyPolicy, sets.List(supportedIPFamilyPolicies)))
	}

	badIPs := false
	for i, ip := range spec.ClusterIPs {
		if i == 0 && ip == corev1.ClusterIPNone {
			if len(spec.ClusterIPs) > 1 {
				badIPs = true
				errs = append(errs, field.Invalid(clusterIPsPath, spec.ClusterIPs, "'None' must be the first and only value"))
			}
			continue
		}
		ipErrs := legacyIP(clusterIPsPath.Index(i), ip, storedClusterIPs)
		badIPs = badIPs || len(ipErrs) > 0
		errs = append(errs, ipErrs...)
	}
	if len(spec.ClusterIPs) > 2 {
		errs = append(errs, field.Invalid(clusterIPsPath, spec.ClusterIPs, "may only hold up to 2 values"))
	}
	// A bad IP would make the family checks below report nonsense, so stop here as upstream does.
	if badIPs {
		return errs
	}

	if len(spec.ClusterIPs) > 1 {
		if dual, err := netutils.IsDualStackIPStrings(spec.ClusterIPs); err != nil {
			errs = append(errs, field.InternalError(clusterIPsPath, fmt.Errorf("failed to check for dual stack with error:%v", err)))
		} else if !dual {
			errs = append(errs, field.Invalid(clusterIPsPath, spec.ClusterIPs, "may specify no more than one IP for each IP family"))
		}
	}

	if !isHeadless(svc) && len(spec.ClusterIPs) > 0 && len(spec.IPFamilies) > 0 {
		for i, ip := range spec.ClusterIPs {
			if i >= len(spec.IPFamilies) {
				break
			}
			if spec.IPFamilies[i] == corev1.IPv4Protocol && netutils.IsIPv6String(ip) {
				errs = append(errs, field.Invalid(clusterIPsPath.Index(i), ip, fmt.Sprintf("expected an IPv4 value as indicated by `ipFamilies[%v]`", i)))
			}
			if spec.IPFamilies[i] == corev1.IPv6Protocol && !netutils.IsIPv6String(ip) {
				errs = append(errs, field.Invalid(clusterIPsPath.Index(i), ip, fmt.Sprintf("expected an IPv6 value as indicated by `ipFamilies[%v]`", i)))
			}
		}
	}
	return errs
}

// validateNodePorts: ClusterIP Services have no node ports, and no two ports share a
// (protocol, nodePort) pair.
func validateNodePorts(spec *corev1.ServiceSpec) field.ErrorList {
	var errs field.ErrorList
	portsPath := specPath.Child("ports")
	if spec.Type == corev1.ServiceTypeClusterIP {
		for i := range spec.Ports {
			if spec.Ports[i].NodePort != 0 {
				errs = append(errs, field.Forbidden(portsPath.Index(i).Child("nodePort"), "may not be used when `type` is 'ClusterIP'"))
			}
		}
	}
	type protoNodePort struct {
		protocol corev1.Protocol
		nodePort int32
	}
	seen := map[protoNodePort]bool{}
	for i, port := range spec.Ports {
		if port.NodePort == 0 {
			continue
		}
		key := protoNodePort{port.Protocol, port.NodePort}
		if seen[key] {
			errs = append(errs, field.Duplicate(portsPath.Index(i).Child("nodePort"), port.NodePort))
		}
		seen[key] = true
	}
	return errs
}

// validateSourceRanges checks spec.loadBalancerSourceRanges or, when that is empty, the older
// service.beta.kubernetes.io/load-balancer-source-ranges annotation.
func validateSourceRanges(svc *corev1.Service, storedRanges []string) field.ErrorList {
	var errs field.ErrorList
	spec := &svc.Spec
	if len(spec.LoadBalancerSourceRanges) > 0 {
		// Upstream's path is capitalized here; kept for identical responses.
		path := specPath.Child("LoadBalancerSourceRanges")
		if spec.Type != corev1.ServiceTypeLoadBalancer {
			errs = append(errs, field.Forbidden(path, "may only be used when `type` is 'LoadBalancer'"))
		}
		for i, value := range spec.LoadBalancerSourceRanges {
			// Spaces around a value are tolerated, a leftover from the annotation's format.
			errs = append(errs, legacyCIDR(path.Index(i), strings.TrimSpace(value), trimAll(storedRanges))...)
		}
		return errs
	}
	value, set := svc.Annotations[corev1.AnnotationLoadBalancerSourceRangesKey]
	if !set {
		return nil
	}
	path := field.NewPath("metadata", "annotations").Key(corev1.AnnotationLoadBalancerSourceRangesKey)
	if spec.Type != corev1.ServiceTypeLoadBalancer {
		errs = append(errs, field.Forbidden(path, "may only be used when `type` is 'LoadBalancer'"))
	}
	if value = strings.TrimSpace(value); value != "" {
		for _, cidr := range strings.Split(value, ",") {
			errs = append(errs, legacyCIDR(path, strings.TrimSpace(cidr), nil)...)
		}
	}
	return errs
}

func trimAll(values []string) []string {
	if len(values) == 0 {
		return nil
	}
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = strings.TrimSpace(v)
	}
	return out
}

// validateLoadBalancerClass: only LoadBalancer Services have a class, it is a qualified name,
// and it may not change while the Service stays a LoadBalancer (old is nil on create).
func validateLoadBalancerClass(old, svc *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	path := specPath.Child("loadBalancerClass")
	class := svc.Spec.LoadBalancerClass
	if old != nil && old.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.Type == corev1.ServiceTypeLoadBalancer &&
		!sameClass(old.Spec.LoadBalancerClass, class) {
		errs = append(errs, field.Invalid(path, class, "may not change once set"))
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		if class != nil {
			errs = append(errs, qualifiedName(*class, path)...)
		}
	} else if class != nil {
		errs = append(errs, field.Forbidden(path, "may only be used when `type` is 'LoadBalancer'"))
	}
	return errs
}

func sameClass(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// externallyAccessible mirrors upstream's apiservice.ExternallyAccessible: reachable from outside
// the cluster through node ports, a load balancer, or external IPs.
func externallyAccessible(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeLoadBalancer ||
		svc.Spec.Type == corev1.ServiceTypeNodePort ||
		(svc.Spec.Type == corev1.ServiceTypeClusterIP && len(svc.Spec.ExternalIPs) > 0)
}

// needsHealthCheck mirrors upstream's apiservice.NeedsHealthCheck: a LoadBalancer that keeps
// external traffic on the node it arrives at needs a health-check node port.
func needsHealthCheck(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeLoadBalancer &&
		svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
}

func validateExternalTrafficPolicy(svc *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	policy := svc.Spec.ExternalTrafficPolicy
	policyPath := specPath.Child("externalTrafficPolicy")
	if !externallyAccessible(svc) {
		if policy != "" {
			errs = append(errs, field.Invalid(policyPath, policy, "may only be set for externally-accessible services"))
		}
	} else if policy == "" {
		errs = append(errs, field.Required(policyPath, ""))
	} else if !supportedExternalTrafficPolicies.Has(policy) {
		errs = append(errs, field.NotSupported(policyPath, policy, sets.List(supportedExternalTrafficPolicies)))
	}

	port := svc.Spec.HealthCheckNodePort
	portPath := specPath.Child("healthCheckNodePort")
	if !needsHealthCheck(svc) {
		if port != 0 {
			errs = append(errs, field.Invalid(portPath, port, "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"))
		}
	} else if port == 0 {
		errs = append(errs, field.Required(portPath, ""))
	} else {
		errs = append(errs, invalidEach(portPath, port, utilvalidation.IsValidPortNum(int(port)))...)
	}
	return errs
}

func validateInternalTrafficPolicy(spec *corev1.ServiceSpec) field.ErrorList {
	path := specPath.Child("internalTrafficPolicy")
	if spec.InternalTrafficPolicy == nil {
		// Upstream never required it of ExternalName (or unknown) types, so as not to invalidate
		// objects stored before the field went beta.
		switch spec.Type {
		case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
			return field.ErrorList{field.Required(path, "")}
		}
		return nil
	}
	if !supportedInternalTrafficPolicies.Has(*spec.InternalTrafficPolicy) {
		return field.ErrorList{field.NotSupported(path, *spec.InternalTrafficPolicy, sets.List(supportedInternalTrafficPolicies))}
	}
	return nil
}

func validateTrafficDistribution(spec *corev1.ServiceSpec) field.ErrorList {
	if spec.TrafficDistribution == nil {
		return nil
	}
	for _, supported := range supportedTrafficDistributions {
		if *spec.TrafficDistribution == supported {
			return nil
		}
	}
	return field.ErrorList{field.NotSupported(specPath.Child("trafficDistribution"), *spec.TrafficDistribution, supportedTrafficDistributions)}
}

// isHeadless: clusterIPs is exactly ["None"].
func isHeadless(svc *corev1.Service) bool {
	return svc != nil && len(svc.Spec.ClusterIPs) == 1 && svc.Spec.ClusterIPs[0] == corev1.ClusterIPNone
}

// validateClusterIPsUpdate is upstream's validateUpgradeDowngradeClusterIPs.
func validateClusterIPsUpdate(old, svc *corev1.Service) field.ErrorList {
	if svc.Spec.Type == corev1.ServiceTypeExternalName || old.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	if isHeadless(old) && isHeadless(svc) {
		return nil
	}
	var errs field.ErrorList
	path := specPath.Child("clusterIPs")
	oldIPs, newIPs := old.Spec.ClusterIPs, svc.Spec.ClusterIPs
	switch {
	case len(oldIPs) == len(newIPs):
		for i := range oldIPs {
			if oldIPs[i] != newIPs[i] {
				errs = append(errs, field.Invalid(path.Index(i), newIPs, "may not change once set"))
			}
		}
	case len(oldIPs) > len(newIPs):
		if len(newIPs) == 0 {
			errs = append(errs, field.Invalid(path.Index(0), newIPs, "primary clusterIP can not be unset"))
		}
		if len(newIPs) > 0 && newIPs[0] != oldIPs[0] {
			errs = append(errs, field.Invalid(path.Index(0), newIPs, "may not change once set"))
		}
		// Dropping the secondary IP is a downgrade to single-stack, which must be asked for.
		if len(newIPs) == 1 && !singleStack(svc.Spec.IPFamilyPolicy) {
			errs = append(errs, field.Invalid(specPath.Child("ipFamilyPolicy"), svc.Spec.IPFamilyPolicy,
				"must be set to 'SingleStack' when releasing the secondary clusterIP"))
		}
	default:
		if len(oldIPs) > 0 && newIPs[0] != oldIPs[0] {
			errs = append(errs, field.Invalid(path.Index(0), newIPs, "may not change once set"))
		}
	}
	return errs
}

// validateIPFamiliesUpdate is upstream's validateUpgradeDowngradeIPFamilies, including its
// quirks: the index is always 0, and some errors carry clusterIPs as the bad value.
func validateIPFamiliesUpdate(old, svc *corev1.Service) field.ErrorList {
	if svc.Spec.Type == corev1.ServiceTypeExternalName || old.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	// Headless Services may change families, and so may a change to or from headless.
	if isHeadless(old) || isHeadless(svc) {
		return nil
	}
	var errs field.ErrorList
	path := specPath.Child("ipFamilies").Index(0)
	oldFamilies, newFamilies := old.Spec.IPFamilies, svc.Spec.IPFamilies
	switch {
	case len(oldFamilies) == len(newFamilies):
		for i := range oldFamilies {
			if oldFamilies[i] != newFamilies[i] {
				errs = append(errs, field.Invalid(path, newFamilies, "may not change once set"))
			}
		}
	case len(oldFamilies) > len(newFamilies):
		// Upstream tests clusterIPs, not ipFamilies, here.
		if len(svc.Spec.ClusterIPs) == 0 {
			errs = append(errs, field.Invalid(path, newFamilies, "primary ipFamily can not be unset"))
		}
		if len(newFamilies) > 0 && newFamilies[0] != oldFamilies[0] {
			errs = append(errs, field.Invalid(path, svc.Spec.ClusterIPs, "may not change once set"))
		}
		if len(newFamilies) == 1 && !singleStack(svc.Spec.IPFamilyPolicy) {
			errs = append(errs, field.Invalid(specPath.Child("ipFamilyPolicy"), svc.Spec.IPFamilyPolicy,
				"must be set to 'SingleStack' when releasing the secondary ipFamily"))
		}
	default:
		if len(oldFamilies) > 0 && len(newFamilies) > 0 && newFamilies[0] != oldFamilies[0] {
			errs = append(errs, field.Invalid(path, svc.Spec.ClusterIPs, "may not change once set"))
		}
	}
	return errs
}

func singleStack(policy *corev1.IPFamilyPolicy) bool {
	return policy != nil && *policy == corev1.IPFamilyPolicySingleStack
}

// validateLoadBalancerStatus is upstream's ValidateLoadBalancerStatus with its gates at their
// 1.37 defaults: AllowServiceLBStatusOnNonLB off, LoadBalancerIPMode on (GA).
func validateLoadBalancerStatus(status *corev1.LoadBalancerStatus, path *field.Path, spec *corev1.ServiceSpec, storedIPs []string) field.ErrorList {
	var errs field.ErrorList
	ingressPath := path.Child("ingress")
	if spec.Type != corev1.ServiceTypeLoadBalancer && len(status.Ingress) != 0 {
		return field.ErrorList{field.Forbidden(ingressPath, "may only be used when `spec.type` is 'LoadBalancer'")}
	}
	for i, ingress := range status.Ingress {
		idx := ingressPath.Index(i)
		if ingress.IP != "" {
			errs = append(errs, legacyIP(idx.Child("ip"), ingress.IP, storedIPs)...)
		}
		switch {
		case ingress.IPMode == nil:
			if ingress.IP != "" {
				errs = append(errs, field.Required(idx.Child("ipMode"), "must be specified when `ip` is set"))
			}
		case ingress.IP == "":
			errs = append(errs, field.Forbidden(idx.Child("ipMode"), "may not be specified when `ip` is not set"))
		case !supportedLoadBalancerIPModes.Has(*ingress.IPMode):
			errs = append(errs, field.NotSupported(idx.Child("ipMode"), ingress.IPMode, sets.List(supportedLoadBalancerIPModes)))
		}
		if ingress.Hostname != "" {
			errs = append(errs, dnsSubdomain(ingress.Hostname, idx.Child("hostname"))...)
			if netutils.ParseIPSloppy(ingress.Hostname) != nil {
				errs = append(errs, field.Invalid(idx.Child("hostname"), ingress.Hostname, "must be a DNS name, not an IP address"))
			}
		}
	}
	return errs
}
