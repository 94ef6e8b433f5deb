package validation

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
)

func TestParseAddressRange(t *testing.T) {
	for _, tc := range []struct {
		in, first, last, err string
	}{
		{in: "10.251.0.0/24", first: "10.251.0.0", last: "10.251.0.255"},
		{in: "10.251.0.7/32", first: "10.251.0.7", last: "10.251.0.7"},
		{in: "fd00:251::/120", first: "fd00:251::", last: "fd00:251::ff"},
		{in: "10.251.0.10-10.251.0.20", first: "10.251.0.10", last: "10.251.0.20"},
		{in: "10.251.0.10 - 10.251.0.10", first: "10.251.0.10", last: "10.251.0.10"},
		{in: "fd00::1-fd00::1:0", first: "fd00::1", last: "fd00::1:0"},
		{in: "10.251.0.1/24", err: "did you mean 10.251.0.0/24?"},
		{in: "10.251.0.20-10.251.0.10", err: "must not be after"},
		{in: "10.251.0.1-fd00::1", err: "same IP family"},
		{in: "::ffff:10.0.0.1/128", err: "must be a CIDR"},
		{in: "10.251.0.0/33", err: "must be a CIDR"},
		{in: "pool", err: "must be a CIDR"},
		{in: "", err: "must be a CIDR"},
	} {
		r, err := ParseAddressRange(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseAddressRange(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || r.First.String() != tc.first || r.Last.String() != tc.last {
			t.Errorf("ParseAddressRange(%q) = %v-%v, %v; want %s-%s", tc.in, r.First, r.Last, err, tc.first, tc.last)
		}
	}
}

func TestAssignableKeepsNetworkAndBroadcastOfACIDR(t *testing.T) {
	for in, want := range map[string]string{
		"10.251.0.0/24":           "10.251.0.1-10.251.0.254",
		"10.251.0.0/31":           "10.251.0.0-10.251.0.1",
		"10.251.0.0-10.251.0.255": "10.251.0.0-10.251.0.255",
		"fd00::/120":              "fd00::1-fd00::ff",
	} {
		r, err := ParseAddressRange(in)
		if err != nil {
			t.Fatal(err)
		}
		first, last, ok := r.Assignable()
		if got := first.String() + "-" + last.String(); !ok || got != want {
			t.Errorf("%s assignable = %s (%v), want %s", in, got, ok, want)
		}
	}
}

func TestValidateLoadBalancerIPPool(t *testing.T) {
	pool := func(name string, addresses ...string) svcplanev1.LoadBalancerIPPool {
		return svcplanev1.LoadBalancerIPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: svcplanev1.LoadBalancerIPPoolSpec{Addresses: addresses}}
	}
	stored := []svcplanev1.LoadBalancerIPPool{pool("default", "10.251.0.0/24"), pool("v6", "fd00:251::/120")}
	for _, tc := range []struct {
		name string
		pool svcplanev1.LoadBalancerIPPool
		want []string // "field: message fragment"
	}{
		{name: "disjoint pools are fine", pool: pool("extra", "10.251.1.0/24", "fd00:252::1-fd00:252::9")},
		{name: "updating a pool does not overlap itself", pool: pool("default", "10.251.0.0/23")},
		{name: "no addresses", pool: pool("empty"), want: []string{"spec.addresses: Required value"}},
		{name: "overlap with another pool", pool: pool("x", "10.251.0.250-10.251.1.5"), want: []string{`spec.addresses[0]: Invalid value: "10.251.0.250-10.251.1.5": overlaps 10.251.0.0/24 of LoadBalancerIPPool "default"`}},
		{name: "overlap inside the pool", pool: pool("x", "fd00:1::/64", "fd00:1::5-fd00:1::6"), want: []string{"spec.addresses[1]: Invalid value: \"fd00:1::5-fd00:1::6\": overlaps spec.addresses[0] (fd00:1::/64)"}},
		{name: "bad entry", pool: pool("x", "10.9.0.0/16", "10.300.0.0/16"), want: []string{"spec.addresses[1]: Invalid value"}},
		{name: "bad selector", pool: func() svcplanev1.LoadBalancerIPPool {
			p := pool("x", "10.9.0.0/24")
			p.Spec.ServiceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"bad key!": "v"}}
			return p
		}(), want: []string{"spec.serviceSelector.matchLabels: Invalid value"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := ValidateLoadBalancerIPPool(&tc.pool, stored)
			if len(errs) != len(tc.want) {
				t.Fatalf("errors = %v, want %d", errs, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %d = %q, want it to contain %q", i, errs[i].Error(), w)
				}
			}
		})
	}
}
