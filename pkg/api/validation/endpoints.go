package validation

import (
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	corev1 "k8s.io/api/core/v1"
)

// ValidateEndpoints checks core/v1 Endpoints being created (upstream ValidateEndpointsCreate,
// minus ObjectMeta).
func ValidateEndpoints(ep *corev1.Endpoints) field.ErrorList {
	return validateEndpointSubsets(ep.Subsets, field.NewPath("subsets"), nil)
}

// ValidateEndpointsUpdate checks an update of Endpoints (upstream ValidateEndpointsUpdate, minus
// ObjectMeta). A node name may change: node IPs and pod CIDRs get reused.
//
// Under KEP-4858, an address stored before strict IP parsing stays acceptable only while the
// update leaves subsets as a whole untouched (e.g. a label edit); once subsets change, every
// address must be valid by today's rules.
func ValidateEndpointsUpdate(ep, old *corev1.Endpoints) field.ErrorList {
	var stored []string
	if apiequality.Semantic.DeepEqual(ep.Subsets, old.Subsets) {
		for _, subset := range old.Subsets {
			for _, addr := range subset.Addresses {
				stored = append(stored, addr.IP)
			}
			for _, addr := range subset.NotReadyAddresses {
				stored = append(stored, addr.IP)
			}
		}
	}
	return validateEndpointSubsets(ep.Subsets, field.NewPath("subsets"), stored)
}

func validateEndpointSubsets(subsets []corev1.EndpointSubset, path *field.Path, storedIPs []string) field.ErrorList {
	var errs field.ErrorList
	for i := range subsets {
		subset := &subsets[i]
		idx := path.Index(i)
		// A subset may lack ports (headless Services) but not addresses.
		if len(subset.Addresses) == 0 && len(subset.NotReadyAddresses) == 0 {
			errs = append(errs, field.Required(idx, "must specify `addresses` or `notReadyAddresses`"))
		}
		for j := range subset.Addresses {
			errs = append(errs, validateEndpointAddress(&subset.Addresses[j], idx.Child("addresses").Index(j), storedIPs)...)
		}
		for j := range subset.NotReadyAddresses {
			errs = append(errs, validateEndpointAddress(&subset.NotReadyAddresses[j], idx.Child("notReadyAddresses").Index(j), storedIPs)...)
		}
		for j := range subset.Ports {
			errs = append(errs, validateEndpointPort(&subset.Ports[j], len(subset.Ports) > 1, idx.Child("ports").Index(j))...)
		}
	}
	return errs
}

func validateEndpointAddress(addr *corev1.EndpointAddress, path *field.Path, storedIPs []string) field.ErrorList {
	ipPath := path.Child("ip")
	errs := legacyIP(ipPath, addr.IP, storedIPs)
	if addr.Hostname != "" {
		errs = append(errs, dnsLabel(addr.Hostname, path.Child("hostname"))...)
	}
	if addr.NodeName != nil {
		errs = append(errs, invalidEach(path.Child("nodeName"), *addr.NodeName, apimachineryvalidation.NameIsDNSSubdomain(*addr.NodeName, false))...)
	}
	// Upstream runs this check even after a parse error, which then reports the IP twice.
	return append(errs, endpointIP(addr.IP, ipPath)...)
}

// validateEndpointPort: unlike Service ports, upstream does not require Endpoints port names to
// be unique.
func validateEndpointPort(port *corev1.EndpointPort, requireName bool, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if requireName && port.Name == "" {
		errs = append(errs, field.Required(path.Child("name"), ""))
	} else if port.Name != "" {
		errs = append(errs, dnsLabel(port.Name, path.Child("name"))...)
	}
	errs = append(errs, invalidEach(path.Child("port"), port.Port, utilvalidation.IsValidPortNum(int(port.Port)))...)
	if port.Protocol == "" {
		errs = append(errs, field.Required(path.Child("protocol"), ""))
	} else if !supportedProtocols.Has(port.Protocol) {
		errs = append(errs, field.NotSupported(path.Child("protocol"), port.Protocol, sets.List(supportedProtocols)))
	}
	if port.AppProtocol != nil {
		errs = append(errs, qualifiedName(*port.AppProtocol, path.Child("appProtocol"))...)
	}
	return errs
}
