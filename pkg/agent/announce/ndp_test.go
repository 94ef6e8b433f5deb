package announce

// Addresses used here: fd00:250::/64 (node network: ext fd00:250::200) and fd00:251::/120
// (LoadBalancer pool), documentation MACs 02:00:00:00:00:xx.

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	lb6    = netip.MustParseAddr("fd00:251::9")
	ext6   = netip.MustParseAddr("fd00:250::200")
	nodeHW = net.HardwareAddr{2, 0, 0, 0, 0, 0x11}
	extHW  = net.HardwareAddr{2, 0, 0, 0, 0, 0x20}
)

// The two packets below were written out field by field from RFC 8200 §3 and RFC 4861 §4.3–4.4,
// with the checksums computed apart from this package (a Python one-liner summing the
// pseudo-header and message as 16-bit words).
const (
	// A solicited advertisement from the LB address to ext: S and O set, TLLA 02:..:11.
	wantNA = `6000 0000 0020 3aff  fd00 0251 0000 0000 0000 0000 0000 0009  fd00 0250 0000 0000 0000 0000 0000 0200
		88 00 138c  60 000000  fd00 0251 0000 0000 0000 0000 0000 0009  02 01 020000000011`
	// ext's solicitation for the LB address, to its solicited-node group, SLLA 02:..:20.
	extNS = `6000 0000 0020 3aff  fd00 0250 0000 0000 0000 0000 0000 0200  ff02 0000 0000 0000 0000 0001 ff00 0009
		87 00 76ca  00 000000  fd00 0251 0000 0000 0000 0000 0000 0009  01 01 020000000020`
)

func TestNeighborAdvertisementIsEncodedByTheRFC(t *testing.T) {
	na := ndpPacket{icmpType: icmpNeighborAdvertisement, src: lb6, dst: ext6, hopLimit: ndpHopLimit,
		flags: naFlagSolicited | naFlagOverride, target: lb6, linkAddr: nodeHW}
	got, want := na.marshal(), unhex(t, wantNA)
	if !bytes.Equal(got, want) {
		t.Fatalf("NA encoded as\n%x\nwant\n%x", got, want)
	}
	back, ok := parseNDP(got)
	if !ok || fmt.Sprint(back) != fmt.Sprint(na) {
		t.Errorf("parseNDP(marshal(%v)) = %v, %v", na, back, ok)
	}
}

func TestSolicitationIsDecodedAndEncodedAlike(t *testing.T) {
	b := unhex(t, extNS)
	ns, ok := parseNDP(b)
	if !ok {
		t.Fatal("a valid solicitation was rejected")
	}
	want := ndpPacket{icmpType: icmpNeighborSolicitation, src: ext6, dst: netip.MustParseAddr("ff02::1:ff00:9"),
		hopLimit: 255, target: lb6, linkAddr: extHW}
	if fmt.Sprint(ns) != fmt.Sprint(want) {
		t.Errorf("parsed %v, want %v", ns, want)
	}
	if got := want.marshal(); !bytes.Equal(got, b) {
		t.Errorf("NS encoded as\n%x\nwant\n%x", got, b)
	}
}

func TestChecksum(t *testing.T) {
	msg := unhex(t, wantNA)[ipv6HeaderLen:]
	// Receivers sum the message as it arrived, checksum included: an intact one gives 0.
	if got := icmpv6Checksum(lb6, ext6, msg); got != 0 {
		t.Errorf("checksum over the received NA = %#04x, want 0", got)
	}
	zeroed := bytes.Clone(msg)
	zeroed[2], zeroed[3] = 0, 0
	if got := icmpv6Checksum(lb6, ext6, zeroed); got != 0x138c {
		t.Errorf("checksum of the NA = %#04x, want 0x138c", got)
	}
	// An odd length pads with a zero byte, while the pseudo-header counts the real length
	// (value computed apart, as above).
	if got := icmpv6Checksum(lb6, ext6, []byte{0xab}); got != 0x5418 {
		t.Errorf("checksum of one byte = %#04x, want 0x5418", got)
	}
}

