// Package netns wires a Pod's network namespace to its node: a veth pair from the node's pod
// bridge to eth0 in the Pod, an address from each of the node's pod CIDRs (one, or one per IP
// family), and a default route of each family via the bridge. Addresses are allocated from
// files under a state directory (one file per address, holding its owner), so an agent restart
// never hands out an address a running Pod still uses.
//
// The Pod's namespace itself is held by a process (see package runtime); this package only
// opens it by path. Every change happens in the node's namespace (the bridge and the host end
// of the veth) or in the Pod's; the bridge is created there if it does not exist yet.
package netns

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PodInterface is the Pod's end of the veth.
const PodInterface = "eth0"

// Config describes the node side.
type Config struct {
	// NodeNS is the node's network namespace (a path); empty means the agent's own.
	NodeNS string
	// Bridge is the pod bridge in the node namespace; its address in each pod CIDR is the
	// Pods' gateway of that family.
	Bridge string
	// PodCIDRs are the Node's spec.podCIDRs: at most one per IP family, the primary first.
	// Every Pod gets an address from each, in this order.
	PodCIDRs []netip.Prefix
	// StateDir keeps the address allocations: IPv4 ones in it, IPv6 ones in its ipv6/.
	StateDir string
}

// pool hands out one family's Pod addresses.
type pool struct {
	cidr    netip.Prefix
	gateway netip.Addr
	dir     string // one file per allocated address, and "last"
}

// Network attaches Pods to one node's bridge.
type Network struct {
	cfg   Config
	pools []*pool    // in PodCIDRs order
	mu    sync.Mutex // serialises allocation
}

// New checks the node side: the bridge and its address in each pod CIDR, the Pods' gateway.
// A missing bridge is created (and brought up), as the bridge CNI plugin does, with each
// CIDR's first address. An existing bridge must already have an address in the IPv4 pod CIDR:
// that one was chosen by whoever made the bridge, and a second one would change it under the
// Pods. For an IPv6 pod CIDR, which node IPAM may assign long after the bridge was made, New
// gives the bridge the CIDR's first address itself if it has none in it.
func New(cfg Config) (*Network, error) {
	if len(cfg.PodCIDRs) == 0 || len(cfg.PodCIDRs) > 2 || (len(cfg.PodCIDRs) == 2 && cfg.PodCIDRs[0].Addr().Is4() == cfg.PodCIDRs[1].Addr().Is4()) {
		return nil, fmt.Errorf("pod CIDRs %v: want one, or one per IP family", cfg.PodCIDRs)
	}
	h, err := handleAt(cfg.NodeNS)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	br, err := h.LinkByName(cfg.Bridge)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		br, err = createBridge(h, cfg.Bridge, cfg.PodCIDRs)
	}
	if err != nil {
		return nil, fmt.Errorf("pod bridge %s in the node's network namespace: %w", cfg.Bridge, err)
	}
	n := &Network{cfg: cfg}
	for _, cidr := range cfg.PodCIDRs {
		p := &pool{cidr: cidr.Masked(), dir: cfg.StateDir}
		if cidr.Addr().Is6() {
			p.dir = filepath.Join(cfg.StateDir, "ipv6")
		}
		if err := os.MkdirAll(p.dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", p.dir, err)
		}
		if p.gateway, err = bridgeGateway(h, br, p.cidr); err != nil {
			return nil, err
		}
		n.pools = append(n.pools, p)
	}
	return n, nil
}

// createBridge makes the pod bridge with the first address of each pod CIDR and brings it up.
// The IPv6 gateway is added without duplicate address detection, as in bridgeGateway.
func createBridge(h *netlink.Handle, name string, cidrs []netip.Prefix) (netlink.Link, error) {
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		return nil, fmt.Errorf("creating it: %w", err)
	}
	br, err := h.LinkByName(name)
	if err != nil {
		return nil, err
	}
	for _, cidr := range cidrs {
		cidr = cidr.Masked()
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: cidr.Addr().Next().AsSlice(), Mask: net.CIDRMask(cidr.Bits(), cidr.Addr().BitLen())}}
		if cidr.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(br, addr); err != nil {
			return nil, fmt.Errorf("adding %s to it: %w", addr.IPNet, err)
		}
	}
	if err := h.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("bringing it up: %w", err)
	}
	return br, nil
}

