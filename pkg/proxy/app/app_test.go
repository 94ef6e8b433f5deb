package app

import (
	"errors"
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

// fakeBackend records whether it was closed.
type fakeBackend struct{ closed bool }

func (*fakeBackend) Sync(*proxy.Snapshot, bool) error { return nil }
func (b *fakeBackend) Close() error                   { b.closed = true; return nil }

// Both modes start their backends through startStacks: an IPv6 backend that cannot start
// leaves IPv4 alone serving, unless an IPv6 range asked for IPv6; then nothing is left
// running (the userspace IPv4 Proxier already holds listeners and routes to give back).
func TestIPv6BackendFailureIsFatalOnlyWhenIPv6WasAskedFor(t *testing.T) {
	for _, tc := range []struct {
		name         string
		serviceCIDRs []netip.Prefix
		wantErr      bool
	}{
		{name: "IPv4 range only"},
		{name: "IPv6 range", serviceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:96::/112")}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v4 *fakeBackend
			start := func(f corev1.IPFamily, _ []netip.Addr) (Backend, error) {
				if f == corev1.IPv6Protocol {
					return nil, errors.New("IPv6 is disabled on lo")
				}
				v4 = &fakeBackend{}
				return v4, nil
			}
			c := Config{Mode: ModeUserspace, ServiceCIDRs: tc.serviceCIDRs}
			stacks, err := startStacks(c, start)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "fd00:96::/112") {
					t.Errorf("got %v, want an error naming the IPv6 range", err)
				}
				if v4 == nil || !v4.closed {
					t.Error("the IPv4 backend was left running")
				}
				return
			}
			if err != nil || len(stacks) != 1 || stacks[0].family != corev1.IPv4Protocol || v4.closed {
				t.Errorf("got %d stacks, %v; want the IPv4 one, running", len(stacks), err)
			}
		})
	}
}
