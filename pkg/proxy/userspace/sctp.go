package userspace

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// errSCTPKernel says why SCTP Services get no listener on kernels built without SCTP sockets
// (CONFIG_IP_SCTP unset, as on the machine this was developed on): socket(2) with
// IPPROTO_SCTP fails with EPROTONOSUPPORT, so there is nothing a userspace proxy could
// listen with. The nftables mode still forwards SCTP there: NAT and conntrack for SCTP are
// separate kernel options from SCTP sockets.
var errSCTPKernel = errors.New("SCTP not supported by this kernel (no SCTP sockets); the nftables proxy mode can still forward it")

// sctpSockets reports whether the kernel lets this process open SCTP sockets. One probe
// answers for both families' Proxiers: the sctp module registers its IPv4 and IPv6 sockets
// together, and an IPv6 Proxier only runs where the namespace has IPv6.
var sctpSockets = sync.OnceValue(func() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
})

// unsupportedProtocol explains why a Service port of protocol is not served.
func unsupportedProtocol(protocol corev1.Protocol) error {
	if protocol == corev1.ProtocolSCTP && !sctpSockets() {
		return errSCTPKernel
	}
	return fmt.Errorf("protocol %s is not served by the userspace proxy mode; use --proxy-mode=nftables", protocol)
}
