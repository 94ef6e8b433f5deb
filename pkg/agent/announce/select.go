// Package announce makes LoadBalancer addresses reachable on the node network in L2 mode: for
// every address in a LoadBalancer Service's status.loadBalancer.ingress (ipMode VIP or unset)
// exactly one node, chosen the same way by every agent from the API's Nodes, Services and
// EndpointSlices and from which agents are alive, answers ARP requests (IPv4) or Neighbor
// Solicitations (IPv6, ndp.go) for it with the MAC of its node interface (the one holding
// --node-ip), and sends a gratuitous ARP or an unsolicited Neighbor Advertisement when it takes
// an address over. The proxy on that node then accepts the traffic. Agents learn who is alive
// from each other's beacons on that interface (beacon.go), so an address moves within about a
// second when its node's agent dies, at once when it stops cleanly.
package announce

import (
	"cmp"
	"crypto/sha256"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
)

// chooseNode picks the node announcing ip among candidates by rendezvous hashing: the node
// whose hash of (ip, name) is highest. Every agent computing it over the same candidates picks
// the same node, and a node leaving only moves the addresses it held. "" when there is none.
func chooseNode(ip netip.Addr, candidates []string) string {
	var best string
	var bestScore [sha256.Size]byte
	for _, name := range candidates {
		h := sha256.New()
		b := ip.As16()
		h.Write(b[:])
		h.Write([]byte(name))
		var score [sha256.Size]byte
		copy(score[:], h.Sum(nil))
		if best == "" || slices.Compare(score[:], bestScore[:]) > 0 || (score == bestScore && name < best) {
			best, bestScore = name, score
		}
	}
	return best
}

// nodeReady says whether node may announce at now, as far as the API tells: Ready is True and
// its heartbeat is younger than grace (nothing in svcplane turns a silent Node NotReady). A
// stopped agent is noticed far sooner by its missing beacons; this covers a node whose agent
// still beacons but no longer reaches the API server.
func nodeReady(node *corev1.Node, now time.Time, grace time.Duration) bool {
	if node.DeletionTimestamp != nil {
		return false
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue && now.Sub(c.LastHeartbeatTime.Time) < grace
		}
	}
	return false
}

// announcedIPs are the addresses of svc that L2 announcement serves: IPv4 by ARP, IPv6 by NDP.
func announcedIPs(svc *corev1.Service) []netip.Addr {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return nil
	}
	if c := svc.Spec.LoadBalancerClass; c != nil && *c != svcplanev1.LoadBalancerClass {
		return nil
	}
	var ips []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IPMode != nil && *in.IPMode != corev1.LoadBalancerIPModeVIP {
			continue
		}
		ip, err := netip.ParseAddr(in.IP)
		if err != nil || ip.Is4In6() || ip.Zone() != "" || ip.IsMulticast() || ip.IsUnspecified() {
			continue
		}
		ips = append(ips, ip)
	}
	return ips
}

// localEndpointNodes are the nodes with a ready endpoint in slices (one Service's).
func localEndpointNodes(slices []*discoveryv1.EndpointSlice) map[string]bool {
	nodes := map[string]bool{}
	for _, s := range slices {
		for _, ep := range s.Endpoints {
			if ep.NodeName == nil || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			nodes[*ep.NodeName] = true
		}
	}
	return nodes
}

// State is what the whole cluster looks like to the selection.
type State struct {
	Services []*corev1.Service
	// Slices are the EndpointSlices by "namespace/service".
	Slices     map[string][]*discoveryv1.EndpointSlice
	ReadyNodes []string
}

// Assignments maps every announced address to the node announcing it. An address shared by
// several Services (allow-shared-ip) goes to the node chosen for its first Service by
// namespace/name that has a candidate, so that exactly one node answers for it.
func Assignments(st State) map[netip.Addr]string {
	services := slices.Clone(st.Services)
	slices.SortFunc(services, func(a, b *corev1.Service) int {
		if c := cmp.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	ready := slices.Clone(st.ReadyNodes)
	slices.Sort(ready)
	out := map[netip.Addr]string{}
	for _, svc := range services {
		ips := announcedIPs(svc)
		if len(ips) == 0 {
			continue
		}
		candidates := ready
		if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
			local := localEndpointNodes(st.Slices[svc.Namespace+"/"+svc.Name])
			candidates = nil
			for _, n := range ready {
				if local[n] {
					candidates = append(candidates, n)
				}
			}
		}
		for _, ip := range ips {
			if _, done := out[ip]; done {
				continue
			}
			if node := chooseNode(ip, candidates); node != "" {
				out[ip] = node
			}
		}
	}
	return out
}
