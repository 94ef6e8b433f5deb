package userspace

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// Keep-alive is set once on the listener and inherited by accepted sockets, not set per
// connection: check that both proxied sockets really probe, so a peer that vanishes without a
// FIN is noticed in minutes, not at the idle timeout.
func TestTCPConnectionsProbeBothPeersWithKeepAlive(t *testing.T) {
	h := newHarness(t, Options{})
	name := serviceName("keepalive", corev1.ProtocolTCP)
	sp := clusterIP(t, corev1.ProtocolTCP)
	h.set(name, sp, tcpBackend(t, "a"))
	if got, c := hello(t, addrOf(sp)); got != "a" {
		t.Fatalf("got %q through the proxy, want a", got)
	} else {
		defer c.Close()
	}

	var s *loopConn
	deadline := time.Now().Add(2 * time.Second)
	for s == nil && time.Now().Before(deadline) {
		svc := h.p.services[name]
		svc.mu.Lock()
		for _, m := range svc.sessions {
			for sess := range m {
				s, _ = sess.(*loopConn)
			}
		}
		svc.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	if s == nil {
		t.Fatal("no session tracked for the connection")
	}
	// The loop owns the session's fds: read them there.
	var fds map[string]int
	s.lp.call(func() { fds = map[string]int{"client": s.client, "backend": s.backend} })
	for side, fd := range fds {
		on := sockoptFD(t, fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		idle := sockoptFD(t, fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
		intvl := sockoptFD(t, fd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL)
		if on != 1 || idle != 15 || intvl != 15 {
			t.Errorf("%s socket: SO_KEEPALIVE %d, TCP_KEEPIDLE %d s, TCP_KEEPINTVL %d s; want 1, 15, 15", side, on, idle, intvl)
		}
	}
}

func sockoptFD(t *testing.T, fd, level, opt int) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Small messages are copied through a buffer and bulk data is spliced, switching mid-stream:
// the bytes must arrive intact and in order across the switch, both ways.
func TestTCPRelayKeepsDataIntactAcrossSmallAndBulkTransfers(t *testing.T) {
	h := newHarness(t, Options{})
	name := serviceName("echo", corev1.ProtocolTCP)
	sp := clusterIP(t, corev1.ProtocolTCP)
	h.set(name, sp, tcpBackend(t, "echo"))
	got, c := hello(t, addrOf(sp))
	if got != "echo" {
		t.Fatalf("got %q, want echo", got)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))

	// Sizes below, at and above the copy buffer, then small again after the switch.
	var payload []byte
	for i, size := range []int{1, 100, copyBufferSize - 1, copyBufferSize, 3 * copyBufferSize, 7, 1 << 20, 5} {
		for j := range size {
			payload = append(payload, byte(i*31+j*7))
		}
	}
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	echoed, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(echoed, payload) {
		t.Fatalf("echoed %d bytes, sent %d; first difference at %d", len(echoed), len(payload), firstDifference(echoed, payload))
	}
}

func firstDifference(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
