// Package allocator hands out Service cluster IPs and node ports from the ranges the server is
// configured with (--service-cluster-ip-range, --service-node-port-range). Every allocation is
// one etcd key, created by compare-and-swap and holding the owning Service, so allocations
// survive restarts and API servers sharing one etcd never hand out the same IP or port. Each
// server keeps a bitmap index, fed by a watch, to find free members in constant time however full
// the range is. The repair loop (repair.go) reconciles the keys with the Services that exist.
package allocator

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
)

// maxIndexedIPs bounds the index of one IP range (128 KiB of bits). An IPv4 /12 fits whole; of a
// larger IPv6 range only the first addresses are handed out dynamically, while any address of
// the range can still be requested by a Service.
const maxIndexedIPs = 1 << 20

// ErrIPNotInRange is upstream's error for a requested IP outside the range.
type ErrIPNotInRange struct {
	IP         string
	ValidRange string
}

func (e *ErrIPNotInRange) Error() string {
	return fmt.Sprintf("the provided IP (%s) is not in the valid range. The range of valid IPs is %s", e.IP, e.ValidRange)
}

// ErrIPAllocated is upstream's error for a requested IP that a Service already holds.
var ErrIPAllocated = fmt.Errorf("provided IP is already allocated")

// IPRange allocates the cluster IPs of one family from one CIDR.
type IPRange struct {
	pool   *pool
	cidr   netip.Prefix
	first  netip.Addr // the network address is never handed out
	last   netip.Addr // nor, for IPv4, the broadcast address
	family corev1.IPFamily
}

// NewIPRange returns the allocator of cidr, storing its keys under prefix (shared by all IP
// ranges; each range only looks at its own addresses). Call Run before allocating.
func NewIPRange(client *clientv3.Client, prefix string, cidr netip.Prefix) (*IPRange, error) {
	cidr = cidr.Masked()
	hostBits := cidr.Addr().BitLen() - cidr.Bits()
	family := corev1.IPv4Protocol
	if cidr.Addr().Is6() {
		family = corev1.IPv6Protocol
		if cidr.Bits() < 64 {
			return nil, fmt.Errorf("IPv6 service CIDR %s is too large: the shortest allowed prefix is /64", cidr)
		}
	}
	if hostBits < 2 && family == corev1.IPv4Protocol || hostBits < 1 {
		return nil, fmt.Errorf("service CIDR %s has no usable addresses", cidr)
	}
	r := &IPRange{cidr: cidr, family: family, first: cidr.Addr().Next(), last: broadcast(cidr)}
	// Upstream leaves out the network address, and for IPv4 the broadcast address.
	hosts := uint64(1)<<min(hostBits, 63) - 1
	if family == corev1.IPv4Protocol {
		hosts--
		r.last = r.last.Prev()
	}
	size := int(min(hosts, maxIndexedIPs))
	r.pool = newPool(client, prefix, size, ipStaticBand(hostBits), func(m int) string {
		return addOffset(r.first, uint64(m)).String()
	}, r.memberOf)
	return r, nil
}

// ipStaticBand is upstream's min(max(16, cidrSize/16), 256), 0 for ranges of 16 or fewer.
func ipStaticBand(hostBits int) int {
	if hostBits <= 4 {
		return 0
	}
	if hostBits >= 12 {
		return 256
	}
	return max(16, (1<<hostBits)/16)
}

// broadcast is the last address of cidr: every host bit set.
func broadcast(cidr netip.Prefix) netip.Addr {
	b := cidr.Addr().As16()
	bits := cidr.Bits()
	if cidr.Addr().Is4() {
		bits += 96
	}
	for i := bits; i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a := netip.AddrFrom16(b)
	if cidr.Addr().Is4() {
		return a.Unmap()
	}
	return a
}

func addOffset(a netip.Addr, off uint64) netip.Addr {
	if a.Is4() {
		b := a.As4()
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(off))
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	lo := binary.BigEndian.Uint64(b[8:]) + off
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}

// offsetOf is a's distance from the first address; callers check a is in the range.
func (r *IPRange) offsetOf(a netip.Addr) uint64 {
	if a.Is4() {
		x, y := a.As4(), r.first.As4()
		return uint64(binary.BigEndian.Uint32(x[:]) - binary.BigEndian.Uint32(y[:]))
	}
	x, y := a.As16(), r.first.As16()
	return binary.BigEndian.Uint64(x[8:]) - binary.BigEndian.Uint64(y[8:])
}

func (r *IPRange) contains(a netip.Addr) bool {
	return a.Is4() == r.first.Is4() && r.first.Compare(a) <= 0 && a.Compare(r.last) <= 0
}

// memberOf maps a key suffix to its index offset; keys of other ranges are not members.
func (r *IPRange) memberOf(suffix string) (int, bool) {
	a, err := netip.ParseAddr(suffix)
	if err != nil || !r.contains(a) {
		return 0, false
	}
	off := r.offsetOf(a)
	if off >= uint64(r.pool.size) {
		return 0, false
	}
	return int(off), true
}

func (r *IPRange) indexOf(a netip.Addr) int {
	if m, ok := r.memberOf(a.String()); ok {
		return m
	}
	return -1
}

// Family is the IP family of the range.
func (r *IPRange) Family() corev1.IPFamily { return r.family }

// CIDR is the range as configured.
func (r *IPRange) CIDR() netip.Prefix { return r.cidr }

// Contains reports whether a could be allocated from this range.
func (r *IPRange) Contains(a netip.Addr) bool { return r.contains(a) }

// Run keeps the local index in step with etcd until ctx ends.
func (r *IPRange) Run(ctx context.Context) { r.pool.run(ctx) }

// WaitSynced blocks until the index has been loaded once.
func (r *IPRange) WaitSynced(ctx context.Context) error { return r.pool.waitSynced(ctx) }

// Allocate takes a requested IP for owner; with dryRun it only checks.
func (r *IPRange) Allocate(ctx context.Context, a netip.Addr, owner Owner, dryRun bool) error {
	if !r.contains(a) {
		return &ErrIPNotInRange{IP: a.String(), ValidRange: r.cidr.String()}
	}
	if dryRun {
		if err := r.pool.waitSynced(ctx); err != nil {
			return err
		}
		if !r.pool.peek(r.indexOf(a)) {
			return ErrIPAllocated
		}
		return nil
	}
	ok, err := r.pool.allocate(ctx, a.String(), r.indexOf(a), owner)
	if err != nil {
		return fmt.Errorf("allocating ClusterIP %s: %w", a, err)
	}
	if !ok {
		return ErrIPAllocated
	}
	return nil
}

// AllocateNext takes a free IP for owner; with dryRun it only names one that is free now.
func (r *IPRange) AllocateNext(ctx context.Context, owner Owner, dryRun bool) (netip.Addr, error) {
	var m int
	var err error
	if dryRun {
		m, err = r.pool.peekNext(ctx)
	} else {
		m, err = r.pool.allocateNext(ctx, owner)
	}
	if err != nil {
		return netip.Addr{}, err
	}
	return addOffset(r.first, uint64(m)), nil
}

// Release frees a if owner holds it. Releasing an IP outside the range or not held is a no-op.
func (r *IPRange) Release(ctx context.Context, a netip.Addr, owner Owner) error {
	if !r.contains(a) {
		return nil
	}
	return r.pool.release(ctx, a.String(), r.indexOf(a), &owner)
}

// Used is the number of taken addresses in the indexed part of the range.
func (r *IPRange) Used() int { return r.pool.used() }

// Free is the number of addresses in the indexed part of the range still free.
func (r *IPRange) Free() int { return r.pool.size - r.pool.used() }
