package announce

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// IPv6 addresses are announced with Neighbor Discovery (RFC 4861), IPv6's ARP: a neighbour
// multicasts a Neighbor Solicitation (NS) naming the target address to that address's
// solicited-node group, and the owner answers with a Neighbor Advertisement (NA) carrying its
// MAC. As for ARP, the chosen node answers from userspace on an AF_PACKET socket (EtherType
// 0x86DD), the address is on no interface, and a node taking an address over sends an
// unsolicited NA with the Override flag to all nodes, which makes Linux (and any RFC 4861 host)
// replace the MAC it cached.
//
// The kernel itself answers NDP only for addresses configured on an interface (or listed as
// neighbour proxies): the nftables proxy DNATs LoadBalancer addresses in prerouting without
// configuring them anywhere, and the userspace proxy is IPv4-only, so unlike ARP (strictarp.go)
// no sysctl is needed to keep the other nodes' kernels quiet. If the userspace proxy ever routes
// IPv6 Service addresses locally, note that Linux answers NS only for addresses on the
// interface, never for local routes, so that still holds.

const (
	etherTypeIPv6 = 0x86dd
	ipv6HeaderLen = 40
	protoICMPv6   = 58
	// ndpHopLimit is what every NDP packet carries and receivers insist on (RFC 4861 §7.1):
	// a router would have decremented it, so 255 proves the sender is on the link.
	ndpHopLimit = 255

	icmpNeighborSolicitation  = 135
	icmpNeighborAdvertisement = 136
	// Both messages are 4 bytes of type, code, checksum, then 4 of flags/reserved, then the
	// 16-byte target, then options.
	ndpMessageLen = 24

	optSourceLinkAddr = 1
	optTargetLinkAddr = 2

	naFlagSolicited = 0x40
	naFlagOverride  = 0x20
)

// allNodes is the link's all-nodes group, where unsolicited advertisements go.
var allNodes = netip.MustParseAddr("ff02::1")

// solicitedNode is ip's solicited-node group (RFC 4291 §2.7.1): ff02::1:ff plus ip's low 24
// bits. Neighbours send their solicitations for ip there.
func solicitedNode(ip netip.Addr) netip.Addr {
	a := ip.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 1, 12: 0xff, 13: a[13], 14: a[14], 15: a[15]})
}

// multicastMAC is the Ethernet group an IPv6 multicast address maps to (RFC 2464 §7):
// 33:33 and the address's low 32 bits.
func multicastMAC(group netip.Addr) net.HardwareAddr {
	a := group.As16()
	return net.HardwareAddr{0x33, 0x33, a[12], a[13], a[14], a[15]}
}

// icmpv6Checksum is the Internet checksum (RFC 1071) of msg preceded by the IPv6 pseudo-header
// (RFC 8200 §8.1): source, destination, upper-layer length, next header 58. msg's checksum
// field must be zero when computing, and a received message is intact when the sum over it as
// received is zero.
func icmpv6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	var lenNext [8]byte
	binary.BigEndian.PutUint32(lenNext[0:], uint32(len(msg)))
	lenNext[7] = protoICMPv6
	add(lenNext[:])
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// ndpPacket is an NS or NA with the one option each carries here: the sender's link-layer
// address in a solicitation, the target's in an advertisement.
type ndpPacket struct {
	icmpType uint8
	src, dst netip.Addr
	hopLimit uint8
	flags    uint8 // NA only: naFlagSolicited, naFlagOverride
	target   netip.Addr
	linkAddr net.HardwareAddr // nil: no option
}

// marshal returns the IPv6 packet (header and ICMPv6 message) with its checksum filled in.
func (p ndpPacket) marshal() []byte {
	msgLen := ndpMessageLen
	if p.linkAddr != nil {
		msgLen += 8
	}
	b := make([]byte, ipv6HeaderLen+msgLen)
	b[0] = 6 << 4 // version 6, traffic class and flow label 0
	binary.BigEndian.PutUint16(b[4:], uint16(msgLen))
	b[6] = protoICMPv6
	b[7] = p.hopLimit
	s, d := p.src.As16(), p.dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	m := b[ipv6HeaderLen:]
	m[0] = p.icmpType
	m[4] = p.flags
	t := p.target.As16()
	copy(m[8:24], t[:])
	if p.linkAddr != nil {
		m[24] = optSourceLinkAddr
		if p.icmpType == icmpNeighborAdvertisement {
			m[24] = optTargetLinkAddr
		}
		m[25] = 1 // in units of 8 bytes
		copy(m[26:32], p.linkAddr)
	}
	binary.BigEndian.PutUint16(m[2:], icmpv6Checksum(p.src, p.dst, m))
	return b
}

