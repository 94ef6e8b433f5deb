// Package nodeipam gives every Node without one a pod CIDR per cluster CIDR: the next free /24
// (IPv4) or /64 (IPv6) of each, written to spec.podCIDRs in the order of --cluster-cidr, with
// spec.podCIDR the first. CIDRs that Nodes already carry — including ones an agent asked for
// when registering (`svcplane agent --pod-cidr`) — are never handed out again. It is the range
// allocator of upstream's node-ipam controller, minus node deletion races, which a /16 of 256
// nodes does not need.
//
// As upstream, a Node whose podCIDRs are set is never changed: adding an IPv6 range to a
// running IPv4 cluster gives IPv6 pod CIDRs to new Nodes only. Existing Nodes get theirs when
// they are deleted and register again.
package nodeipam

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/controller"
)

// ClusterCIDR, NodeMaskSize and NodeMaskSizeIPv6 are `svcplane server --cluster-cidr` and the
// per-family node CIDR sizes (upstream's --node-cidr-mask-size-ipv4 and -ipv6 defaults);
// package variables so the flags can reach the controller without a place in
// controller.Context.
var (
	ClusterCIDR      = "10.244.0.0/16"
	NodeMaskSize     = 24
	NodeMaskSizeIPv6 = 64
)

// maxSubnetBits bounds how many node CIDRs an IPv6 cluster CIDR is cut into (2^16), as
// upstream's CIDR sets do: a /48 cut into /64s is the most, not a /32 cut into 2^32 of them.
const maxSubnetBits = 16

// pool is one IP family's cluster CIDR and the size of the node CIDRs cut from it.
type pool struct {
	cidr netip.Prefix
	mask int
}

type allocator struct {
	c      controller.Context
	nodes  corelisters.NodeLister
	synced cache.InformerSynced
	queue  workqueue.TypedRateLimitingInterface[string]
	pools  []pool // in --cluster-cidr order: the first is every Node's spec.podCIDR
}

// ParseClusterCIDRs reads --cluster-cidr: one CIDR, or two of different IP families in either
// order (upstream kube-controller-manager's rule; the first one's family is the Nodes' primary).
func ParseClusterCIDRs(value string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(value, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--cluster-cidr %q: %q is not a CIDR", value, s)
		}
		out = append(out, p.Masked())
	}
	switch {
	case len(out) > 2:
		return nil, fmt.Errorf("--cluster-cidr %q: at most two CIDRs, one IPv4 and one IPv6", value)
	case len(out) == 2 && out[0].Addr().Is4() == out[1].Addr().Is4():
		return nil, fmt.Errorf("--cluster-cidr %q: two CIDRs must be one IPv4 and one IPv6", value)
	}
	return out, nil
}

// newPools pairs each cluster CIDR with its family's node mask size and checks the sizes.
func newPools(cidrs []netip.Prefix, maskV4, maskV6 int) ([]pool, error) {
	var pools []pool
	var errs []error
	for _, cidr := range cidrs {
		mask, maxMask, flag := maskV4, 30, "--node-cidr-mask-size"
		if cidr.Addr().Is6() {
			// A /64 is the smallest subnet SLAAC and most IPv6 tooling expect; smaller ones work
			// for the agent's own allocation, so only the address size bounds it.
			mask, maxMask, flag = maskV6, 126, "--node-cidr-mask-size-ipv6"
		}
		switch {
		case mask < cidr.Bits() || mask > maxMask:
			errs = append(errs, fmt.Errorf("%s %d must be between the cluster CIDR %s's /%d and /%d", flag, mask, cidr, cidr.Bits(), maxMask))
		case cidr.Addr().Is6() && mask-cidr.Bits() > maxSubnetBits:
			errs = append(errs, fmt.Errorf("%s %d cuts the cluster CIDR %s into more than 2^%d node CIDRs: use a longer cluster CIDR or a shorter mask", flag, mask, cidr, maxSubnetBits))
		}
		pools = append(pools, pool{cidr: cidr, mask: mask})
	}
	return pools, errors.Join(errs...)
}

// ValidateFlags checks ClusterCIDR and the mask sizes, so the server can refuse bad flags
// before it starts anything.
func ValidateFlags() error {
	_, err := poolsFromFlags()
	return err
}

func poolsFromFlags() ([]pool, error) {
	cidrs, err := ParseClusterCIDRs(ClusterCIDR)
	if err != nil {
		return nil, err
	}
	return newPools(cidrs, NodeMaskSize, NodeMaskSizeIPv6)
}

