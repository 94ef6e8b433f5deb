package announce

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Only the chosen node may answer ARP for a LoadBalancer address, but the kernel answers for
// every address it considers local, whatever interface the request came in on (arp_ignore 0).
// The userspace proxy makes the Service addresses local (routes in the local table), so every
// node would answer, and ext would send its traffic to whichever answered last. Two sysctls of
// the announcing interface, per network namespace, stop that (kube-proxy's IPVS mode sets the
// same pair for the same reason when strictARP is on):
//
//   - arp_ignore 1: answer only for addresses configured on the interface the request arrived
//     on, so the node still answers for its own --node-ip, and never for a Service address
//     (those are on no interface);
//   - arp_announce 2: the node's own ARP requests name the interface's address as sender, never
//     a Service address that a reply happens to come from, which would teach the neighbours
//     to send that address's traffic here.
var strictARPSysctls = []struct {
	name string
	min  int
}{
	{"arp_ignore", 1},
	{"arp_announce", 2},
}

// procSysNet is where the sysctls of the calling thread's network namespace are.
var procSysNet = "/proc/sys/net"

// ensureStrictARP raises the two sysctls of iface to their strict value unless they already
// are at least that (arp_ignore 2 also checks the sender's subnet, which is stricter still).
// It writes in the calling thread's network namespace only: the agent's. It returns what it
// changed, for the log.
func ensureStrictARP(iface string) ([]string, error) {
	if iface == "" || strings.ContainsAny(iface, "/") || iface == "." || iface == ".." {
		return nil, fmt.Errorf("invalid interface name %q", iface)
	}
	var changed []string
	for _, s := range strictARPSysctls {
		path := filepath.Join(procSysNet, "ipv4", "conf", iface, s.name)
		b, err := os.ReadFile(path)
		if err != nil {
			return changed, fmt.Errorf("reading net.ipv4.conf.%s.%s: %w", iface, s.name, err)
		}
		cur, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return changed, fmt.Errorf("reading net.ipv4.conf.%s.%s: %q is not a number", iface, s.name, b)
		}
		if cur >= s.min {
			continue
		}
		if err := os.WriteFile(path, []byte(strconv.Itoa(s.min)), 0o644); err != nil {
			return changed, fmt.Errorf("setting net.ipv4.conf.%s.%s=%d (needed so that only the announcing node answers ARP): %w", iface, s.name, s.min, err)
		}
		changed = append(changed, fmt.Sprintf("net.ipv4.conf.%s.%s=%d (was %d)", iface, s.name, s.min, cur))
	}
	return changed, nil
}
