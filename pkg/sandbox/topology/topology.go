package topology

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Options says which topology to build.
type Options struct {
	// Name makes namespace names unique per run: svp-<Name>-<member>.
	Name string
	// Nodes is the number of node namespaces, node1…nodeN.
	Nodes int
	// DualStack adds the IPv6 plan (plan.go) to every member: addresses, pod bridges, routes,
	// and IPv6 forwarding in the nodes.
	DualStack bool
}

// Topology is a built cluster of namespaces, owned by this process until Close or Detach.
type Topology struct {
	name      string
	nodes     int
	dualStack bool
	lock      *os.File
}

// Create builds the topology described by opts. It fails if another live process owns a
// topology of the same name; leftovers of a dead owner are removed first. On error nothing is
// left behind.
func Create(opts Options) (*Topology, error) {
	if err := ValidateName(opts.Name); err != nil {
		return nil, err
	}
	if opts.Nodes < 1 || opts.Nodes > MaxNodes {
		return nil, fmt.Errorf("invalid node count %d: use 1 to %d", opts.Nodes, MaxNodes)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("creating network namespaces needs root: run as root (e.g. with sudo)")
	}
	lock, err := lockTopology(opts.Name)
	if errors.Is(err, errLocked) {
		return nil, fmt.Errorf("sandbox %q is in use by another process: pick another name or take it down first", opts.Name)
	}
	if err != nil {
		return nil, err
	}
	t := &Topology{name: opts.Name, nodes: opts.Nodes, dualStack: opts.DualStack, lock: lock}
	// We hold the lock, so any namespace of this name belongs to a dead owner.
	if err := removeNamespaces(opts.Name); err != nil {
		unlockTopology(t.name, lock)
		return nil, fmt.Errorf("removing leftovers of an earlier %q: %w", opts.Name, err)
	}
	if err := t.build(); err != nil {
		if cerr := t.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up after the failure: %w", cerr))
		}
		return nil, fmt.Errorf("building sandbox %q: %w", opts.Name, err)
	}
	return t, nil
}

// Name is the run name the topology was created with.
func (t *Topology) Name() string { return t.name }

// Nodes is the number of node namespaces.
func (t *Topology) Nodes() int { return t.nodes }

// Members lists every namespace's member name: net, cp, ext, node1…nodeN.
func (t *Topology) Members() []string { return members(t.nodes) }

// Namespace is the network namespace name of member (e.g. "node1" → "svp-<name>-node1").
func (t *Topology) Namespace(member string) string { return NamespaceName(t.name, member) }

// LockFile is the open lock file that keeps the topology alive. Hand it to background
// processes (exec.Cmd.ExtraFiles) that should keep owning the topology after this process exits.
func (t *Topology) LockFile() *os.File { return t.lock }

// Do runs fn on a thread inside member's namespace; see the package-level Do.
func (t *Topology) Do(member string, fn func() error) error { return Do(t.Namespace(member), fn) }

// Dial connects from inside member's namespace to an IP address.
func (t *Topology) Dial(ctx context.Context, member, network, address string) (net.Conn, error) {
	return Dial(ctx, t.Namespace(member), network, address)
}

// Listen opens a stream listener inside member's namespace.
func (t *Topology) Listen(member, network, address string) (net.Listener, error) {
	return Listen(t.Namespace(member), network, address)
}

// ListenPacket opens a packet socket inside member's namespace.
func (t *Topology) ListenPacket(member, network, address string) (net.PacketConn, error) {
	return ListenPacket(t.Namespace(member), network, address)
}

// Command returns a command that runs inside member's namespace.
func (t *Topology) Command(ctx context.Context, member, name string, args ...string) *exec.Cmd {
	return Command(ctx, t.Namespace(member), name, args...)
}

// RouteGet does a route lookup inside member's namespace without sending anything.
func (t *Topology) RouteGet(member string, dst netip.Addr) ([]netlink.Route, error) {
	return RouteGet(t.Namespace(member), dst)
}

// Close kills whatever still runs inside the namespaces, deletes them (and with them every
// interface, address and route the topology had) and releases the name.
func (t *Topology) Close() error {
	if t.lock == nil {
		return nil
	}
	err := removeNamespaces(t.name)
	unlockTopology(t.name, t.lock)
	t.lock = nil
	if err != nil {
		return fmt.Errorf("tearing down sandbox %q: %w", t.name, err)
	}
	return nil
}