// parseNDP reads an NS or NA out of an IPv6 packet and checks what RFC 4861 §7.1 asks of every
// receiver: ICMPv6 right after the IPv6 header (NDP messages carry no extension headers in
// practice, and anything else is not for us), code 0, hop limit 255, a correct checksum, room
// for the message, a unicast target and no option of length 0. The caller checks the rest.
func parseNDP(b []byte) (ndpPacket, bool) {
	if len(b) < ipv6HeaderLen+ndpMessageLen || b[0]>>4 != 6 || b[6] != protoICMPv6 {
		return ndpPacket{}, false
	}
	n := int(binary.BigEndian.Uint16(b[4:]))
	if n < ndpMessageLen || ipv6HeaderLen+n > len(b) {
		return ndpPacket{}, false
	}
	p := ndpPacket{
		hopLimit: b[7],
		src:      netip.AddrFrom16([16]byte(b[8:24])),
		dst:      netip.AddrFrom16([16]byte(b[24:40])),
	}
	m := b[ipv6HeaderLen : ipv6HeaderLen+n]
	p.icmpType = m[0]
	if (p.icmpType != icmpNeighborSolicitation && p.icmpType != icmpNeighborAdvertisement) || m[1] != 0 ||
		p.hopLimit != ndpHopLimit || icmpv6Checksum(p.src, p.dst, m) != 0 {
		return ndpPacket{}, false
	}
	if p.icmpType == icmpNeighborAdvertisement {
		p.flags = m[4]
	}
	p.target = netip.AddrFrom16([16]byte(m[8:24]))
	if p.target.IsMulticast() {
		return ndpPacket{}, false
	}
	want := uint8(optSourceLinkAddr)
	if p.icmpType == icmpNeighborAdvertisement {
		want = optTargetLinkAddr
	}
	for opts := m[ndpMessageLen:]; len(opts) > 0; {
		if len(opts) < 2 || opts[1] == 0 || int(opts[1])*8 > len(opts) {
			return ndpPacket{}, false
		}
		l := int(opts[1]) * 8
		if opts[0] == want && l >= 8 && p.linkAddr == nil {
			p.linkAddr = append(net.HardwareAddr(nil), opts[2:8]...)
		}
		opts = opts[l:]
	}
	return p, true
}

// ndpResponder answers Neighbor Solicitations for the owned IPv6 addresses on one interface.
type ndpResponder struct {
	conn  *packetConn // EtherType 0x86DD: receives solicitations, sends advertisements
	iface *net.Interface
	// groups holds the solicited-node group memberships, one socket for all. Joining through
	// an IPv6 socket rather than PACKET_ADD_MEMBERSHIP does the same for the NIC's filter
	// (frames to 33:33:ff:xx:xx:xx get through) and also makes the kernel send MLD reports,
	// without which a switch that snoops MLD would not forward the solicitations to this port.
	// The kernel itself ignores the solicitations it then receives for addresses it does
	// not have.
	groups *os.File
	// joined counts the owned addresses behind each group (addresses sharing their low 24
	// bits share it). Used by Run's loop only.
	joined map[netip.Addr]int
}

func openNDP(iface *net.Interface) (*ndpResponder, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("opening an IPv6 socket to join solicited-node groups: %w", err)
	}
	groups := os.NewFile(uintptr(fd), "ndp-groups:"+iface.Name)
	conn, err := openPacket(iface, etherTypeIPv6)
	if err != nil {
		groups.Close()
		return nil, err
	}
	return &ndpResponder{conn: conn, iface: iface, groups: groups, joined: map[netip.Addr]int{}}, nil
}

// Close also leaves every group.
func (r *ndpResponder) Close() error {
	return errors.Join(r.conn.Close(), r.groups.Close())
}

func (r *ndpResponder) membership(ip netip.Addr, opt int) error {
	raw, err := r.groups.SyscallConn()
	if err != nil {
		return err
	}
	mreq := &unix.IPv6Mreq{Multiaddr: solicitedNode(ip).As16(), Interface: uint32(r.iface.Index)}
	var sockErr error
	if err := raw.Control(func(fd uintptr) { sockErr = unix.SetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IPV6, opt, mreq) }); err != nil {
		return err
	}
	return sockErr
}

// own starts receiving solicitations for ip and tells the link's nodes that ip is at this
// interface's MAC.
func (r *ndpResponder) own(ip netip.Addr) {
	group := solicitedNode(ip)
	if r.joined[group] == 0 {
		if err := r.membership(ip, unix.IPV6_JOIN_GROUP); err != nil {
			klog.ErrorS(err, "joining the solicited-node group: neighbours' solicitations may not arrive", "ip", ip, "group", group)
		}
	}
	r.joined[group]++
	r.unsolicited(ip)
}

// disown leaves ip's group unless another owned address still needs it.
func (r *ndpResponder) disown(ip netip.Addr) {
	group := solicitedNode(ip)
	if r.joined[group] == 0 {
		return
	}
	r.joined[group]--
	if r.joined[group] > 0 {
		return
	}
	delete(r.joined, group)
	if err := r.membership(ip, unix.IPV6_LEAVE_GROUP); err != nil {
		klog.ErrorS(err, "leaving the solicited-node group", "ip", ip, "group", group)
	}
}

