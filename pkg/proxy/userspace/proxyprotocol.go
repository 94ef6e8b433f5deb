package userspace

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
)

// The PROXY protocol (haproxy.org's proxy-protocol.txt) lets a backend behind the proxy learn
// the real client address: the proxy sends one header before any client byte. Version 1 is a
// text line for TCP; version 2 is binary and also covers UDP, where the header starts every
// datagram.

// proxyProtocolVersion is the value of the svcplane.io/proxy-protocol annotation.
type proxyProtocolVersion int

const (
	proxyProtocolNone proxyProtocolVersion = 0
	proxyProtocolV1   proxyProtocolVersion = 1
	proxyProtocolV2   proxyProtocolVersion = 2
)

func parseProxyProtocol(s string) (proxyProtocolVersion, error) {
	switch s {
	case "":
		return proxyProtocolNone, nil
	case "v1":
		return proxyProtocolV1, nil
	case "v2":
		return proxyProtocolV2, nil
	}
	return proxyProtocolNone, fmt.Errorf("%s: %q is not a PROXY protocol version: use v1 or v2", annotationProxyProtocol, s)
}

// v2Signature opens every version 2 header.
var v2Signature = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// appendProxyHeader appends the header telling that client connected to dest (the Service
// address it reached). IPv4-mapped IPv6 addresses are sent as IPv4, as a dual-stack listener
// reports IPv4 clients that way.
func appendProxyHeader(buf []byte, v proxyProtocolVersion, udp bool, client, dest netip.AddrPort) []byte {
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	dest = netip.AddrPortFrom(dest.Addr().Unmap(), dest.Port())
	ipv4 := client.Addr().Is4() && dest.Addr().Is4()
	if v == proxyProtocolV1 {
		// Version 1 has no UDP and no mixed families; the spec's answer to anything it cannot
		// describe is UNKNOWN, which makes the backend use the connection's own addresses.
		family := "TCP6"
		if ipv4 {
			family = "TCP4"
		} else if client.Addr().Is4() != dest.Addr().Is4() || udp {
			return append(buf, "PROXY UNKNOWN\r\n"...)
		}
		buf = append(buf, "PROXY "...)
		buf = append(buf, family...)
		buf = append(buf, ' ')
		buf = client.Addr().AppendTo(buf)
		buf = append(buf, ' ')
		buf = dest.Addr().AppendTo(buf)
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, uint64(client.Port()), 10)
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, uint64(dest.Port()), 10)
		return append(buf, "\r\n"...)
	}

	buf = append(buf, v2Signature[:]...)
	// Version 2, command PROXY.
	buf = append(buf, 0x21)
	// High nibble: address family (1 INET, 2 INET6); low nibble: 1 STREAM, 2 DGRAM.
	transport := byte(0x1)
	if udp {
		transport = 0x2
	}
	if ipv4 {
		buf = append(buf, 0x10|transport)
		buf = binary.BigEndian.AppendUint16(buf, 12)
		a, d := client.Addr().As4(), dest.Addr().As4()
		buf = append(buf, a[:]...)
		buf = append(buf, d[:]...)
	} else {
		buf = append(buf, 0x20|transport)
		buf = binary.BigEndian.AppendUint16(buf, 36)
		a, d := client.Addr().As16(), dest.Addr().As16()
		buf = append(buf, a[:]...)
		buf = append(buf, d[:]...)
	}
	buf = binary.BigEndian.AppendUint16(buf, client.Port())
	return binary.BigEndian.AppendUint16(buf, dest.Port())
}