func TestMalformedSolicitationsAreIgnored(t *testing.T) {
	good := unhex(t, extNS)
	cases := map[string]func(b []byte) []byte{
		"hop limit 254 (came through a router)": func(b []byte) []byte { b[7] = 254; return b },
		"bad checksum":                          func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
		"code 1":                                func(b []byte) []byte { b[41] = 1; return b },
		"not ICMPv6":                            func(b []byte) []byte { b[6] = 17; return b },
		"truncated":                             func(b []byte) []byte { return b[:ipv6HeaderLen+20] },
		"payload length beyond the frame":       func(b []byte) []byte { b[5] = 0x40; return b },
		"option of length 0": func(b []byte) []byte {
			b[ipv6HeaderLen+25] = 0
			return refill(b)
		},
		"multicast target": func(b []byte) []byte {
			copy(b[ipv6HeaderLen+8:], netip.MustParseAddr("ff02::1").AsSlice())
			return refill(b)
		},
	}
	if _, ok := parseNDP(good); !ok {
		t.Fatal("the unchanged solicitation is rejected")
	}
	for name, spoil := range cases {
		if p, ok := parseNDP(spoil(bytes.Clone(good))); ok {
			t.Errorf("%s: accepted as %v", name, p)
		}
	}
}

// refill recomputes the checksum of an IPv6 packet holding ICMPv6, so that a test can spoil
// one field and see that field rejected, not the checksum.
func refill(b []byte) []byte {
	m := b[ipv6HeaderLen:]
	m[2], m[3] = 0, 0
	c := icmpv6Checksum(netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40])), m)
	m[2], m[3] = byte(c>>8), byte(c)
	return b
}

func TestSolicitedNodeGroupAndItsMAC(t *testing.T) {
	ip := netip.MustParseAddr("fd00:251::1234:5678")
	if got, want := solicitedNode(ip), netip.MustParseAddr("ff02::1:ff34:5678"); got != want {
		t.Errorf("solicitedNode(%s) = %s, want %s", ip, got, want)
	}
	if got, want := multicastMAC(solicitedNode(ip)).String(), "33:33:ff:34:56:78"; got != want {
		t.Errorf("its MAC = %s, want %s", got, want)
	}
	if got, want := multicastMAC(allNodes).String(), "33:33:00:00:00:01"; got != want {
		t.Errorf("all-nodes MAC = %s, want %s", got, want)
	}
}

func TestWhereAdvertisementsGo(t *testing.T) {
	frameSrc := net.HardwareAddr{2, 0, 0, 0, 0, 0x30}
	group := solicitedNode(lb6)
	cases := []struct {
		name      string
		ns        ndpPacket
		ok        bool
		dst       netip.Addr
		to        string
		solicited bool
	}{
		{"multicast solicitation with SLLA", ndpPacket{icmpType: icmpNeighborSolicitation, src: ext6, dst: group, target: lb6, linkAddr: extHW},
			true, ext6, extHW.String(), true},
		{"unicast probe without SLLA: to the frame's source", ndpPacket{icmpType: icmpNeighborSolicitation, src: ext6, dst: lb6, target: lb6},
			true, ext6, frameSrc.String(), true},
		{"someone's DAD: to all nodes, not solicited", ndpPacket{icmpType: icmpNeighborSolicitation, src: netip.IPv6Unspecified(), dst: group, target: lb6},
			true, allNodes, "33:33:00:00:00:01", false},
		{"DAD with SLLA is invalid", ndpPacket{icmpType: icmpNeighborSolicitation, src: netip.IPv6Unspecified(), dst: group, target: lb6, linkAddr: extHW},
			false, netip.Addr{}, "", false},
		{"DAD not to the solicited-node group is invalid", ndpPacket{icmpType: icmpNeighborSolicitation, src: netip.IPv6Unspecified(), dst: allNodes, target: lb6},
			false, netip.Addr{}, "", false},
		{"an advertisement is not answered", ndpPacket{icmpType: icmpNeighborAdvertisement, src: ext6, dst: allNodes, target: lb6},
			false, netip.Addr{}, "", false},
	}
	for _, c := range cases {
		na, to, ok := advertisementFor(c.ns, frameSrc, nodeHW)
		if ok != c.ok {
			t.Errorf("%s: answered %v, want %v", c.name, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		if na.dst != c.dst || to.String() != c.to || (na.flags&naFlagSolicited != 0) != c.solicited || na.flags&naFlagOverride == 0 ||
			na.src != lb6 || na.target != lb6 || na.linkAddr.String() != nodeHW.String() || na.hopLimit != 255 {
			t.Errorf("%s: NA %+v to %s; want dst %s, to %s, solicited %v, override, from and for %s with %s", c.name, na, to, c.dst, c.to, c.solicited, lb6, nodeHW)
		}
		if back, ok := parseNDP(na.marshal()); !ok || back.icmpType != icmpNeighborAdvertisement {
			t.Errorf("%s: the NA does not parse back", c.name)
		}
	}
}