// Detach closes this process's hold on the topology without removing it. The topology stays
// owned by any process that inherited LockFile, and becomes stale (see CleanupStale) once none
// does.
func (t *Topology) Detach() {
	if t.lock != nil {
		t.lock.Close()
		t.lock = nil
	}
}

func members(nodes int) []string {
	m := []string{MemberNetwork, MemberControlPlane, MemberExternal}
	for n := 1; n <= nodes; n++ {
		m = append(m, NodeMember(n))
	}
	return m
}

// build creates the namespaces, sets their sysctls, then wires every member to br0.
func (t *Topology) build() error {
	if err := ensureNetnsDir(); err != nil {
		return err
	}
	for _, m := range t.Members() {
		if err := createNamespace(t.Namespace(m)); err != nil {
			return err
		}
		// Before any interface exists, so that interfaces inherit the "default" values.
		sysctls := sysctlsFor(m)
		if t.dualStack {
			sysctls = append(sysctls, ipv6SysctlsFor(m)...)
		}
		if err := writeSysctls(t.Namespace(m), sysctls); err != nil {
			return err
		}
	}
	if err := t.buildNodeNetwork(); err != nil {
		return err
	}
	for _, m := range t.Members()[1:] {
		if err := t.configureMember(m); err != nil {
			return fmt.Errorf("configuring %s: %w", m, err)
		}
	}
	return nil
}

// sysctlsFor lists the sysctls of member's namespace. IPv4 settings of a new namespace are
// copied from the host's, so everything that matters is set explicitly for determinism.
func sysctlsFor(member string) []sysctl {
	forward := "0"
	if _, isNode := nodeNumber(member); isNode {
		forward = "1" // nodes route their pods' traffic
	}
	return []sysctl{
		{"net.ipv4.ip_forward", forward},
		// ext reaches the LoadBalancer pool through node1, which would answer unproxied
		// packets with an ICMP redirect to br0; a cached redirect would then bypass node1 for
		// minutes and make later tests flaky.
		{"net.ipv4.conf.all.send_redirects", "0"},
		{"net.ipv4.conf.default.send_redirects", "0"},
		{"net.ipv4.conf.all.accept_redirects", "0"},
		{"net.ipv4.conf.default.accept_redirects", "0"},
		// Pod and Service traffic is routed asymmetrically at times (DNAT, host-gateway routes).
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
	}
}

// ipv6SysctlsFor lists the IPv6 sysctls of member's namespace in a dual-stack topology. IPv6
// forwarding is on in node namespaces only, as IPv4's is; since forwarding turns a node into
// an IPv6 router, and redirects are ignored by routers anyway, only the others need
// accept_redirects off (the reason is IPv4's, above).
func ipv6SysctlsFor(member string) []sysctl {
	forward := "0"
	if _, isNode := nodeNumber(member); isNode {
		forward = "1"
	}
	return []sysctl{
		// A host booted with IPv6 disabled by default would hand that on.
		{"net.ipv6.conf.all.disable_ipv6", "0"},
		{"net.ipv6.conf.default.disable_ipv6", "0"},
		{"net.ipv6.conf.all.forwarding", forward},
		{"net.ipv6.conf.default.forwarding", forward},
		{"net.ipv6.conf.all.accept_redirects", "0"},
		{"net.ipv6.conf.default.accept_redirects", "0"},
		// Nothing sends router advertisements here; not listening for them keeps a stray one
		// (from a Pod) from adding a default route, which the sandbox must never have.
		{"net.ipv6.conf.all.accept_ra", "0"},
		{"net.ipv6.conf.default.accept_ra", "0"},
	}
}

