package userspace

import (
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The relay's system calls on the short-connection path, made without telling the Go
// scheduler (RawSyscall instead of Syscall).
//
// Why: on veth links a send runs the peer's whole receive path inside our system call, so a
// write or a FIN takes 10–30 µs. The runtime treats a goroutine inside a (non-raw) system call
// as possibly blocked: sysmon, polling every 20 µs while it keeps finding such calls, hands
// the goroutine's P to another thread (a futex wake-up and a thread switch), and the caller
// must get a P back when the call returns. In the profile of `Connection: close` load that was
// a tenth of the proxy's CPU per connection (sysmon and its sleeps, handoffs, thread
// wake-ups), which an event-loop proxy such as HAProxy does not pay. These calls never block
// (the sockets are non-blocking: EAGAIN sends the goroutine to the runtime poller through
// RawConn), so keeping the P for their duration is what an event loop does as well.

// rawRead reads from a non-blocking fd, retrying on EINTR.
func rawRead(fd uintptr, p []byte) (int, error) {
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// rawWrite writes what it can to a non-blocking socket, retrying on EINTR; EAGAIN is returned
// with the count written so far. send(2) with MSG_NOSIGNAL, so a peer's reset yields EPIPE
// without a signal to deliver.
func rawWrite(fd uintptr, p []byte) (int, error) {
	written := 0
	for written < len(p) {
		rest := p[written:]
		n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(rest))), uintptr(len(rest)),
			unix.MSG_NOSIGNAL, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return written, e
		}
		written += int(n)
	}
	return written, nil
}

// writeAll writes p to c, waiting in the runtime poller while the socket's buffer is full.
func writeAll(c *net.TCPConn, p []byte) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var writeErr error
	err = raw.Write(func(fd uintptr) bool {
		var n int
		n, writeErr = rawWrite(fd, p)
		p = p[n:]
		if writeErr == unix.EAGAIN {
			writeErr = nil
			return false // wait until writable, then go on
		}
		return true
	})
	if err != nil {
		return err
	}
	return writeErr
}

// shutdownWrite sends c's FIN (shutdown(SHUT_WR)).
func shutdownWrite(c *net.TCPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var sockErr error
	err = raw.Control(func(fd uintptr) {
		if _, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, fd, unix.SHUT_WR, 0); e != 0 {
			sockErr = e
		}
	})
	if err != nil {
		return err
	}
	return sockErr
}

func rawClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

func rawShutdownWrite(fd int) {
	unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
}

func setsockoptRaw(fd, level, opt, value int) error {
	v := int32(value)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getsockoptRaw(fd, level, opt int) (int, error) {
	var v int32
	l := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return int(v), nil
}

// setLingerZero makes the next close reset the connection instead of ending it with a FIN.
func setLingerZero(fd int) {
	l := unix.Linger{Onoff: 1, Linger: 0}
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER, uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0)
}

// resetClose closes fd with a reset.
func resetClose(fd int) {
	setLingerZero(fd)
	rawClose(fd)
}
