package app

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcplane/svcplane/pkg/proxy"
)

func TestClusterCIDRFlagTakesOneRangePerFamily(t *testing.T) {
	for _, tc := range []struct {
		flag    string
		want    []netip.Prefix
		invalid string // what Validate or ParseCIDRList complains about
	}{
		{flag: "10.244.0.0/16", want: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}},
		{flag: "10.244.0.0/16, fd00:244::1/56", want: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/56")}},
		{flag: ""},
		{flag: "10.244.0.0/16,10.245.0.0/16", invalid: "at most one per family"},
		{flag: "10.244.0.0", invalid: "is not a CIDR"},
	} {
		cidrs, err := ParseCIDRList("--cluster-cidr", tc.flag)
		if err == nil {
			c := Config{Mode: ModeNFTables, NodeName: "n", SyncPeriod: 1, ClusterCIDRs: cidrs}
			err = c.Validate()
		}
		switch {
		case tc.invalid != "" && (err == nil || !strings.Contains(err.Error(), tc.invalid)):
			t.Errorf("%q: want an error about %q, got %v", tc.flag, tc.invalid, err)
		case tc.invalid == "" && err != nil:
			t.Errorf("%q: %v", tc.flag, err)
		case tc.invalid == "" && !slices.Equal(cidrs, tc.want):
			t.Errorf("%q: got %v, want %v", tc.flag, cidrs, tc.want)
		}
	}
}

// The one healthCheckNodePort server of a dual-stack node reports, per Service, the family
// with more local endpoints (a dual-stack Pod counts once), and IPv6-only Services too.
func TestHealthSnapshotComparesFamilies(t *testing.T) {
	port := func(name string, hc int32) (proxy.ServicePortName, *proxy.ServicePort) {
		n := proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "default", Name: name}, Port: "http", Protocol: corev1.ProtocolTCP}
		return n, &proxy.ServicePort{Name: n, ExternalPolicyLocal: true, HealthCheckNodePort: hc, NodePort: 30000 + hc, Protocol: corev1.ProtocolTCP}
	}
	local := func(ip string) *proxy.Endpoint {
		return &proxy.Endpoint{IP: netip.MustParseAddr(ip), Port: 80, Ready: true, Serving: true, IsLocal: true}
	}
	dualName, dualV4 := port("dual", 1)
	_, dualV6 := port("dual", 1)
	v6Name, v6Only := port("v6only", 2)
	v4 := &proxy.Snapshot{Services: proxy.ServicePortMap{dualName: dualV4},
		Endpoints: proxy.EndpointsMap{dualName: {local("10.244.1.5")}}}
	v6 := &proxy.Snapshot{Services: proxy.ServicePortMap{dualName: dualV6, v6Name: v6Only},
		Endpoints: proxy.EndpointsMap{dualName: {local("fd00:244::5"), local("fd00:244::6")}, v6Name: {local("fd00:244::7")}}}

	got := healthSnapshot([]*proxy.Snapshot{v4, v6})
	for name, want := range map[proxy.ServicePortName]int{dualName: 2, v6Name: 1} {
		sp := got.Services[name]
		if sp == nil {
			t.Errorf("%s missing from the health snapshot", name)
			continue
		}
		if _, _, n := proxy.UsableEndpoints(sp, got.Endpoints[name]); n != want {
			t.Errorf("%s: %d local endpoints, want %d", name, n, want)
		}
	}
}
