package nftables

import (
	"net/netip"

	vnl "github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/proxy"
)

// Conntrack forgets UDP flows that were DNATed to endpoints that are gone. UDP has no
// connection end: without this, a client that keeps sending (DNS, most games) stays pinned by
// its conntrack entry to a dead endpoint for as long as it keeps sending. TCP needs nothing:
// the dead endpoint's resets (or timeouts) end the connection and the next one is new.
type Conntrack interface {
	// DeleteUDPTo deletes the UDP flows whose replies come from any of targets.
	DeleteUDPTo(family corev1.IPFamily, targets []netip.AddrPort) (uint, error)
}

// netlinkConntrack is Conntrack over a netlink handle opened in the node's namespace.
type netlinkConntrack struct{ h *vnl.Handle }

type replySourceFilter map[netip.AddrPort]bool

// MatchConntrackFlow matches UDP flows whose reply direction starts at a target: the
// endpoint a Service address was translated to.
func (f replySourceFilter) MatchConntrackFlow(flow *vnl.ConntrackFlow) bool {
	if flow.Forward.Protocol != 17 {
		return false
	}
	ip, ok := netip.AddrFromSlice(flow.Reverse.SrcIP)
	return ok && f[netip.AddrPortFrom(ip.Unmap(), flow.Reverse.SrcPort)]
}

func (c netlinkConntrack) DeleteUDPTo(family corev1.IPFamily, targets []netip.AddrPort) (uint, error) {
	f := replySourceFilter{}
	for _, t := range targets {
		f[t] = true
	}
	fam := vnl.InetFamily(vnl.FAMILY_V4)
	if family == corev1.IPv6Protocol {
		fam = vnl.InetFamily(vnl.FAMILY_V6)
	}
	return c.h.ConntrackDeleteFilters(vnl.ConntrackTable, fam, f)
}

// flushStaleUDP deletes the conntrack entries of UDP endpoints that snap removed. Failures
// are logged, not returned: the rules are already right, and a stale flow ends on its own
// once the client pauses for conntrack's UDP timeout.
func (p *Proxier) flushStaleUDP(snap *proxy.Snapshot) {
	if p.conntrack == nil {
		return
	}
	var targets []netip.AddrPort
	for name, eps := range snap.RemovedEndpoints {
		if name.Protocol != corev1.ProtocolUDP {
			continue
		}
		for _, e := range eps {
			targets = append(targets, e.AddrPort())
		}
	}
	if len(targets) == 0 {
		return
	}
	n, err := p.conntrack.DeleteUDPTo(p.cfg.Family, targets)
	if err != nil {
		klog.ErrorS(err, "flushing conntrack entries of removed UDP endpoints", "endpoints", len(targets))
		return
	}
	klog.V(2).InfoS("flushed conntrack entries of removed UDP endpoints", "endpoints", len(targets), "entries", n)
}
