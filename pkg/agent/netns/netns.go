// Package netns wires a Pod's network namespace to its node: a veth pair from the node's pod
// bridge to eth0 in the Pod, an address from the node's pod CIDR, and a default route via the
// bridge. Addresses are allocated from files under a state directory (one file per address,
// holding its owner), so an agent restart never hands out an address a running Pod still uses.
//
// The Pod's namespace itself is held by a process (see package runtime); this package only
// opens it by path. Every change happens in the node's namespace (the bridge and the host end
// of the veth) or in the Pod's; the node's bridge must already exist.
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
	// Bridge is the pod bridge in the node namespace; its address in PodCIDR is the Pods'
	// gateway.
	Bridge  string
	PodCIDR netip.Prefix
	// StateDir keeps the address allocations.
	StateDir string
}

// Network attaches Pods to one node's bridge.
type Network struct {
	cfg     Config
	gateway netip.Addr
	mu      sync.Mutex // serialises allocation
}

// New checks the node side: the bridge exists and has an address in the pod CIDR.
func New(cfg Config) (*Network, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", cfg.StateDir, err)
	}
	h, err := handleAt(cfg.NodeNS)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	br, err := h.LinkByName(cfg.Bridge)
	if err != nil {
		return nil, fmt.Errorf("pod bridge %s not found in the node's network namespace: create it with an address in %s (the sandbox does): %w", cfg.Bridge, cfg.PodCIDR, err)
	}
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", cfg.Bridge, err)
	}
	n := &Network{cfg: cfg}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && cfg.PodCIDR.Contains(ip) {
			n.gateway = ip
		}
	}
	if !n.gateway.IsValid() {
		return nil, fmt.Errorf("pod bridge %s has no address in the pod CIDR %s", cfg.Bridge, cfg.PodCIDR)
	}
	return n, nil
}

// Gateway is the bridge's address, every Pod's default route.
func (n *Network) Gateway() netip.Addr { return n.gateway }

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

// Allocate returns owner's address, allocating the next free one if it has none. The scan
// starts after the last address handed out, so a freed address is not reused at once (a
// client may still hold a connection or a cache entry for it).
func (n *Network) Allocate(owner string) (netip.Addr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ip, ok := n.lookup(owner); ok {
		return ip, nil
	}
	first := n.cfg.PodCIDR.Masked().Addr().Next()
	last := lastAddr(n.cfg.PodCIDR)
	start := first
	if b, err := os.ReadFile(filepath.Join(n.cfg.StateDir, "last")); err == nil {
		if ip, err := netip.ParseAddr(strings.TrimSpace(string(b))); err == nil && n.cfg.PodCIDR.Contains(ip) {
			start = ip.Next()
		}
	}
	ip := start
	for range 1 << (32 - n.cfg.PodCIDR.Bits()) {
		if ip == last || !n.cfg.PodCIDR.Contains(ip) {
			ip = first
		}
		if ip != n.gateway {
			f, err := os.OpenFile(filepath.Join(n.cfg.StateDir, ip.String()), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err == nil {
				_, werr := f.WriteString(owner)
				cerr := f.Close()
				if werr = errors.Join(werr, cerr); werr != nil {
					os.Remove(f.Name())
					return netip.Addr{}, fmt.Errorf("recording address %s: %w", ip, werr)
				}
				os.WriteFile(filepath.Join(n.cfg.StateDir, "last"), []byte(ip.String()), 0o600)
				return ip, nil
			}
			if !errors.Is(err, os.ErrExist) {
				return netip.Addr{}, fmt.Errorf("recording address %s: %w", ip, err)
			}
		}
		ip = ip.Next()
	}
	return netip.Addr{}, fmt.Errorf("pod CIDR %s is full", n.cfg.PodCIDR)
}

// lookup finds owner's recorded address.
func (n *Network) lookup(owner string) (netip.Addr, bool) {
	for ip, o := range n.Allocations() {
		if o == owner {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// Allocations lists recorded addresses and their owners.
func (n *Network) Allocations() map[netip.Addr]string {
	out := map[netip.Addr]string{}
	entries, _ := os.ReadDir(n.cfg.StateDir)
	for _, e := range entries {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(n.cfg.StateDir, e.Name())); err == nil {
			out[ip] = string(b)
		}
	}
	return out
}

// Release frees owner's address, if it has one.
func (n *Network) Release(owner string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ip, ok := n.lookup(owner); ok {
		if err := os.Remove(filepath.Join(n.cfg.StateDir, ip.String())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("releasing %s: %w", ip, err)
		}
	}
	return nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// HostVeth is the node-side interface name of owner's veth: short (IFNAMSIZ is 16) and stable,
// so a restarted agent finds it again without state.
func HostVeth(owner string) string {
	sum := sha256.Sum256([]byte(owner))
	return "vp" + hex.EncodeToString(sum[:])[:12]
}

// Attach connects the namespace at podNS to the bridge with address ip. Attaching again after
// a partial failure starts over.
func (n *Network) Attach(podNS, owner string, ip netip.Addr) error {
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
	if err := n.configurePod(target, ip); err != nil {
		if l, lerr := node.LinkByName(name); lerr == nil {
			node.LinkDel(l)
		}
		return err
	}
	return nil
}

func (n *Network) configurePod(target vnetns.NsHandle, ip netip.Addr) error {
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
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(n.cfg.PodCIDR.Bits(), 32)}}
	if err := h.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("adding %s to the Pod's %s: %w", ip, PodInterface, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bringing up the Pod's %s: %w", PodInterface, err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: n.gateway.AsSlice()}
	if err := h.RouteAdd(route); err != nil {
		return fmt.Errorf("adding the Pod's default route via %s: %w", n.gateway, err)
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