// New builds the controller.
func New(c controller.Context) (func(context.Context), error) {
	pools, err := poolsFromFlags()
	if err != nil {
		return nil, err
	}
	inf := c.Informers.Core().V1().Nodes()
	a := &allocator{c: c, nodes: inf.Lister(), synced: inf.Informer().HasSynced, pools: pools,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "node-ipam"})}
	enqueue := func(obj any) {
		if n, ok := obj.(*corev1.Node); ok && needsCIDRs(n) {
			a.queue.Add(n.Name)
		}
	}
	_, err = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }})
	return a.run, err
}

func (a *allocator) run(ctx context.Context) {
	defer a.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), a.synced) {
		return
	}
	// One worker: allocation reads every Node's CIDR and must not race itself.
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for {
			name, quit := a.queue.Get()
			if quit {
				return
			}
			if err := a.sync(ctx, name); err != nil {
				klog.ErrorS(err, "assigning a pod CIDR", "node", name)
				a.queue.AddRateLimited(name)
			} else {
				a.queue.Forget(name)
			}
			a.queue.Done(name)
		}
	}, time.Second)
	<-ctx.Done()
}

func (a *allocator) sync(ctx context.Context, name string) error {
	node, err := a.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil || !needsCIDRs(node) {
		return err
	}
	all, err := a.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	cidrs, err := allocate(a.pools, usedCIDRs(all))
	if err != nil {
		return err
	}
	node = node.DeepCopy()
	node.Spec.PodCIDR = cidrs[0]
	node.Spec.PodCIDRs = cidrs
	if _, err := a.c.Client.CoreV1().Nodes().Update(ctx, node, metav1UpdateOptions); err != nil {
		// A conflict means the informer is behind (or the agent set a CIDR): retry from it.
		return fmt.Errorf("assigning %v to node %s: %w", cidrs, name, err)
	}
	klog.InfoS("assigned pod CIDRs", "node", name, "podCIDRs", cidrs)
	return nil
}

// needsCIDRs: as upstream, only a Node without any pod CIDR gets some; one that has them keeps
// them as they are, even if it lacks a family the cluster has since gained.
func needsCIDRs(n *corev1.Node) bool {
	return n.Spec.PodCIDR == "" && len(n.Spec.PodCIDRs) == 0
}

// usedCIDRs lists every pod CIDR the Nodes carry, of either family.
func usedCIDRs(nodes []*corev1.Node) []netip.Prefix {
	var used []netip.Prefix
	for _, n := range nodes {
		for _, s := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
			if p, err := netip.ParsePrefix(s); err == nil {
				used = append(used, p.Masked())
			}
		}
	}
	return used
}

// allocate picks the next free node CIDR of every pool, in pool order; it fails if any pool
// is full, so a Node never gets some families and not others.
func allocate(pools []pool, used []netip.Prefix) ([]string, error) {
	var out []string
	for _, p := range pools {
		cidr, ok := NextFree(p.cidr, p.mask, used)
		if !ok {
			return nil, fmt.Errorf("cluster CIDR %s has no free /%d left", p.cidr, p.mask)
		}
		out = append(out, cidr.String())
	}
	return out, nil
}

// NextFree returns the first /mask subnet of cluster that overlaps none of used (prefixes of
// the other family never overlap). Subnet 0 is handed out last, so that numbering matches the
// sandbox's (node N has 10.244.N.0/24 and fd00:244:0:N::/64).
func NextFree(cluster netip.Prefix, mask int, used []netip.Prefix) (netip.Prefix, bool) {
	sort.Slice(used, func(i, j int) bool { return used[i].Addr().Less(used[j].Addr()) })
	count := 1 << (mask - cluster.Bits())
	start := new(big.Int).SetBytes(cluster.Masked().Addr().AsSlice())
	bitLen := cluster.Addr().BitLen()
	candidate := func(i int) netip.Prefix {
		v := new(big.Int).Lsh(big.NewInt(int64(i)), uint(bitLen-mask))
		v.Add(v, start)
		b := v.FillBytes(make([]byte, bitLen/8))
		addr, _ := netip.AddrFromSlice(b)
		return netip.PrefixFrom(addr, mask)
	}
	free := func(p netip.Prefix) bool {
		for _, u := range used {
			if u.Overlaps(p) {
				return false
			}
		}
		return true
	}
	for i := 1; i < count; i++ {
		if p := candidate(i); free(p) {
			return p, true
		}
	}
	if p := candidate(0); free(p) {
		return p, true
	}
	return netip.Prefix{}, false
}

var metav1UpdateOptions = metav1.UpdateOptions{FieldManager: "node-ipam-controller"}
