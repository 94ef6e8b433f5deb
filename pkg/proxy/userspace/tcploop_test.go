package userspace

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	corev1 "k8s.io/api/core/v1"
)

// bothRelays runs a test against the event loops and against the goroutine relay.
func bothRelays(t *testing.T, test func(t *testing.T, opts Options)) {
	t.Run("event loops", func(t *testing.T) { test(t, Options{}) })
	t.Run("goroutine relay", func(t *testing.T) { test(t, Options{GoroutineRelay: true}) })
}

// A request/response over a half-closed connection with small messages, the case the event
// loop relays itself (no hand-over): the client's FIN reaches the backend, the answer and the
// backend's FIN reach the client.
func TestTCPHalfCloseWithSmallMessages(t *testing.T) {
	bothRelays(t, func(t *testing.T, opts Options) {
		h := newHarness(t, opts)
		backend := tcpServer(t, func(c net.Conn) {
			got, _ := io.ReadAll(c)
			fmt.Fprintf(c, "got %q", got)
		})
		name := serviceName("small", corev1.ProtocolTCP)
		sp := clusterIP(t, corev1.ProtocolTCP)
		h.set(name, sp, backend)
		for i := range 20 {
			c, err := net.Dial("tcp", addrOf(sp).String())
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			msg := fmt.Sprintf("request %d", i)
			c.Write([]byte(msg))
			c.(*net.TCPConn).CloseWrite()
			answer, err := io.ReadAll(c)
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("got %q", msg); string(answer) != want {
				t.Fatalf("got %q, want %q", answer, want)
			}
		}
	})
}

// A client that sends much more than it reads before it starts reading: the echoed data
// fills its receive buffer while the event loop relays, the loop hands the connection to a
// goroutine (its reads fill up, or its writes stop short with data in hand), and every byte
// must arrive, in order.
func TestTCPSlowReaderGetsEverythingInOrder(t *testing.T) {
	bothRelays(t, func(t *testing.T, opts Options) {
		h := newHarness(t, opts)
		name := serviceName("echo", corev1.ProtocolTCP)
		sp := clusterIP(t, corev1.ProtocolTCP)
		h.set(name, sp, tcpBackend(t, "echo"))
		// A small receive buffer, set before connecting so the window is small from the
		// start, and paced writes smaller than the loop's buffer: the loop relays them one
		// short read at a time until the client's buffers are full.
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		}}
		c, err := d.Dial("tcp", addrOf(sp).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if got, err := bufio.NewReader(io.LimitReader(c, 5)).ReadString('\n'); got != "echo\n" {
			t.Fatalf("got %q (%v), want echo", got, err)
		}
		var payload []byte
		for i := range 1 << 16 {
			payload = append(payload, fmt.Sprintf("%07d\n", i)...)
		}
		done := make(chan error, 1)
		go func() {
			for rest := payload; len(rest) > 0; {
				n := min(len(rest), 4096)
				if _, err := c.Write(rest[:n]); err != nil {
					done <- err
					return
				}
				rest = rest[n:]
				time.Sleep(100 * time.Microsecond)
			}
			done <- c.(*net.TCPConn).CloseWrite()
		}()
		time.Sleep(300 * time.Millisecond)
		echoed, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(echoed, payload) {
			t.Fatalf("echoed %d bytes, sent %d; first difference at %d", len(echoed), len(payload), firstDifference(echoed, payload))
		}
	})
}

// A backend that reads nothing for a while: the client's paced small writes fill the
// backend's window, the loop's write to it stops short with data in hand, and the hand-over
// must deliver those bytes to the backend, in order, not anywhere else.
func TestTCPSlowBackendGetsEverythingInOrder(t *testing.T) {
	bothRelays(t, func(t *testing.T, opts Options) {
		h := newHarness(t, opts)
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			// Inherited by accepted sockets: a small window from the first segment on.
			return rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		}}
		l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		received := make(chan []byte, 1)
		written := make(chan struct{})
		go func() {
			c, err := l.Accept()
			if err != nil {
				received <- nil
				return
			}
			defer c.Close()
			// Not a byte read until the client has written everything: the loop's writes
			// to this socket stop short long before.
			select {
			case <-written:
			case <-time.After(3 * time.Second):
			}
			got, _ := io.ReadAll(c)
			received <- got
			io.WriteString(c, "done\n")
		}()
		name := serviceName("sink", corev1.ProtocolTCP)
		sp := clusterIP(t, corev1.ProtocolTCP)
		h.set(name, sp, l.Addr().(*net.TCPAddr).AddrPort())
		c, err := net.Dial("tcp", addrOf(sp).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var payload []byte
		for i := range 1 << 19 {
			payload = append(payload, fmt.Sprintf("%07d\n", i)...)
		}
		for rest := payload; len(rest) > 0; {
			n := min(len(rest), 4096)
			if _, err := c.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
			time.Sleep(100 * time.Microsecond) // short reads, each relayed on its own
		}
		close(written)
		c.(*net.TCPConn).CloseWrite()
		answer, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if string(answer) != "done\n" {
			t.Errorf("the client got %d bytes back, want only the backend's answer: %.40q", len(answer), answer)
		}
		if got := <-received; !bytes.Equal(got, payload) {
			t.Fatalf("the backend got %d bytes, the client sent %d; first difference at %d", len(got), len(payload), firstDifference(got, payload))
		}
	})
}

// Stopping the proxy ends the connections it relays: the client sees its connection end at
// once rather than hang.
func TestTCPCloseEndsOpenConnections(t *testing.T) {
	bothRelays(t, func(t *testing.T, opts Options) {
		h := newHarness(t, opts)
		name := serviceName("echo", corev1.ProtocolTCP)
		sp := clusterIP(t, corev1.ProtocolTCP)
		h.set(name, sp, tcpBackend(t, "echo"))
		got, c := hello(t, addrOf(sp))
		if got != "echo" {
			t.Fatalf("got %q, want echo", got)
		}
		defer c.Close()
		if err := h.p.Close(); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the connection stayed open after Close")
		}
		if err == nil {
			t.Fatal("read data after Close")
		}
	})
}
