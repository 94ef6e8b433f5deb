// Package validation checks Services, Endpoints and EndpointSlices the way Kubernetes 1.37 does.
//
// Every function is pure: it takes the object (and, for updates, the stored one) and returns a
// field.ErrorList whose paths, error types and details match upstream's
// k8s.io/kubernetes/pkg/apis/core/validation and pkg/apis/discovery/validation, so a client sees
// the same 422 Invalid response from svcplane as from kube-apiserver. The registry
// (pkg/registry/*) calls these after defaulting; ObjectMeta is checked there too, by
// pkg/registry/base, and is not repeated here.
//
// Objects are the versioned k8s.io/api types, which svcplane also uses as its internal form.
// Rules are written from reading upstream, in our own code; comments name the upstream function a
// rule comes from so that the two can be compared when upstream changes.
package validation

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	netutils "k8s.io/utils/net"
)

// strictIPs is the state of upstream's StrictIPCIDRValidation gate (KEP-4858, beta and on by
// default since 1.36): IPv4 addresses with leading zeros and IPv4-mapped IPv6 addresses are
// rejected in new values. Values already stored in the object being updated stay accepted.
const strictIPs = true

// supportedProtocols are the port protocols of Services, Endpoints and EndpointSlices.
var supportedProtocols = sets.New(corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP)

// invalidEach turns each message of a string-returning check into an Invalid error at path.
func invalidEach(path *field.Path, value any, msgs []string) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range msgs {
		errs = append(errs, field.Invalid(path, value, msg))
	}
	return errs
}

// dnsLabel requires an RFC 1123 label (upstream ValidateDNS1123Label).
func dnsLabel(value string, path *field.Path) field.ErrorList {
	return invalidEach(path, value, utilvalidation.IsDNS1123Label(value))
}

// dnsSubdomain requires an RFC 1123 subdomain (upstream ValidateDNS1123Subdomain).
func dnsSubdomain(value string, path *field.Path) field.ErrorList {
	return invalidEach(path, value, utilvalidation.IsDNS1123Subdomain(value))
}

// qualifiedName requires a Kubernetes qualified name such as "example.com/name" (upstream
// ValidateQualifiedName), used for appProtocol and loadBalancerClass.
func qualifiedName(value string, path *field.Path) field.ErrorList {
	return invalidEach(path, value, utilvalidation.IsQualifiedName(value))
}

// portNumOrName checks a targetPort: a number 1-65535 or an IANA service name (upstream
// ValidatePortNumOrName).
func portNumOrName(port intstr.IntOrString, path *field.Path) field.ErrorList {
	switch port.Type {
	case intstr.Int:
		return invalidEach(path, port.IntValue(), utilvalidation.IsValidPortNum(port.IntValue()))
	case intstr.String:
		return invalidEach(path, port.StrVal, utilvalidation.IsValidPortName(port.StrVal))
	default:
		return field.ErrorList{field.InternalError(path, fmt.Errorf("unknown type: %v", port.Type))}
	}
}

// legacyIP checks an IP in one of the fields that predate strict IP parsing (upstream
// IsValidIPForLegacyField): non-canonical IPv6 spellings pass, ambiguous forms do not, unless
// the same string is already stored in the object being updated.
func legacyIP(path *field.Path, value string, storedIPs []string) field.ErrorList {
	return utilvalidation.IsValidIPForLegacyField(path, value, strictIPs, storedIPs)
}

// legacyCIDR is legacyIP for CIDR-valued fields (upstream IsValidCIDRForLegacyField).
func legacyCIDR(path *field.Path, value string, storedCIDRs []string) field.ErrorList {
	return utilvalidation.IsValidCIDRForLegacyField(path, value, strictIPs, storedCIDRs)
}

// endpointIP rejects addresses that make no sense as a destination for Service traffic
// (upstream ValidateEndpointIP, once ValidateNonSpecialIP): unspecified, loopback, link-local
// unicast (169.254.0.0/16, fe80::/10) and link-local multicast (224.0.0.0/24, ff02::/16).
// Upstream's message says ff02::/10 for the last range although Go's check is ff02::/16; the
// message is kept as upstream has it because clients may match on it.
func endpointIP(value string, path *field.Path) field.ErrorList {
	ip := netutils.ParseIPSloppy(value)
	if ip == nil {
		return field.ErrorList{field.Invalid(path, value, "must be a valid IP address")}
	}
	var errs field.ErrorList
	if ip.IsUnspecified() {
		errs = append(errs, field.Invalid(path, value, fmt.Sprintf("may not be unspecified (%v)", value)))
	}
	if ip.IsLoopback() {
		errs = append(errs, field.Invalid(path, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)"))
	}
	if ip.IsLinkLocalUnicast() {
		errs = append(errs, field.Invalid(path, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"))
	}
	if ip.IsLinkLocalMulticast() {
		errs = append(errs, field.Invalid(path, value, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"))
	}
	return errs
}