// buildNodeNetwork creates br0 in the net namespace and one veth pair per member: the bridge
// end "v-<member>" stays on br0, the other end is created directly inside the member's
// namespace as eth0, so no interface ever exists in the host namespace, not even briefly.
func (t *Topology) buildNodeNetwork() error {
	h, err := Netlink(t.Namespace(MemberNetwork))
	if err != nil {
		return err
	}
	defer h.Close()
	if err := linkUp(h, "lo"); err != nil {
		return err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: NodeBridgeName, Flags: net.FlagUp}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("creating bridge %s: %w", NodeBridgeName, err)
	}
	if err := h.AddrAdd(br, addrOf(BridgeAddr, NodeNetwork.Bits())); err != nil {
		return fmt.Errorf("adding %s to %s: %w", BridgeAddr, NodeBridgeName, err)
	}
	if t.dualStack {
		if err := h.AddrAdd(br, addrOf(BridgeAddrV6, NodeNetworkV6.Bits())); err != nil {
			return fmt.Errorf("adding %s to %s: %w", BridgeAddrV6, NodeBridgeName, err)
		}
	}
	for _, m := range t.Members()[1:] {
		peer, err := openNamespace(t.Namespace(m))
		if err != nil {
			return err
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: "v-" + m, MasterIndex: br.Attrs().Index, Flags: net.FlagUp},
			PeerName:      UplinkName,
			PeerNamespace: netlink.NsFd(peer),
		}
		err = h.LinkAdd(veth)
		peer.Close()
		if err != nil {
			return fmt.Errorf("creating veth pair for %s: %w", m, err)
		}
	}
	return nil
}

// configureMember sets up eth0 (and a node's pod bridge) and the member's routes.
func (t *Topology) configureMember(member string) error {
	h, err := Netlink(t.Namespace(member))
	if err != nil {
		return err
	}
	defer h.Close()
	if err := linkUp(h, "lo"); err != nil {
		return err
	}
	eth, err := h.LinkByName(UplinkName)
	if err != nil {
		return fmt.Errorf("finding %s: %w", UplinkName, err)
	}
	addr := memberAddr(member)
	if err := h.AddrAdd(eth, addrOf(addr, NodeNetwork.Bits())); err != nil {
		return fmt.Errorf("adding %s to %s: %w", addr, UplinkName, err)
	}
	if t.dualStack {
		addr6 := memberAddrV6(member)
		if err := h.AddrAdd(eth, addrOf(addr6, NodeNetworkV6.Bits())); err != nil {
			return fmt.Errorf("adding %s to %s: %w", addr6, UplinkName, err)
		}
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bringing up %s: %w", UplinkName, err)
	}
	if n, isNode := nodeNumber(member); isNode {
		cbr := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: PodBridgeName, Flags: net.FlagUp}}
		if err := h.LinkAdd(cbr); err != nil {
			return fmt.Errorf("creating pod bridge %s: %w", PodBridgeName, err)
		}
		if err := h.AddrAdd(cbr, addrOf(PodGateway(n), PodCIDR(n).Bits())); err != nil {
			return fmt.Errorf("adding %s to %s: %w", PodGateway(n), PodBridgeName, err)
		}
		if t.dualStack {
			if err := h.AddrAdd(cbr, addrOf(PodGatewayV6(n), PodCIDRV6(n).Bits())); err != nil {
				return fmt.Errorf("adding %s to %s: %w", PodGatewayV6(n), PodBridgeName, err)
			}
		}
	}
	for _, r := range t.routesFor(member) {
		route := &netlink.Route{
			LinkIndex: eth.Attrs().Index,
			Dst:       prefixOf(r.dst),
			Gw:        r.via.AsSlice(),
		}
		if !r.via.IsValid() {
			route.Scope = netlink.SCOPE_LINK
		}
		if err := h.RouteAdd(route); err != nil {
			return fmt.Errorf("adding route %s: %w", r, err)
		}
	}
	return nil
}

// staticRoute sends dst via a gateway on eth0, or, with no via, straight out of eth0
// (on-link: the member ARPs for every address of dst itself).
type staticRoute struct {
	dst netip.Prefix
	via netip.Addr
}

func (r staticRoute) String() string {
	if !r.via.IsValid() {
		return r.dst.String() + " dev " + UplinkName
	}
	return r.dst.String() + " via " + r.via.String()
}