// bridgeGateway finds the bridge's address in cidr; an IPv6 CIDR without one gets its first
// address, without duplicate address detection (nothing else on the bridge may own it, and a
// tentative address would leave the first Pods without a gateway for a second or two).
func bridgeGateway(h *netlink.Handle, br netlink.Link, cidr netip.Prefix) (netip.Addr, error) {
	family := netlink.FAMILY_V4
	if cidr.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	name := br.Attrs().Name
	addrs, err := h.AddrList(br, family)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("listing addresses of %s: %w", name, err)
	}
	var gateway netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && cidr.Contains(ip.Unmap()) {
			gateway = ip.Unmap()
		}
	}
	if gateway.IsValid() {
		return gateway, nil
	}
	if cidr.Addr().Is4() {
		return netip.Addr{}, fmt.Errorf("pod bridge %s has no address in the pod CIDR %s", name, cidr)
	}
	gateway = cidr.Addr().Next()
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: gateway.AsSlice(), Mask: net.CIDRMask(cidr.Bits(), 128)}, Flags: unix.IFA_F_NODAD}
	if err := h.AddrAdd(br, addr); err != nil {
		return netip.Addr{}, fmt.Errorf("adding the IPv6 gateway %s/%d to pod bridge %s (is IPv6 disabled in the node's namespace?): %w", gateway, cidr.Bits(), name, err)
	}
	return gateway, nil
}

// Gateway is the bridge's address in the primary pod CIDR, every Pod's default route of
// that family.
func (n *Network) Gateway() netip.Addr { return n.pools[0].gateway }

// Gateways are the bridge's addresses, one per pod CIDR in PodCIDRs order.
func (n *Network) Gateways() []netip.Addr {
	var out []netip.Addr
	for _, p := range n.pools {
		out = append(out, p.gateway)
	}
	return out
}

func handleAt(path string) (*netlink.Handle, error) {
	if path == "" {
		return netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink in %s: %w", path, err)
	}
	return h, nil
}

