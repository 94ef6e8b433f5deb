package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// parseNodeIPs reads --node-ip: one address, or one per IP family (kubelet's rule), the
// primary first. The primary is the Node's first InternalIP and the Pods' status.hostIP.
func parseNodeIPs(value string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range strings.Split(value, ",") {
		s = strings.TrimSpace(s)
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("%q is not an IP address", s)
		}
		// An unspecified address means "pick one" to kubelet; the agent wants it said.
		if ip.IsUnspecified() {
			return nil, fmt.Errorf("%s is not an address other nodes can reach", ip)
		}
		out = append(out, ip.Unmap())
	}
	if len(out) > 2 || (len(out) == 2 && out[0].Is4() == out[1].Is4()) {
		return nil, errors.New("give one address, or one per IP family")
	}
	return out, nil
}

// nodePortPrefixes selects the node IPs as the proxy's NodePort addresses: each family's
// NodePorts answer on that family's node IP only, upstream's "primary" default. A family
// without a node IP answers on every global address of that family (see app.Config).
func nodePortPrefixes(nodeIPs []netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(nodeIPs))
	for _, ip := range nodeIPs {
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out
}
