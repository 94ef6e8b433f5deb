package sandbox

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// IPFamily is what the sandbox's cluster runs on: the values of `sandbox up --ip-family`.
type IPFamily string

const (
	// FamilyIPv4 is the default ("" means it too): the IPv4 plan only.
	FamilyIPv4 IPFamily = "ipv4"
	// FamilyDual adds the topology's IPv6 plan and gives the server and agents IPv6 ranges
	// beside the IPv4 ones, IPv4 first, so IPv4 stays the primary family: Pods get an address
	// of each family, Services may ask for both.
	FamilyDual IPFamily = "dual"
	// FamilyIPv6 is an IPv6-only cluster: Nodes, Pods, Services, the kubernetes and kube-dns
	// Services and LoadBalancer addresses are all IPv6. The namespaces keep their IPv4
	// addresses as plumbing only: the host's loopback forwarder reaches the API server over
	// them, as a dual-stack host may run a single-stack IPv6 cluster.
	FamilyIPv6 IPFamily = "ipv6"
)

// Valid reports whether f is one of the values above.
func (f IPFamily) Valid() bool {
	return f == "" || f == FamilyIPv4 || f == FamilyDual || f == FamilyIPv6
}

func (f IPFamily) hasIPv4() bool { return f != FamilyIPv6 }
func (f IPFamily) hasIPv6() bool { return f == FamilyDual || f == FamilyIPv6 }

// join lists, in the cluster's family order, the IPv4 value if the cluster has IPv4 and the
// IPv6 one if it has IPv6: the form of every per-family flag.
func (f IPFamily) join(v4, v6 string) string {
	var out []string
	if f.hasIPv4() {
		out = append(out, v4)
	}
	if f.hasIPv6() {
		out = append(out, v6)
	}
	return strings.Join(out, ",")
}

// apiServerAddr is where agents reach the API server, in the primary family.
func (f IPFamily) apiServerAddr() netip.Addr {
	if f.hasIPv4() {
		return topology.ControlPlaneAddr
	}
	return topology.ControlPlaneAddrV6
}

func (f IPFamily) apiServerURL() string {
	return "https://" + netip.AddrPortFrom(f.apiServerAddr(), topology.APIServerPort).String()
}

func (f IPFamily) clusterDNS() netip.Addr {
	if f.hasIPv4() {
		return topology.ClusterDNSAddr
	}
	return topology.ClusterDNSAddrV6
}

// nodeIPs is node n's --node-ip.
func (f IPFamily) nodeIPs(n int) string {
	return f.join(topology.NodeAddr(n).String(), topology.NodeAddrV6(n).String())
}

// podCIDRs is node n's --pod-cidr.
func (f IPFamily) podCIDRs(n int) string {
	return f.join(topology.PodCIDR(n).String(), topology.PodCIDRV6(n).String())
}

// rangeArgs are the server's and agents' --cluster-cidr and --service-cluster-ip-range; none
// in an IPv4 sandbox, whose ranges are the defaults.
func (f IPFamily) rangeArgs() []string {
	if !f.hasIPv6() {
		return nil
	}
	return []string{
		"--cluster-cidr", f.join(topology.ClusterCIDR.String(), topology.ClusterCIDRV6.String()),
		"--service-cluster-ip-range", f.join(topology.ServiceCIDR.String(), topology.ServiceCIDRV6.String()),
	}
}

// serverArgs are the family-dependent flags of `svcplane server` in the control-plane
// namespace. An IPv6-only server listens on both families (the forwarder comes in over
// IPv4) and advertises its IPv6 address, which the kubernetes Service's endpoints must be.
func (f IPFamily) serverArgs() []string {
	bind := topology.ControlPlaneAddr.String()
	if !f.hasIPv4() {
		bind = "::"
	}
	args := []string{
		"--bind-address", bind,
		"--secure-port", strconv.Itoa(topology.APIServerPort),
		"--advertise-address", f.apiServerAddr().String(),
	}
	// LoadBalancer Services get their addresses from the pools the topology routes to ext.
	if f.hasIPv4() {
		args = append(args, "--lb-pool", topology.LoadBalancerPool.String())
	}
	if f.hasIPv6() {
		args = append(args, "--lb-pool", topology.LoadBalancerPoolV6.String())
	}
	return append(args, f.rangeArgs()...)
}
