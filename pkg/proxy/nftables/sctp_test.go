package nftables

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/svcplane/svcplane/pkg/proxy"
)

// Addresses of this test: the SCTP Service at 10.96.0.6:9, its endpoint 10.244.2.6:9999, the
// client 10.250.0.200, all on the loopback of a fresh namespace.

// sctpInit is an SCTP packet (common header and an INIT chunk) from sport to dport: the first
// packet of an association, which conntrack tracks and NAT translates.
func sctpInit(sport, dport uint16) []byte {
	b := make([]byte, 12+20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	// Verification tag 0, as an INIT must carry; checksum filled in below.
	chunk := b[12:]
	chunk[0] = 1 // INIT
	binary.BigEndian.PutUint16(chunk[2:], 20)
	binary.BigEndian.PutUint32(chunk[4:], 0x5c7e5c7e) // initiate tag
	binary.BigEndian.PutUint32(chunk[8:], 65536)      // advertised receiver window
	binary.BigEndian.PutUint16(chunk[12:], 1)         // outbound streams
	binary.BigEndian.PutUint16(chunk[14:], 1)         // inbound streams
	binary.BigEndian.PutUint32(chunk[16:], 1)         // initial TSN
	// CRC32c, stored least significant byte first as the kernel's sctp_compute_cksum does.
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// TestKernelSCTPClusterIP sends an SCTP INIT to a ClusterIP from a raw socket and sees it
// arrive at the endpoint's address and port: SCTP is matched, tracked and DNATed. Raw
// sockets, because this kernel may lack SCTP sockets (CONFIG_IP_SCTP) while having SCTP
// conntrack and NAT, which is all the proxy needs.
func TestKernelSCTPClusterIP(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		ns := inFreshNetns(t)
		if err := ipIn(ns, [][]string{
			{"link", "set", "lo", "up"},
			{"addr", "add", "10.250.0.200/32", "dev", "lo"},
			{"addr", "add", "10.244.2.6/32", "dev", "lo"},
			{"route", "add", "10.96.0.0/12", "dev", "lo"},
		}); err != nil {
			t.Error(err)
			return
		}
		tr := proxy.NewTracker(corev1.IPv4Protocol, testNode, nil)
		tr.OnServiceAdd(makeService("sctp", "10.96.0.6", 9, corev1.ProtocolSCTP))
		tr.OnEndpointSliceAdd(makeSlice("sctp", 9999, corev1.ProtocolSCTP, ep{"10.244.2.6", "node2", true, false}))
		p, err := kernelProxier(testConfig())
		if err != nil {
			t.Error(err)
			return
		}
		if err := p.Sync(tr.Snapshot(), true); err != nil {
			t.Errorf("full sync: %v", err)
			return
		}

		// Both sockets are created on this thread, so they live in the fresh namespace.
		recv, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
		if err != nil {
			t.Errorf("raw SCTP socket: %v", err)
			return
		}
		defer unix.Close(recv)
		tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
		unix.SetsockoptTimeval(recv, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		send, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(send)
		if err := unix.Bind(send, &unix.SockaddrInet4{Addr: [4]byte{10, 250, 0, 200}}); err != nil {
			t.Error(err)
			return
		}
		if err := unix.Sendto(send, sctpInit(40000, 9), 0, &unix.SockaddrInet4{Addr: [4]byte{10, 96, 0, 6}}); err != nil {
			t.Errorf("sending an SCTP INIT to 10.96.0.6: %v", err)
			return
		}
		var seen []string
		buf := make([]byte, 1500)
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
			n, _, err := unix.Recvfrom(recv, buf, 0)
			if err != nil {
				continue
			}
			ihl := int(buf[0]&0x0f) * 4
			// Ours is the INIT with our initiate tag (the source port is not a mark: the
			// client is outside the cluster CIDR, so it is masqueraded, fully-random).
			if n < ihl+32 || buf[ihl+12] != 1 || binary.BigEndian.Uint32(buf[ihl+16:]) != 0x5c7e5c7e {
				continue
			}
			dst, _ := netip.AddrFromSlice(buf[16:20])
			dport := binary.BigEndian.Uint16(buf[ihl+2:])
			got := netip.AddrPortFrom(dst, dport).String()
			if got == "10.244.2.6:9999" {
				return
			}
			seen = append(seen, got)
		}
		t.Errorf("the SCTP INIT to 10.96.0.6:9 never arrived at the endpoint 10.244.2.6:9999; packets seen went to %v", seen)
	}()
	<-done
}
