package egress

// Addresses used here, inside a namespace the test creates (test/netns): node1's pod CIDRs
// 10.244.1.0/24 and fd00:244:0:1::/64 in the cluster CIDRs 10.244.0.0/16 and fd00:244::/56.

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/svcplane/svcplane/test/netns"
)

func TestTablesAreWrittenPerFamilyReplacedAndRemoved(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed (Debian package nftables): it reads the tables back")
	}
	c := netns.New(t, netns.Config{Nodes: 1, DualStack: true})
	node := netns.Node(1)
	ensure := func(cfg Config) {
		t.Helper()
		if err := c.Do(node, func() error { return Ensure(cfg) }); err != nil {
			t.Fatal(err)
		}
	}
	list := func(family string) string {
		out, _ := c.Command(t.Context(), node, "nft", "list", "table", family, TableName).CombinedOutput()
		return string(out)
	}
	p := netip.MustParsePrefix
	dual := Config{PodCIDRs: []netip.Prefix{p("10.244.1.0/24"), p("fd00:244:0:1::/64")},
		ClusterCIDRs: []netip.Prefix{p("10.244.0.0/16"), p("fd00:244::/56")}, Bridge: "cbr0"}
	ensure(dual)
	ensure(dual) // a restarted agent: the same, once
	for family, want := range map[string]string{
		"ip":  `ip saddr 10.244.1.0/24 ip daddr != 10.244.0.0/16 oifname != "cbr0" masquerade`,
		"ip6": `ip6 saddr fd00:244:0:1::/64 ip6 daddr != fd00:244::/56 oifname != "cbr0" masquerade`,
	} {
		got := list(family)
		if strings.Count(got, want) != 1 || strings.Count(got, "masquerade") != 1 || !strings.Contains(got, "hook postrouting priority srcnat") {
			t.Errorf("nft list table %s %s:\n%s\nwant one rule: %s", family, TableName, got, want)
		}
	}

	// IPv4 only now: the IPv6 table goes. So it does with an IPv6 pod CIDR but no IPv6
	// cluster CIDR, which would leave other nodes' Pods unrecognised.
	for _, cfg := range []Config{
		{PodCIDRs: dual.PodCIDRs[:1], ClusterCIDRs: dual.ClusterCIDRs, Bridge: "cbr0"},
		{PodCIDRs: dual.PodCIDRs, ClusterCIDRs: dual.ClusterCIDRs[:1], Bridge: "cbr0"},
	} {
		ensure(dual)
		ensure(cfg)
		if got := list("ip6"); !strings.Contains(got, "No such file or directory") {
			t.Errorf("with pod CIDRs %v and cluster CIDRs %v, the ip6 table is there:\n%s", cfg.PodCIDRs, cfg.ClusterCIDRs, got)
		}
		if got := list("ip"); !strings.Contains(got, "masquerade") {
			t.Errorf("with pod CIDRs %v and cluster CIDRs %v, the ip table is gone:\n%s", cfg.PodCIDRs, cfg.ClusterCIDRs, got)
		}
	}
	ensure(Config{Disabled: true})
	if got := list("ip"); !strings.Contains(got, "No such file or directory") {
		t.Errorf("disabled, the ip table is still there:\n%s", got)
	}
}
