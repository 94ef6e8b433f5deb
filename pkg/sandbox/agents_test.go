package sandbox

import (
	"strings"
	"testing"
)

func TestAgentArgsOfAnIPv4SandboxAreUnchangedAndDualStackAddsIPv6AddressesAndRanges(t *testing.T) {
	v4 := strings.Join(agentArgs("/s", 2, "T", "svp-x-node2", "", false), " ")
	want := "agent --server https://10.250.0.2:6443 --certificate-authority /s/data/pki/ca.crt --token T" +
		" --node-name node2 --netns svp-x-node2 --node-ip 10.250.0.12 --pod-cidr 10.244.2.0/24" +
		" --pod-bridge cbr0 --cluster-dns 10.96.0.10 --data-dir /s/agent-node2"
	if v4 != want {
		t.Errorf("IPv4 agent args:\n%s\nwant:\n%s", v4, want)
	}
	dual := strings.Join(agentArgs("/s", 2, "T", "svp-x-node2", "userspace", true), " ")
	for _, w := range []string{
		"--node-ip 10.250.0.12,fd00:250::c ",
		"--pod-cidr 10.244.2.0/24,fd00:244:0:2::/64 ",
		"--proxy-mode userspace",
		"--cluster-cidr 10.244.0.0/16,fd00:244::/56",
		"--service-cluster-ip-range 10.96.0.0/12,fd00:96::/112",
	} {
		if !strings.Contains(dual, w) {
			t.Errorf("dual-stack agent args lack %q:\n%s", w, dual)
		}
	}
}