// unsolicited is IPv6's gratuitous ARP (RFC 4861 §7.2.6): an NA to all nodes with Override set
// and Solicited clear, so that neighbours with an entry for ip replace its MAC.
func (r *ndpResponder) unsolicited(ip netip.Addr) {
	na := ndpPacket{icmpType: icmpNeighborAdvertisement, src: ip, dst: allNodes, hopLimit: ndpHopLimit,
		flags: naFlagOverride, target: ip, linkAddr: r.iface.HardwareAddr}
	if err := r.conn.sendRaw(na.marshal(), multicastMAC(allNodes)); err != nil {
		klog.ErrorS(err, "sending an unsolicited Neighbor Advertisement", "ip", ip)
	}
}

// advertisementFor is the answer to the solicitation ns for an owned address, and the
// Ethernet address to send it to (RFC 4861 §7.2.4). Its source is the target itself, the
// address this node stands for. false when ns deserves none: not a solicitation, or a
// malformed one (§7.1.1).
func advertisementFor(ns ndpPacket, frameSrc, mac net.HardwareAddr) (ndpPacket, net.HardwareAddr, bool) {
	if ns.icmpType != icmpNeighborSolicitation {
		return ndpPacket{}, nil, false
	}
	na := ndpPacket{icmpType: icmpNeighborAdvertisement, src: ns.target, hopLimit: ndpHopLimit,
		flags: naFlagOverride, target: ns.target, linkAddr: mac}
	if ns.src.IsUnspecified() {
		// Duplicate address detection by someone else: it must have gone to the
		// solicited-node group and name no link-layer address; the answer goes to all nodes,
		// not solicited, so that the prober learns the address is taken.
		if ns.dst != solicitedNode(ns.target) || ns.linkAddr != nil {
			return ndpPacket{}, nil, false
		}
		na.dst = allNodes
		return na, multicastMAC(allNodes), true
	}
	na.dst = ns.src
	na.flags |= naFlagSolicited
	to := ns.linkAddr
	if to == nil {
		// A unicast solicitation (reachability check) may omit the option; the frame's
		// source is the asker.
		to = frameSrc
	}
	if len(to) != 6 {
		return ndpPacket{}, nil, false
	}
	return na, to, true
}

// answer replies to solicitations for the addresses owned says are this node's, and reports
// other nodes' advertisements of them to claimedElsewhere, until the socket closes.
func (r *ndpResponder) answer(owned func(netip.Addr) bool, claimedElsewhere func(netip.Addr, net.HardwareAddr)) {
	for {
		b, frameSrc, err := r.conn.receiveFrom()
		if err != nil {
			klog.V(2).InfoS("NDP responder stopped", "err", err)
			return
		}
		ns, ok := parseNDP(b)
		if !ok || !owned(ns.target) {
			continue
		}
		if ns.icmpType == icmpNeighborAdvertisement {
			// Another node advertising an owned address claims it.
			by := ns.linkAddr
			if by == nil {
				by = frameSrc
			}
			if by != nil && !bytes.Equal(by, r.iface.HardwareAddr) {
				claimedElsewhere(ns.target, by)
			}
			continue
		}
		na, to, ok := advertisementFor(ns, frameSrc, r.iface.HardwareAddr)
		if !ok {
			continue
		}
		if err := r.conn.sendRaw(na.marshal(), to); err != nil {
			klog.ErrorS(err, "answering a Neighbor Solicitation", "ip", ns.target, "to", ns.src)
		}
	}
}

// QueryNDP sends one Neighbor Solicitation for target from the interface named ifname (as
// source senderIP, to target's solicited-node group) and returns the MAC of every distinct
// solicited advertisement received within wait: the NDP counterpart of Query, for tests that
// check that exactly one node answers for an IPv6 address. It opens its socket in the calling
// thread's network namespace.
func QueryNDP(ctx context.Context, ifname string, senderIP, target netip.Addr, wait time.Duration) ([]net.HardwareAddr, error) {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	c, err := openPacket(iface, etherTypeIPv6)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	group := solicitedNode(target)
	ns := ndpPacket{icmpType: icmpNeighborSolicitation, src: senderIP, dst: group, hopLimit: ndpHopLimit,
		target: target, linkAddr: iface.HardwareAddr}
	if err := c.sendRaw(ns.marshal(), multicastMAC(group)); err != nil {
		return nil, fmt.Errorf("sending a Neighbor Solicitation for %s: %w", target, err)
	}
	return c.collectAnswers(ctx, wait, func(b []byte) net.HardwareAddr {
		na, ok := parseNDP(b)
		if !ok || na.icmpType != icmpNeighborAdvertisement || na.target != target || na.dst != senderIP ||
			na.flags&naFlagSolicited == 0 {
			return nil
		}
		return na.linkAddr
	})
}
