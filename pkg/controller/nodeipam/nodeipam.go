// Package nodeipam gives every Node without one a pod CIDR: the next free /24 (by default) of
// the cluster CIDR, written to spec.podCIDR and spec.podCIDRs. CIDRs that Nodes already carry —
// including ones an agent asked for when registering (`svcplane agent --pod-cidr`) — are never
// handed out again. It is the range allocator of upstream's node-ipam controller, minus
// dual-stack and node deletion races, which a /16 of 256 nodes does not need.
package nodeipam

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
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

// ClusterCIDR and NodeMaskSize are `svcplane server --cluster-cidr` and
// `--node-cidr-mask-size`; package variables so the flags can reach the controller without a
// place in controller.Context.
var (
	ClusterCIDR  = "10.244.0.0/16"
	NodeMaskSize = 24
)

type allocator struct {
	c      controller.Context
	nodes  corelisters.NodeLister
	synced cache.InformerSynced
	queue  workqueue.TypedRateLimitingInterface[string]
	cidr   netip.Prefix
	mask   int
}

// New builds the controller.
func New(c controller.Context) (func(context.Context), error) {
	cidr, err := netip.ParsePrefix(ClusterCIDR)
	if err != nil || !cidr.Addr().Is4() {
		return nil, fmt.Errorf("--cluster-cidr %q: want an IPv4 CIDR", ClusterCIDR)
	}
	if NodeMaskSize < cidr.Bits() || NodeMaskSize > 30 {
		return nil, fmt.Errorf("--node-cidr-mask-size %d must be between the cluster CIDR's /%d and /30", NodeMaskSize, cidr.Bits())
	}
	inf := c.Informers.Core().V1().Nodes()
	a := &allocator{c: c, nodes: inf.Lister(), synced: inf.Informer().HasSynced, cidr: cidr.Masked(), mask: NodeMaskSize,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "node-ipam"})}
	enqueue := func(obj any) {
		if n, ok := obj.(*corev1.Node); ok && n.Spec.PodCIDR == "" {
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
	if err != nil || node.Spec.PodCIDR != "" {
		return err
	}
	all, err := a.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	var used []netip.Prefix
	for _, n := range all {
		for _, s := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
			if p, err := netip.ParsePrefix(s); err == nil {
				used = append(used, p.Masked())
			}
		}
	}
	cidr, ok := NextFree(a.cidr, a.mask, used)
	if !ok {
		return fmt.Errorf("cluster CIDR %s has no free /%d left", a.cidr, a.mask)
	}
	node = node.DeepCopy()
	node.Spec.PodCIDR = cidr.String()
	node.Spec.PodCIDRs = []string{cidr.String()}
	if _, err := a.c.Client.CoreV1().Nodes().Update(ctx, node, metav1UpdateOptions); err != nil {
		// A conflict means the informer is behind (or the agent set a CIDR): retry from it.
		return fmt.Errorf("assigning %s to node %s: %w", cidr, name, err)
	}
	klog.InfoS("assigned pod CIDR", "node", name, "podCIDR", cidr)
	return nil
}

// NextFree returns the first /mask subnet of cluster that overlaps none of used. Subnet 0 is
// handed out last, so that numbering matches the sandbox's (node N has 10.244.N.0/24).
func NextFree(cluster netip.Prefix, mask int, used []netip.Prefix) (netip.Prefix, bool) {
	sort.Slice(used, func(i, j int) bool { return used[i].Addr().Less(used[j].Addr()) })
	count := 1 << (mask - cluster.Bits())
	base := cluster.Masked().Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	step := uint32(1) << (32 - mask)
	candidate := func(i int) netip.Prefix {
		v := start + uint32(i)*step
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), mask)
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