// Allocate returns owner's addresses, one per pod CIDR in PodCIDRs order (the primary
// first), allocating the next free one of each family it has none of. If one family is full
// the others are released again, so a Pod never runs with some of its families missing.
func (n *Network) Allocate(owner string) ([]netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ips []netip.Addr
	for _, p := range n.pools {
		ip, err := p.allocate(owner)
		if err != nil {
			for _, q := range n.pools {
				q.release(owner)
			}
			return nil, err
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

// allocate returns owner's address of this pool, allocating the next free one if it has
// none. The scan starts after the last address handed out, so a freed address is not reused
// at once (a client may still hold a connection or a cache entry for it). An IPv6 /64 is
// never scanned in full: 2^16 candidates are far more than a node's Pods.
func (p *pool) allocate(owner string) (netip.Addr, error) {
	if ip, ok := p.lookup(owner); ok {
		return ip, nil
	}
	first := p.cidr.Addr().Next()
	last := lastAddr(p.cidr)
	start := first
	if b, err := os.ReadFile(filepath.Join(p.dir, "last")); err == nil {
		if ip, err := netip.ParseAddr(strings.TrimSpace(string(b))); err == nil && p.cidr.Contains(ip) {
			start = ip.Next()
		}
	}
	ip := start
	var candidates int
	if p.cidr.Addr().Is4() {
		candidates = 1 << (32 - p.cidr.Bits())
	} else {
		candidates = 1 << min(128-p.cidr.Bits(), 16)
	}
	for range candidates {
		if ip == last || !p.cidr.Contains(ip) {
			ip = first
		}
		if ip != p.gateway {
			f, err := os.OpenFile(filepath.Join(p.dir, ip.String()), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err == nil {
				_, werr := f.WriteString(owner)
				cerr := f.Close()
				if werr = errors.Join(werr, cerr); werr != nil {
					os.Remove(f.Name())
					return netip.Addr{}, fmt.Errorf("recording address %s: %w", ip, werr)
				}
				os.WriteFile(filepath.Join(p.dir, "last"), []byte(ip.String()), 0o600)
				return ip, nil
			}
			if !errors.Is(err, os.ErrExist) {
				return netip.Addr{}, fmt.Errorf("recording address %s: %w", ip, err)
			}
		}
		ip = ip.Next()
	}
	return netip.Addr{}, fmt.Errorf("pod CIDR %s is full", p.cidr)
}

// lookup finds owner's recorded address of this pool.
func (p *pool) lookup(owner string) (netip.Addr, bool) {
	for ip, o := range p.allocations() {
		if o == owner {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// allocations lists this pool's recorded addresses and their owners.
func (p *pool) allocations() map[netip.Addr]string {
	out := map[netip.Addr]string{}
	entries, _ := os.ReadDir(p.dir)
	for _, e := range entries {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil || !p.cidr.Contains(ip) {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(p.dir, e.Name())); err == nil {
			out[ip] = string(b)
		}
	}
	return out
}

// Allocations lists recorded addresses of every family and their owners.
func (n *Network) Allocations() map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for _, p := range n.pools {
		for ip, o := range p.allocations() {
			out[ip] = o
		}
	}
	return out
}

// Release frees owner's addresses, if it has any.
func (n *Network) Release(owner string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	for _, p := range n.pools {
		errs = append(errs, p.release(owner))
	}
	return errors.Join(errs...)
}

func (p *pool) release(owner string) error {
	if ip, ok := p.lookup(owner); ok {
		if err := os.Remove(filepath.Join(p.dir, ip.String())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("releasing %s: %w", ip, err)
		}
	}
	return nil
}

// lastAddr is the highest address of p: the IPv4 broadcast address, which no Pod may have;
// IPv6 has none, but leaving the last one out too keeps the two families alike.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	ip, _ := netip.AddrFromSlice(b)
	return ip
}

// HostVeth is the node-side interface name of owner's veth: short (IFNAMSIZ is 16) and stable,
// so a restarted agent finds it again without state.
func HostVeth(owner string) string {
	sum := sha256.Sum256([]byte(owner))
	return "vp" + hex.EncodeToString(sum[:])[:12]
}

// Attach connects the namespace at podNS to the bridge with addresses ips (one per pod CIDR,
// as Allocate returns them). Attaching again after a partial failure starts over.
func (n *Network) Attach(podNS, owner string, ips []netip.Addr) error {
	node, err := handleAt(n.cfg.NodeNS)
	if err != nil {
		return err
	}
	defer node.Close()
	name := HostVeth(owner)
	if old, err := node.LinkByName(name); err == nil {
		node.LinkDel(old)
	}
	br, err := node.LinkByName(n.cfg.Bridge)
	if err != nil {
		return fmt.Errorf("finding pod bridge %s: %w", n.cfg.Bridge, err)
	}
	target, err := vnetns.GetFromPath(podNS)
	if err != nil {
		return fmt.Errorf("opening the Pod's network namespace %s: %w", podNS, err)
	}
	defer target.Close()
	// The Pod's end is created inside its namespace directly, so an eth0 never appears in the
	// node's namespace, where it could clash with the node's own.
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name, MasterIndex: br.Attrs().Index, MTU: br.Attrs().MTU, Flags: net.FlagUp},
		PeerName:      PodInterface,
		PeerNamespace: netlink.NsFd(target),
	}
	if err := node.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s: %w", name, err)
	}
	if err := n.configurePod(target, ips); err != nil {
		if l, lerr := node.LinkByName(name); lerr == nil {
			node.LinkDel(l)
		}
		return err
	}
	return nil
}

func (n *Network) configurePod(target vnetns.NsHandle, ips []netip.Addr) error {
	h, err := netlink.NewHandleAt(target, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("opening netlink in the Pod: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("bringing up lo in the Pod: %w", err)
	}
	eth, err := h.LinkByName(PodInterface)
	if err != nil {
		return fmt.Errorf("finding %s in the Pod: %w", PodInterface, err)
	}
	for _, ip := range ips {
		p := n.poolOf(ip)
		if p == nil {
			return fmt.Errorf("address %s is in none of the pod CIDRs %v", ip, n.cfg.PodCIDRs)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(p.cidr.Bits(), ip.BitLen())}}
		if ip.Is6() {
			// Usable at once: the allocator made it unique on the bridge, and a tentative
			// address would fail the Pod's first binds and connections.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(eth, addr); err != nil {
			return fmt.Errorf("adding %s to the Pod's %s: %w", ip, PodInterface, err)
		}
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bringing up the Pod's %s: %w", PodInterface, err)
	}
	for _, ip := range ips {
		gw := n.poolOf(ip).gateway
		route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}
		if ip.Is6() {
			route.Family = netlink.FAMILY_V6
		}
		if err := h.RouteAdd(route); err != nil {
			return fmt.Errorf("adding the Pod's default route via %s: %w", gw, err)
		}
	}
	return nil
}

func (n *Network) poolOf(ip netip.Addr) *pool {
	for _, p := range n.pools {
		if p.cidr.Contains(ip) {
			return p
		}
	}
	return nil
}

// Detach removes owner's veth (the kernel removes the Pod's end with it); a missing veth is
// not an error, since the Pod's namespace going away takes both ends too.
func (n *Network) Detach(owner string) error {
	node, err := handleAt(n.cfg.NodeNS)
	if err != nil {
		return err
	}
	defer node.Close()
	l, err := node.LinkByName(HostVeth(owner))
	if err != nil {
		return nil
	}
	if err := node.LinkDel(l); err != nil {
		return fmt.Errorf("deleting veth %s: %w", l.Attrs().Name, err)
	}
	return nil
}
