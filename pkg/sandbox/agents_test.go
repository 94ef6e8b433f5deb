package sandbox

import (
	"strings"
	"testing"
)

func TestAgentArgsOfAnIPv4SandboxAreUnchanged(t *testing.T) {
	for _, family := range []IPFamily{"", FamilyIPv4} {
		got := strings.Join(agentArgs("/s", 2, "T", "svp-x-node2", "", family), " ")
		want := "agent --server https://10.250.0.2:6443 --certificate-authority /s/data/pki/ca.crt --token T" +
			" --node-name node2 --netns svp-x-node2 --node-ip 10.250.0.12 --pod-cidr 10.244.2.0/24" +
			" --pod-bridge cbr0 --cluster-dns 10.96.0.10 --data-dir /s/agent-node2"
		if got != want {
			t.Errorf("IPv4 (%q) agent args:\n%s\nwant:\n%s", family, got, want)
		}
	}
}

func TestAgentArgsOfDualStackAndIPv6Sandboxes(t *testing.T) {
	for family, want := range map[IPFamily][]string{
		FamilyDual: {
			"--server https://10.250.0.2:6443 ",
			"--node-ip 10.250.0.12,fd00:250::c ",
			"--pod-cidr 10.244.2.0/24,fd00:244:0:2::/64 ",
			"--cluster-dns 10.96.0.10 ",
			"--proxy-mode userspace",
			"--cluster-cidr 10.244.0.0/16,fd00:244::/56",
			"--service-cluster-ip-range 10.96.0.0/12,fd00:96::/112",
		},
		FamilyIPv6: {
			"--server https://[fd00:250::2]:6443 ",
			"--node-ip fd00:250::c ",
			"--pod-cidr fd00:244:0:2::/64 ",
			"--cluster-dns fd00:96::a ",
			"--proxy-mode userspace",
			"--cluster-cidr fd00:244::/56",
			"--service-cluster-ip-range fd00:96::/112",
		},
	} {
		got := strings.Join(agentArgs("/s", 2, "T", "svp-x-node2", "userspace", family), " ") + " "
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s agent args lack %q:\n%s", family, w, got)
			}
		}
		if family == FamilyIPv6 && strings.Contains(got, "10.") {
			t.Errorf("IPv6-only agent args name an IPv4 address:\n%s", got)
		}
	}
}

func TestServerArgsFollowTheFamilies(t *testing.T) {
	for family, want := range map[IPFamily]string{
		FamilyIPv4: "--bind-address 10.250.0.2 --secure-port 6443 --advertise-address 10.250.0.2 --lb-pool 10.251.0.0/24",
		FamilyDual: "--bind-address 10.250.0.2 --secure-port 6443 --advertise-address 10.250.0.2 --lb-pool 10.251.0.0/24 --lb-pool fd00:251::/120" +
			" --cluster-cidr 10.244.0.0/16,fd00:244::/56 --service-cluster-ip-range 10.96.0.0/12,fd00:96::/112",
		FamilyIPv6: "--bind-address :: --secure-port 6443 --advertise-address fd00:250::2 --lb-pool fd00:251::/120" +
			" --cluster-cidr fd00:244::/56 --service-cluster-ip-range fd00:96::/112",
	} {
		if got := strings.Join(family.serverArgs(), " "); got != want {
			t.Errorf("%s server args:\n%s\nwant:\n%s", family, got, want)
		}
	}
}
