package validation

import (
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	netutils "k8s.io/utils/net"
)

// Limits of one EndpointSlice, as upstream enforces them. The API documentation speaks of 100
// ports, but upstream's validation has allowed 20000 since slices began to mirror Endpoints with
// many ports; we follow the code, which is what clients hit.
const (
	MaxEndpointsPerSlice = 1000
	MaxAddresses         = 100
	MaxSlicePorts        = 20000
	MaxZoneHints         = 8
	MaxNodeHints         = 8
)

var supportedAddressTypes = sets.New(discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN)

// ValidateEndpointSlice checks an EndpointSlice being created (upstream
// ValidateEndpointSliceCreate, minus ObjectMeta).
func ValidateEndpointSlice(slice *discoveryv1.EndpointSlice) field.ErrorList {
	return validateEndpointSlice(slice, nil)
}

// ValidateEndpointSliceUpdate checks an update of an EndpointSlice (upstream
// ValidateEndpointSliceUpdate, minus ObjectMeta): addressType is immutable. As for Endpoints,
// addresses that predate strict IP parsing stay acceptable while endpoints are left untouched.
func ValidateEndpointSliceUpdate(slice, old *discoveryv1.EndpointSlice) field.ErrorList {
	var stored []string
	if apiequality.Semantic.DeepEqual(slice.Endpoints, old.Endpoints) {
		for _, endpoint := range old.Endpoints {
			stored = append(stored, endpoint.Addresses...)
		}
	}
	errs := validateEndpointSlice(slice, stored)
	return append(errs, apimachineryvalidation.ValidateImmutableField(slice.AddressType, old.AddressType, field.NewPath("addressType"))...)
}

func validateEndpointSlice(slice *discoveryv1.EndpointSlice, storedIPs []string) field.ErrorList {
	var errs field.ErrorList
	typePath := field.NewPath("addressType")
	if slice.AddressType == "" {
		errs = append(errs, field.Required(typePath, ""))
	} else if !supportedAddressTypes.Has(slice.AddressType) {
		errs = append(errs, field.NotSupported(typePath, slice.AddressType, sets.List(supportedAddressTypes)))
	}
	errs = append(errs, validateSliceEndpoints(slice.Endpoints, slice.AddressType, field.NewPath("endpoints"), storedIPs)...)
	return append(errs, validateSlicePorts(slice.Ports, field.NewPath("ports"))...)
}

func validateSliceEndpoints(endpoints []discoveryv1.Endpoint, addressType discoveryv1.AddressType, path *field.Path, storedIPs []string) field.ErrorList {
	if len(endpoints) > MaxEndpointsPerSlice {
		return field.ErrorList{field.TooMany(path, len(endpoints), MaxEndpointsPerSlice)}
	}
	var errs field.ErrorList
	for i := range endpoints {
		endpoint := &endpoints[i]
		idx := path.Index(i)
		addressesPath := idx.Child("addresses")
		if len(endpoint.Addresses) == 0 {
			errs = append(errs, field.Required(addressesPath, "must contain at least 1 address"))
		} else if len(endpoint.Addresses) > MaxAddresses {
			errs = append(errs, field.TooMany(addressesPath, len(endpoint.Addresses), MaxAddresses))
		}
		for j, address := range endpoint.Addresses {
			errs = append(errs, validateSliceAddress(address, addressType, addressesPath.Index(j), storedIPs)...)
		}
		if endpoint.NodeName != nil {
			errs = append(errs, invalidEach(idx.Child("nodeName"), *endpoint.NodeName,
				apimachineryvalidation.NameIsDNSSubdomain(*endpoint.NodeName, false))...)
		}
		if endpoint.Hostname != nil {
			errs = append(errs, dnsLabel(*endpoint.Hostname, idx.Child("hostname"))...)
		}
		if endpoint.Hints != nil {
			errs = append(errs, validateHints(endpoint.Hints, idx.Child("hints"))...)
		}
	}
	return errs
}

// validateSliceAddress checks one address by the slice's type. Unknown types were reported
// already and their addresses are not looked at, as upstream does.
func validateSliceAddress(address string, addressType discoveryv1.AddressType, path *field.Path, storedIPs []string) field.ErrorList {
	switch addressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		if errs := legacyIP(path, address, storedIPs); len(errs) > 0 {
			return errs
		}
		var errs field.ErrorList
		if addressType == discoveryv1.AddressTypeIPv4 && !netutils.IsIPv4String(address) {
			errs = append(errs, field.Invalid(path, address, "must be an IPv4 address"))
		}
		if addressType == discoveryv1.AddressTypeIPv6 && !netutils.IsIPv6String(address) {
			errs = append(errs, field.Invalid(path, address, "must be an IPv6 address"))
		}
		return append(errs, endpointIP(address, path)...)
	case discoveryv1.AddressTypeFQDN:
		return utilvalidation.IsFullyQualifiedDomainName(path, address)
	}
	return nil
}

func validateSlicePorts(ports []discoveryv1.EndpointPort, path *field.Path) field.ErrorList {
	if len(ports) > MaxSlicePorts {
		return field.ErrorList{field.TooMany(path, len(ports), MaxSlicePorts)}
	}
	var errs field.ErrorList
	names := sets.New[string]()
	for i, port := range ports {
		idx := path.Index(i)
		// Defaulting turns a missing name into "", which is one of the names that must be unique.
		name := ""
		if port.Name != nil {
			name = *port.Name
		}
		if name != "" {
			errs = append(errs, dnsLabel(name, idx.Child("name"))...)
		}
		if names.Has(name) {
			errs = append(errs, field.Duplicate(idx.Child("name"), port.Name))
		} else {
			names.Insert(name)
		}
		if port.Protocol == nil {
			errs = append(errs, field.Required(idx.Child("protocol"), ""))
		} else if !supportedProtocols.Has(*port.Protocol) {
			errs = append(errs, field.NotSupported(idx.Child("protocol"), *port.Protocol, sets.List(supportedProtocols)))
		}
		if port.AppProtocol != nil {
			errs = append(errs, qualifiedName(*port.AppProtocol, idx.Child("appProtocol"))...)
		}
	}
	return errs
}

func validateHints(hints *discoveryv1.EndpointHints, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	zonesPath := path.Child("forZones")
	if len(hints.ForZones) > MaxZoneHints {
		return field.ErrorList{field.TooMany(zonesPath, len(hints.ForZones), MaxZoneHints)}
	}
	zones := sets.New[string]()
	for i, zone := range hints.ForZones {
		namePath := zonesPath.Index(i).Child("name")
		if zones.Has(zone.Name) {
			errs = append(errs, field.Duplicate(namePath, zone.Name))
		} else {
			zones.Insert(zone.Name)
		}
		errs = append(errs, invalidEach(namePath, zone.Name, utilvalidation.IsValidLabelValue(zone.Name))...)
	}

	nodesPath := path.Child("forNodes")
	if len(hints.ForNodes) > MaxNodeHints {
		return append(errs, field.TooMany(nodesPath, len(hints.ForNodes), MaxNodeHints))
	}
	nodes := sets.New[string]()
	for i, node := range hints.ForNodes {
		namePath := nodesPath.Index(i).Child("name")
		if nodes.Has(node.Name) {
			errs = append(errs, field.Duplicate(namePath, node.Name))
		} else {
			nodes.Insert(node.Name)
		}
		errs = append(errs, invalidEach(namePath, node.Name, apimachineryvalidation.NameIsDNSSubdomain(node.Name, false))...)
	}
	return errs
}