// routesFor lists member's routes besides the connected ones. Nothing gets a default route:
// an address outside the plan has no route anywhere in the sandbox, so no packet can head for
// the outside world.
func (t *Topology) routesFor(member string) []staticRoute {
	var routes []staticRoute
	podRoutes := func(except int) {
		for m := 1; m <= t.nodes; m++ {
			if m != except {
				routes = append(routes, staticRoute{PodCIDR(m), NodeAddr(m)})
				if t.dualStack {
					routes = append(routes, staticRoute{PodCIDRV6(m), NodeAddrV6(m)})
				}
			}
		}
	}
	switch n, isNode := nodeNumber(member); {
	case isNode:
		// Host-gateway pod networking, plus routes that make Service and LoadBalancer
		// addresses routable so locally generated packets reach the proxy's output hook
		// (without a route, connect fails before any DNAT). Unproxied packets end at br0,
		// which does not forward.
		podRoutes(n)
		routes = append(routes,
			staticRoute{ServiceCIDR, BridgeAddr},
			staticRoute{LoadBalancerPool, BridgeAddr})
		if t.dualStack {
			routes = append(routes,
				staticRoute{ServiceCIDRV6, BridgeAddrV6},
				staticRoute{LoadBalancerPoolV6, BridgeAddrV6})
		}
	case member == MemberControlPlane:
		// So the API server and DNS can answer pods directly.
		podRoutes(0)
	case member == MemberExternal:
		// The pool is on-link, as on a LAN whose addresses MetalLB-style L2 announcement
		// serves: ext ARPs for each LoadBalancer address and the node announcing it answers
		// (pkg/agent/announce). No node is special.
		routes = append(routes, staticRoute{dst: LoadBalancerPool})
		if t.dualStack {
			routes = append(routes, staticRoute{dst: LoadBalancerPoolV6})
		}
	}
	return routes
}

func memberAddr(member string) netip.Addr {
	switch member {
	case MemberControlPlane:
		return ControlPlaneAddr
	case MemberExternal:
		return ExternalAddr
	}
	n, _ := nodeNumber(member)
	return NodeAddr(n)
}

// memberAddrV6 is member's IPv6 address on the node network of a dual-stack topology.
func memberAddrV6(member string) netip.Addr {
	switch member {
	case MemberControlPlane:
		return ControlPlaneAddrV6
	case MemberExternal:
		return ExternalAddrV6
	}
	n, _ := nodeNumber(member)
	return NodeAddrV6(n)
}

// MemberAddr is member's address on the node network (cp, ext or nodeN).
func MemberAddr(member string) (netip.Addr, error) {
	if member == MemberNetwork {
		return BridgeAddr, nil
	}
	if !validMember(member) {
		return netip.Addr{}, fmt.Errorf("unknown sandbox member %q: use cp, ext, net or node1…node%d", member, MaxNodes)
	}
	return memberAddr(member), nil
}

func linkUp(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("finding %s: %w", name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing up %s: %w", name, err)
	}
	return nil
}

// addrOf is ip/bits as an interface address. IPv6 ones skip duplicate address detection:
// the plan makes them unique, and a tentative address would fail the first connections.
func addrOf(ip netip.Addr, bits int) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, ip.BitLen())}}
	if ip.Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func prefixOf(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

type sysctl struct{ key, value string }

// writeSysctls sets sysctls inside namespace ns. /proc/sys/net resolves against the network
// namespace of the thread that opens the file, so this only ever touches ns.
func writeSysctls(ns string, sysctls []sysctl) error {
	return Do(ns, func() error {
		for _, s := range sysctls {
			path := "/proc/sys/" + strings.ReplaceAll(s.key, ".", "/")
			if err := os.WriteFile(path, []byte(s.value), 0o644); err != nil {
				return fmt.Errorf("setting %s=%s in %s: %w", s.key, s.value, ns, err)
			}
		}
		return nil
	})
}

// removeNamespaces deletes every namespace of topology name, after killing what runs inside.
func removeNamespaces(name string) error {
	all, err := listNamespaces()
	if err != nil {
		return err
	}
	var ours []string
	for _, ns := range all {
		if n, _, ok := splitNamespaceName(ns); ok && n == name {
			ours = append(ours, ns)
		}
	}
	if len(ours) == 0 {
		return nil
	}
	errs := []error{killProcessesIn(ours)}
	for _, ns := range ours {
		errs = append(errs, deleteNamespace(ns))
	}
	return errors.Join(errs...)
}
