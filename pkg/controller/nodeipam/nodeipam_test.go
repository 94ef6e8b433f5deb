package nodeipam

import (
	"net/netip"
	"testing"
)

func TestNextFreeSkipsUsedAndSubnetZero(t *testing.T) {
	cluster := netip.MustParsePrefix("10.244.0.0/16")
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	cases := []struct {
		used []netip.Prefix
		want string
	}{
		{nil, "10.244.1.0/24"},
		{[]netip.Prefix{p("10.244.1.0/24"), p("10.244.2.0/24")}, "10.244.3.0/24"},
		{[]netip.Prefix{p("10.244.2.0/24")}, "10.244.1.0/24"},
		{[]netip.Prefix{p("10.244.0.0/23")}, "10.244.2.0/24"},
	}
	for _, tc := range cases {
		got, ok := NextFree(cluster, 24, tc.used)
		if !ok || got.String() != tc.want {
			t.Errorf("NextFree(used %v) = %v, %v; want %s", tc.used, got, ok, tc.want)
		}
	}
	if _, ok := NextFree(p("10.244.0.0/23"), 24, []netip.Prefix{p("10.244.0.0/23")}); ok {
		t.Error("a full cluster CIDR gave a subnet")
	}
}
