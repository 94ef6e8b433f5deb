package announce

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ARP over Ethernet for IPv4 (RFC 826): the 28 bytes after the Ethernet header.
const (
	arpLen     = 28
	arpRequest = 1
	arpReply   = 2
)

type arpPacket struct {
	op                   uint16
	senderMAC, targetMAC net.HardwareAddr
	senderIP, targetIP   netip.Addr
}

func (p arpPacket) marshal() []byte {
	b := make([]byte, arpLen)
	binary.BigEndian.PutUint16(b[0:], 1)      // hardware: Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // protocol: IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], p.op)
	copy(b[8:14], p.senderMAC)
	s := p.senderIP.As4()
	copy(b[14:18], s[:])
	copy(b[18:24], p.targetMAC)
	t := p.targetIP.As4()
	copy(b[24:28], t[:])
	return b
}

func parseARP(b []byte) (arpPacket, bool) {
	if len(b) < arpLen || binary.BigEndian.Uint16(b[0:]) != 1 || binary.BigEndian.Uint16(b[2:]) != 0x0800 || b[4] != 6 || b[5] != 4 {
		return arpPacket{}, false
	}
	return arpPacket{
		op:        binary.BigEndian.Uint16(b[6:]),
		senderMAC: net.HardwareAddr(b[8:14]),
		senderIP:  netip.AddrFrom4([4]byte(b[14:18])),
		targetMAC: net.HardwareAddr(b[18:24]),
		targetIP:  netip.AddrFrom4([4]byte(b[24:28])),
	}, true
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// packetConn is an AF_PACKET datagram socket for one EtherType on one interface: the kernel
// adds and strips the Ethernet header. It lives in the network namespace of the thread that
// opened it.
type packetConn struct {
	file      *os.File
	iface     *net.Interface
	etherType uint16
}

func openARP(iface *net.Interface) (*packetConn, error) { return openPacket(iface, unix.ETH_P_ARP) }

func openPacket(iface *net.Interface, etherType uint16) (*packetConn, error) {
	proto := htons(etherType)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("opening a packet socket for EtherType %#04x: %w", etherType, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: iface.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding the packet socket for EtherType %#04x to %s: %w", etherType, iface.Name, err)
	}
	// A non-blocking descriptor in an os.File goes through the runtime's poller, so Close
	// wakes a pending read and deadlines work.
	name := fmt.Sprintf("packet:%s:%#04x", iface.Name, etherType)
	return &packetConn{file: os.NewFile(uintptr(fd), name), iface: iface, etherType: etherType}, nil
}

func (c *packetConn) Close() error { return c.file.Close() }

// sendRaw sends payload to the Ethernet address to.
func (c *packetConn) sendRaw(payload []byte, to net.HardwareAddr) error {
	sa := &unix.SockaddrLinklayer{Protocol: htons(c.etherType), Ifindex: c.iface.Index, Halen: 6}
	copy(sa.Addr[:], to)
	raw, err := c.file.SyscallConn()
	if err != nil {
		return err
	}
	var sendErr error
	err = raw.Write(func(fd uintptr) bool {
		sendErr = unix.Sendto(int(fd), payload, 0, sa)
		return !errors.Is(sendErr, unix.EAGAIN)
	})
	if err != nil {
		return err
	}
	return sendErr
}

// receiveRaw returns the payload of the next frame the interface received (not ones this host
// sent), in a fresh slice.
func (c *packetConn) receiveRaw() ([]byte, error) {
	b, _, err := c.receiveFrom()
	return b, err
}

// receiveFrom is receiveRaw that also returns the frame's Ethernet source address (NDP answers
// there when a solicitation names no link-layer address).
func (c *packetConn) receiveFrom() ([]byte, net.HardwareAddr, error) {
	raw, err := c.file.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	buf := make([]byte, 1500)
	for {
		var n int
		var from unix.Sockaddr
		var recvErr error
		err = raw.Read(func(fd uintptr) bool {
			n, from, recvErr = unix.Recvfrom(int(fd), buf, 0)
			return !errors.Is(recvErr, unix.EAGAIN)
		})
		if err != nil {
			return nil, nil, err
		}
		if recvErr != nil {
			return nil, nil, recvErr
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		var src net.HardwareAddr
		if ok && ll.Halen == 6 {
			src = append(net.HardwareAddr(nil), ll.Addr[:6]...)
		}
		return buf[:n], src, nil
	}
}

func (c *packetConn) send(p arpPacket, to net.HardwareAddr) error { return c.sendRaw(p.marshal(), to) }

// receive returns the next ARP packet the interface received (not ones it sent).
func (c *packetConn) receive() (arpPacket, error) {
	for {
		b, err := c.receiveRaw()
		if err != nil {
			return arpPacket{}, err
		}
		if p, ok := parseARP(b); ok {
			return p, nil
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Query sends one ARP request for target from the interface named ifname (as sender IP
// senderIP) and returns the MAC of every distinct answer received within wait. It opens its
// socket in the calling thread's network namespace; tests run it inside the sandbox's ext
// namespace to check that exactly one node answers for an address.
func Query(ctx context.Context, ifname string, senderIP, target netip.Addr, wait time.Duration) ([]net.HardwareAddr, error) {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	c, err := openARP(iface)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	req := arpPacket{op: arpRequest, senderMAC: iface.HardwareAddr, senderIP: senderIP, targetMAC: make(net.HardwareAddr, 6), targetIP: target}
	if err := c.send(req, broadcastMAC); err != nil {
		return nil, fmt.Errorf("sending an ARP request for %s: %w", target, err)
	}
	return c.collectAnswers(ctx, wait, func(b []byte) net.HardwareAddr {
		if p, ok := parseARP(b); ok && p.op == arpReply && p.senderIP == target && p.targetIP == senderIP {
			return p.senderMAC
		}
		return nil
	})
}

// collectAnswers reads frames until wait (or ctx's deadline) is over and returns, once each,
// the MACs that answer picks out of them (nil: not an answer).
func (c *packetConn) collectAnswers(ctx context.Context, wait time.Duration, answer func([]byte) net.HardwareAddr) ([]net.HardwareAddr, error) {
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.file.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	var answers []net.HardwareAddr
	seen := map[string]bool{}
	for {
		b, err := c.receiveRaw()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return answers, nil
		}
		if err != nil {
			return answers, err
		}
		if mac := answer(b); mac != nil && !seen[mac.String()] {
			seen[mac.String()] = true
			answers = append(answers, append(net.HardwareAddr(nil), mac...))
		}
	}
}
