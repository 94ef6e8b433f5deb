package topology

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// openNamespace opens a handle to a namespace of ours, refusing the host's own namespace: a
// missing or mis-mounted namespace file must never turn a change meant for a sandbox into a
// change of the host.
func openNamespace(ns string) (netns.NsHandle, error) {
	h, err := netns.GetFromPath(filepath.Join(netnsDir, ns))
	if err != nil {
		return netns.None(), fmt.Errorf("opening network namespace %s (is the sandbox up?): %w", ns, err)
	}
	host, err := hostNamespace()
	if err != nil {
		h.Close()
		return netns.None(), err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		h.Close()
		return netns.None(), fmt.Errorf("inspecting network namespace %s: %w", ns, err)
	}
	if (nsID{dev: st.Dev, ino: st.Ino}) == host {
		h.Close()
		return netns.None(), fmt.Errorf("refusing to use %s: it is the host's own network namespace", ns)
	}
	return h, nil
}

// Do runs fn on an OS thread that is inside network namespace ns. Sockets fn creates stay in
// ns for their whole life, so fn may return them for use on any goroutine. fn must not start
// goroutines that expect to be in ns: only its own thread is.
func Do(ns string, fn func() error) error {
	target, err := openNamespace(ns)
	if err != nil {
		return err
	}
	defer target.Close()
	enter := func() error {
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("entering network namespace %s: %w", ns, err)
		}
		return nil
	}
	return onThreadIn(enter, fn)
}

// Dial connects from inside namespace ns. The address must be an IP literal: resolving a host
// name would consult the host's resolver configuration from inside the sandbox.
func Dial(ctx context.Context, ns, network, address string) (net.Conn, error) {
	if err := requireIPLiteral(address); err != nil {
		return nil, err
	}
	var conn net.Conn
	err := Do(ns, func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		conn = c
		return err
	})
	return conn, err
}

// Listen opens a stream listener inside namespace ns.
func Listen(ns, network, address string) (net.Listener, error) {
	var ln net.Listener
	err := Do(ns, func() error {
		l, err := net.Listen(network, address)
		ln = l
		return err
	})
	return ln, err
}

// ListenPacket opens a packet socket (UDP, or raw IP such as "ip4:icmp") inside namespace ns.
func ListenPacket(ns, network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := Do(ns, func() error {
		c, err := net.ListenPacket(network, address)
		pc = c
		return err
	})
	return pc, err
}

// Command returns a command that runs name inside namespace ns. It uses `ip netns exec`, which
// also gives the command a /sys that shows the namespace's own interfaces.
func Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Netlink returns a netlink handle whose sockets live in namespace ns. Close it when done.
func Netlink(ns string) (*netlink.Handle, error) {
	target, err := openNamespace(ns)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	h, err := netlink.NewHandleAt(target, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink in %s: %w", ns, err)
	}
	return h, nil
}

// RouteGet asks namespace ns's kernel which route it would use towards dst, without sending
// anything. An address with no route gives an error (ENETUNREACH).
func RouteGet(ns string, dst netip.Addr) ([]netlink.Route, error) {
	h, err := Netlink(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	routes, err := h.RouteGet(dst.AsSlice())
	if err != nil {
		return nil, fmt.Errorf("route lookup for %s in %s: %w", dst, ns, err)
	}
	return routes, nil
}

func requireIPLiteral(address string) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("parsing address %q: %w", address, err)
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("address %q: use an IP address, not a host name, inside a sandbox namespace", address)
	}
	return nil
}
