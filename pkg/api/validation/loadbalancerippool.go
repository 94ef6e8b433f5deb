package validation

import (
	"fmt"
	"net/netip"
	"strings"

	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
)

// AddressRange is one entry of a LoadBalancerIPPool's spec.addresses: the inclusive range
// First..Last of one IP family.
type AddressRange struct {
	First, Last netip.Addr
	// Prefix is set when the entry was written as a CIDR.
	Prefix netip.Prefix
}

// Assignable returns the part of the range that may be handed out: all of it, except that a CIDR
// keeps its network address (and for IPv4 its broadcast address) back, as the ClusterIP
// allocator does, since many hosts and routers treat those specially.
func (r AddressRange) Assignable() (first, last netip.Addr, ok bool) {
	first, last = r.First, r.Last
	if r.Prefix.IsValid() {
		if r.First.Is4() && r.Prefix.Bits() <= 30 {
			first, last = first.Next(), last.Prev()
		} else if r.First.Is6() && r.Prefix.Bits() <= 126 {
			first = first.Next()
		}
	}
	return first, last, first.IsValid() && last.IsValid() && first.Compare(last) <= 0
}

// Contains reports whether ip is in the range.
func (r AddressRange) Contains(ip netip.Addr) bool {
	return r.First.Compare(ip) <= 0 && ip.Compare(r.Last) <= 0
}

// Overlaps reports whether the two ranges share an address.
func (r AddressRange) Overlaps(o AddressRange) bool {
	return r.First.Compare(o.Last) <= 0 && o.First.Compare(r.Last) <= 0
}

// ParseAddressRange reads a CIDR ("10.251.0.0/24") or an inclusive range
// ("10.251.0.10-10.251.0.20"). The messages are what a user needs to fix the value.
func ParseAddressRange(s string) (AddressRange, error) {
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, err1 := netip.ParseAddr(strings.TrimSpace(first))
		b, err2 := netip.ParseAddr(strings.TrimSpace(last))
		switch {
		case err1 != nil || err2 != nil || a.Zone() != "" || b.Zone() != "":
			return AddressRange{}, fmt.Errorf("must be a CIDR (e.g. 10.251.0.0/24) or a range of two IP addresses (e.g. 10.251.0.10-10.251.0.20)")
		case a.Is4() != b.Is4() || a.Is4In6() || b.Is4In6():
			return AddressRange{}, fmt.Errorf("a range's two addresses must be of the same IP family")
		case b.Less(a):
			return AddressRange{}, fmt.Errorf("a range's first address must not be after its last")
		}
		return AddressRange{First: a, Last: b}, nil
	}
	prefix, err := netip.ParsePrefix(s)
	if err != nil || prefix.Addr().Is4In6() {
		return AddressRange{}, fmt.Errorf("must be a CIDR (e.g. 10.251.0.0/24) or a range of two IP addresses (e.g. 10.251.0.10-10.251.0.20)")
	}
	// Same rule as upstream's strict CIDR parsing for Services (KEP-4858): host bits set are a
	// typo more often than not.
	if prefix.Masked() != prefix {
		return AddressRange{}, fmt.Errorf("must not have host bits set; did you mean %s?", prefix.Masked())
	}
	return AddressRange{First: prefix.Addr(), Last: lastAddr(prefix), Prefix: prefix}, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	return last
}

// ValidateLoadBalancerIPPool checks a pool on create and update. others are the other pools
// stored: a pool's addresses may not overlap theirs, or two Services could be handed one address
// by two pools with different selectors.
func ValidateLoadBalancerIPPool(pool *svcplanev1.LoadBalancerIPPool, others []svcplanev1.LoadBalancerIPPool) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	addresses := spec.Child("addresses")
	if len(pool.Spec.Addresses) == 0 {
		errs = append(errs, field.Required(addresses, "a pool needs at least one CIDR or range"))
	}
	var stored []namedRange
	for _, other := range others {
		if other.Name == pool.Name {
			continue
		}
		for _, o := range other.Spec.Addresses {
			if r, err := ParseAddressRange(o); err == nil {
				stored = append(stored, namedRange{pool: other.Name, text: o, r: r})
			}
		}
	}
	parsed := make([]AddressRange, len(pool.Spec.Addresses))
	valid := make([]bool, len(pool.Spec.Addresses))
	for i, s := range pool.Spec.Addresses {
		r, err := ParseAddressRange(s)
		if err != nil {
			errs = append(errs, field.Invalid(addresses.Index(i), s, err.Error()))
			continue
		}
		parsed[i], valid[i] = r, true
		for j := range i {
			if valid[j] && parsed[j].Overlaps(r) {
				errs = append(errs, field.Invalid(addresses.Index(i), s, fmt.Sprintf("overlaps spec.addresses[%d] (%s)", j, pool.Spec.Addresses[j])))
			}
		}
		for _, o := range stored {
			if o.r.Overlaps(r) {
				errs = append(errs, field.Invalid(addresses.Index(i), s,
					fmt.Sprintf("overlaps %s of LoadBalancerIPPool %q; an address may belong to one pool only", o.text, o.pool)))
			}
		}
	}
	opts := metav1validation.LabelSelectorValidationOptions{}
	if pool.Spec.ServiceSelector != nil {
		errs = append(errs, metav1validation.ValidateLabelSelector(pool.Spec.ServiceSelector, opts, spec.Child("serviceSelector"))...)
	}
	if pool.Spec.NamespaceSelector != nil {
		errs = append(errs, metav1validation.ValidateLabelSelector(pool.Spec.NamespaceSelector, opts, spec.Child("namespaceSelector"))...)
	}
	return errs
}

type namedRange struct {
	pool, text string
	r          AddressRange
}

// ValidateLoadBalancerIPPoolStatus checks what the controller writes.
func ValidateLoadBalancerIPPoolStatus(pool *svcplanev1.LoadBalancerIPPool) field.ErrorList {
	var errs field.ErrorList
	status := field.NewPath("status")
	for _, c := range []struct {
		name  string
		value int64
	}{{"assigned", pool.Status.Assigned}, {"available", pool.Status.Available}, {"observedGeneration", pool.Status.ObservedGeneration}} {
		if c.value < 0 {
			errs = append(errs, field.Invalid(status.Child(c.name), c.value, "must be greater than or equal to 0"))
		}
	}
	return errs
}
