package userspace

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// routeProtocol marks the routes this proxy installs (the rtm_protocol field), so it can find
// and remove its own after a restart without touching anyone else's.
const routeProtocol = netlink.RouteProtocol(0x5c)

// localRoutes makes Service IPs local to this node's network namespace with "local" routes
// in the local table (what `ip route add local 10.96.0.0/12 dev lo table local` does):
//
//   - one route per Service CIDR covers every ClusterIP, so 10,000 Services cost the kernel
//     one route instead of 10,000 addresses;
//   - unlike addresses on lo (or on a dummy link, which this machine's kernel lacks), a
//     local route is never picked as a source address for outgoing traffic;
//   - an address of the range without a listener answers with a TCP reset or an ICMP port
//     unreachable, so a Service without endpoints fails fast.
//
// External and LoadBalancer IPs outside the CIDRs each get a host route. IPv6 works the same
// way (`local fd00:96::/112 dev lo table local`: every address of the range is delivered
// locally, and one without a listener is refused); it needs IPv6 on lo, which newLocalRoutes
// checks. Each family's Proxier has its own localRoutes, which handles only routes of its
// family.
type localRoutes struct {
	lo        int
	cidrs     []netip.Prefix
	installed map[netip.Prefix]bool
}

func newLocalRoutes(family corev1.IPFamily, cidrs []netip.Prefix) (*localRoutes, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("finding the loopback link for Service IP routes: %w", err)
	}
	nlFamily := netlink.FAMILY_V4
	if family == corev1.IPv6Protocol {
		nlFamily = netlink.FAMILY_V6
		// Without IPv6 on lo the kernel refuses IPv6 routes through it ("IPv6 is disabled on
		// nexthop device"), which would fail every sync; checked at start, the proxy can
		// name the cause and the caller decide whether IPv6 was required.
		if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/lo/disable_ipv6"); err == nil && strings.TrimSpace(string(b)) == "1" {
			return nil, errors.New("IPv6 is disabled on lo (net.ipv6.conf.lo.disable_ipv6=1), so IPv6 Service IPs cannot be made local")
		}
	}
	r := &localRoutes{lo: lo.Attrs().Index, cidrs: cidrs, installed: map[netip.Prefix]bool{}}
	// Adopt the routes of this family a previous run left, so the first ensure removes the
	// stale ones. Only this family's: the other family's Proxier owns the rest, and adopting
	// them would remove its routes at the first sync.
	routes, err := netlink.RouteListFiltered(nlFamily, &netlink.Route{Table: unix.RT_TABLE_LOCAL, Protocol: routeProtocol},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("listing local routes: %w", err)
	}
	for _, rt := range routes {
		if p, ok := prefixOf(rt.Dst); ok {
			r.installed[p] = true
		}
	}
	return r, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

// ensure installs routes for the CIDRs and for ips outside them, and removes the others it
// installed.
func (r *localRoutes) ensure(ips []netip.Addr) error {
	want := map[netip.Prefix]bool{}
	for _, c := range r.cidrs {
		want[c.Masked()] = true
	}
	return r.apply(want, ips)
}

// removeAll removes every route this proxy installed, when it stops.
func (r *localRoutes) removeAll() error { return r.apply(map[netip.Prefix]bool{}, nil) }

func (r *localRoutes) apply(want map[netip.Prefix]bool, ips []netip.Addr) error {
next:
	for _, ip := range ips {
		for _, c := range r.cidrs {
			if c.Contains(ip) {
				continue next
			}
		}
		want[netip.PrefixFrom(ip, ip.BitLen())] = true
	}
	var errs []error
	for p := range want {
		if r.installed[p] {
			continue
		}
		if err := netlink.RouteReplace(r.route(p)); err != nil {
			errs = append(errs, fmt.Errorf("adding local route %s: %w", p, err))
			continue
		}
		r.installed[p] = true
	}
	for p := range r.installed {
		if want[p] {
			continue
		}
		if err := netlink.RouteDel(r.route(p)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("removing local route %s: %w", p, err))
			continue
		}
		delete(r.installed, p)
	}
	return errors.Join(errs...)
}

func (r *localRoutes) route(p netip.Prefix) *netlink.Route {
	return &netlink.Route{
		LinkIndex: r.lo,
		Dst:       &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Type:      unix.RTN_LOCAL,
		Table:     unix.RT_TABLE_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Protocol:  routeProtocol,
	}
}
