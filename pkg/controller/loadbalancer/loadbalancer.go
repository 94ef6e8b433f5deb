// Package loadbalancer gives `type: LoadBalancer` Services their external addresses: it assigns
// status.loadBalancer.ingress[].ip (one per IP family of the Service) from LoadBalancerIPPools
// (svcplane.io/v1), honours requested addresses, shares an address between Services that opt in,
// releases addresses on delete or type change, and explains with Events why a Service is pending.
//
// Services and Namespaces come from the shared informers, pools from a dynamic informer (there is
// no generated clientset for svcplane.io); the controller writes only Services' and pools' status
// and Events. Which Service holds which address is derived from Services' status alone (see
// allocator), rebuilt whenever this controller becomes the active one.
//
// With several API servers, each runs this controller, and the one whose advertise address is
// the lowest in the `kubernetes` Endpoints acts (see isActive). Those Endpoints are kept from etcd
// leases by every server, so the choice needs no lock of its own and moves within a lease's TTL
// when that server goes away. While two briefly both act, status writes carry the cached
// resourceVersion, so neither overwrites what it has not seen, and a double claim of one address
// is settled by age, the same way by both.
package loadbalancer

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/svcplane/svcplane/pkg/api/validation"
	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
	"github.com/svcplane/svcplane/pkg/controller"
	"github.com/svcplane/svcplane/pkg/controller/internal/workloop"
)

// Event reasons, for `kubectl describe svc`.
const (
	ReasonIPAllocated      = "IPAllocated"
	ReasonAllocationFailed = "AllocationFailed"
	ReasonIPReleased       = "IPReleased"
)

// Queue keys other than Services' namespace/name (which always contain a slash).
const (
	keyLeader = "leader" // recheck which controller acts
	keyPools  = "pools"  // reload the pools
	keyStatus = "status" // recount the pools' status
)

var poolsResource = svcplanev1.SchemeGroupVersion.WithResource("loadbalancerippools")

// Options configure the controller.
type Options struct {
	// DefaultPool are the addresses of the pool named "default" (`svcplane server --lb-pool`),
	// created or updated at start. Empty leaves any stored default pool alone.
	DefaultPool []string
	// Identity is this server's advertise address, which decides whether this controller is the
	// one that acts. Empty means always act.
	Identity string
}

// Controller assigns LoadBalancer addresses.
type Controller struct {
	client      kubernetes.Interface
	pools       dynamic.NamespaceableResourceInterface
	services    corelisters.ServiceLister
	namespaces  corelisters.NamespaceLister
	endpoints   corelisters.EndpointsLister
	poolLister  cache.GenericLister
	poolFactory dynamicinformer.DynamicSharedInformerFactory
	synced      []cache.InformerSynced
	queue       workqueue.TypedRateLimitingInterface[string]
	recorder    *controller.Events
	opts        Options

	// Owned by the single worker.
	alloc   *allocator
	active  bool
	pending map[string]bool // Services missing an address: retried when one frees
	counts  map[string][2]int64
}

// New returns the controller's registration function.
func New(o Options) func(controller.Context) (func(context.Context), error) {
	return func(c controller.Context) (func(context.Context), error) {
		ctrl, err := newController(c, o)
		if err != nil {
			return nil, err
		}
		return ctrl.Run, nil
	}
}

func newController(c controller.Context, o Options) (*Controller, error) {
	workloop.RegisterMetrics()
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	services := c.Informers.Core().V1().Services()
	namespaces := c.Informers.Core().V1().Namespaces()
	endpoints := c.Informers.Core().V1().Endpoints()
	poolFactory := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	pools := poolFactory.ForResource(poolsResource)
	ctrl := &Controller{
		client:      c.Client,
		pools:       dyn.Resource(poolsResource),
		services:    services.Lister(),
		namespaces:  namespaces.Lister(),
		endpoints:   endpoints.Lister(),
		poolLister:  pools.Lister(),
		poolFactory: poolFactory,
		synced: []cache.InformerSynced{services.Informer().HasSynced, namespaces.Informer().HasSynced,
			endpoints.Informer().HasSynced, pools.Informer().HasSynced},
		queue:    workloop.NewQueue("loadbalancer"),
		recorder: controller.NewEvents(c.Client, "loadbalancer-controller"),
		opts:     o,
		alloc:    newAllocator(),
		pending:  map[string]bool{},
		counts:   map[string][2]int64{},
	}
	enqueueService := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			ctrl.queue.Add(key)
		}
	}
	// Most Services are not LoadBalancers and never were; at 10k Services their events would
	// only be queued to find nothing to do.
	if _, err := services.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if concerns(obj) {
				enqueueService(obj)
			}
		},
		UpdateFunc: func(old, obj any) {
			if concerns(old) || concerns(obj) {
				enqueueService(obj)
			}
		},
		DeleteFunc: enqueueService,
	}); err != nil {
		return nil, err
	}
	poolChanged := func(any) { ctrl.queue.Add(keyPools) }
	if _, err := pools.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poolChanged, UpdateFunc: func(old, obj any) {
			// The controller's own status writes come back here; only spec changes matter.
			if poolGeneration(old) != poolGeneration(obj) {
				poolChanged(obj)
			}
		}, DeleteFunc: poolChanged,
	}); err != nil {
		return nil, err
	}
	leaderChanged := func(obj any) {
		if ep, ok := obj.(*corev1.Endpoints); ok && ep.Namespace == metav1.NamespaceDefault && ep.Name == "kubernetes" {
			ctrl.queue.Add(keyLeader)
		}
	}
	if _, err := endpoints.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: leaderChanged, UpdateFunc: func(_, obj any) { leaderChanged(obj) }, DeleteFunc: leaderChanged,
	}); err != nil {
		return nil, err
	}
	// Pools with a namespaceSelector depend on namespace labels.
	if _, err := namespaces.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(old, obj any) {
			if !labels.Equals(old.(*corev1.Namespace).Labels, obj.(*corev1.Namespace).Labels) {
				ctrl.queue.Add(keyPools)
			}
		},
	}); err != nil {
		return nil, err
	}
	return ctrl, nil
}

// concerns reports whether a Service event may matter here: a LoadBalancer, or a Service still
// carrying load-balancer addresses (e.g. just changed to another type).
func concerns(obj any) bool {
	svc, ok := obj.(*corev1.Service)
	return ok && (svc.Spec.Type == corev1.ServiceTypeLoadBalancer || len(svc.Status.LoadBalancer.Ingress) > 0)
}

func poolGeneration(obj any) int64 {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		return u.GetGeneration()
	}
	return -1
}

// Run syncs until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	defer c.recorder.Start()()
	c.poolFactory.Start(ctx.Done())
	defer c.poolFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	if len(c.opts.DefaultPool) > 0 {
		go c.ensureDefaultPool(ctx)
	}
	c.queue.Add(keyLeader)
	// One worker: the allocator is a single in-memory view, and a sync is one status write.
	loop := &workloop.Loop{Name: "loadbalancer", Workers: 1, Queue: c.queue, Sync: c.sync}
	loop.Run(ctx)
}

func (c *Controller) sync(ctx context.Context, key string) error {
	switch key {
	case keyLeader:
		return c.syncLeader()
	case keyPools:
		return c.syncPools()
	case keyStatus:
		return c.syncPoolStatus(ctx)
	}
	if !c.active {
		return nil
	}
	return c.syncService(ctx, key)
}

// isActive reports whether this controller should act: its server's advertise address is the
// lowest of the live API servers in the `kubernetes` Endpoints. A server that is not published
// there (loopback address, or not registered yet) acts only when nobody is published.
func (c *Controller) isActive() bool {
	if c.opts.Identity == "" {
		return true
	}
	me, err := netip.ParseAddr(c.opts.Identity)
	if err != nil {
		return true
	}
	ep, err := c.endpoints.Endpoints(metav1.NamespaceDefault).Get("kubernetes")
	if err != nil {
		return true
	}
	var live []netip.Addr
	for _, s := range ep.Subsets {
		for _, a := range s.Addresses {
			if ip, err := netip.ParseAddr(a.IP); err == nil {
				live = append(live, ip)
			}
		}
	}
	if len(live) == 0 {
		return true
	}
	return slices.Contains(live, me) && slices.MinFunc(live, netip.Addr.Compare) == me
}

func (c *Controller) syncLeader() error {
	active := c.isActive()
	if active == c.active {
		return nil
	}
	c.active = active
	klog.InfoS("LoadBalancer controller changed role", "active", active, "identity", c.opts.Identity)
	if active {
		// Another controller may have changed everything meanwhile: start from the statuses.
		return c.rebuild()
	}
	return nil
}

// rebuild derives the allocator from the pools and every Service's status, oldest Service first,
// then queues every Service.
func (c *Controller) rebuild() error {
	c.alloc = newAllocator()
	c.pending = map[string]bool{}
	if err := c.loadPools(); err != nil {
		return err
	}
	svcs, err := c.services.List(labels.Everything())
	if err != nil {
		return err
	}
	slices.SortFunc(svcs, func(a, b *corev1.Service) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for _, svc := range svcs {
		if ours(svc) {
			req, _ := c.requestFor(svc)
			c.alloc.claim(req)
		}
		if concerns(svc) {
			c.queue.Add(svc.Namespace + "/" + svc.Name)
		}
	}
	c.queue.AddAfter(keyStatus, 100*time.Millisecond)
	return nil
}

func (c *Controller) loadPools() error {
	objs, err := c.poolLister.List(labels.Everything())
	if err != nil {
		return err
	}
	var pools []*pool
	for _, obj := range objs {
		p, err := toPool(obj)
		if err != nil {
			return err
		}
		parsed, err := newPool(p)
		if err != nil {
			klog.ErrorS(err, "Ignoring LoadBalancerIPPool", "pool", p.Name)
			continue
		}
		pools = append(pools, parsed)
	}
	c.alloc.setPools(pools)
	return nil
}

func toPool(obj runtime.Object) (*svcplanev1.LoadBalancerIPPool, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected %T in the pool informer", obj)
	}
	p := &svcplanev1.LoadBalancerIPPool{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, p); err != nil {
		return nil, fmt.Errorf("reading LoadBalancerIPPool %s: %w", u.GetName(), err)
	}
	return p, nil
}

// syncPools takes in changed pools and syncs every Service again: a Service may have lost its
// pool, or a pending one may now have one.
func (c *Controller) syncPools() error {
	if !c.active {
		return nil
	}
	if err := c.loadPools(); err != nil {
		return err
	}
	svcs, err := c.services.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, svc := range svcs {
		if concerns(svc) {
			c.queue.Add(svc.Namespace + "/" + svc.Name)
		}
	}
	c.queue.AddAfter(keyStatus, 100*time.Millisecond)
	return nil
}

// syncPoolStatus writes each pool's counts when they changed.
func (c *Controller) syncPoolStatus(ctx context.Context) error {
	if !c.active {
		return nil
	}
	objs, err := c.poolLister.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, obj := range objs {
		p, err := toPool(obj)
		if err != nil {
			return err
		}
		parsed, err := newPool(p)
		if err != nil {
			continue
		}
		assigned, available := c.alloc.counts(parsed)
		if p.Status.Assigned == assigned && p.Status.Available == available && p.Status.ObservedGeneration == p.Generation {
			continue
		}
		p.Status = svcplanev1.LoadBalancerIPPoolStatus{Assigned: assigned, Available: available, ObservedGeneration: p.Generation}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
		if err != nil {
			return err
		}
		obj := &unstructured.Unstructured{Object: u}
		obj.SetAPIVersion(svcplanev1.SchemeGroupVersion.String())
		obj.SetKind("LoadBalancerIPPool")
		if _, err := c.pools.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("updating the status of LoadBalancerIPPool %s: %w", p.Name, err)
		}
	}
	return nil
}

// ours reports whether the Service is a LoadBalancer this controller implements: no class (we are
// the cluster's default implementation) or ours.
func ours(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	return svc.Spec.LoadBalancerClass == nil || *svc.Spec.LoadBalancerClass == svcplanev1.LoadBalancerClass
}

func (c *Controller) syncService(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	svc, err := c.services.Services(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		delete(c.pending, key)
		c.released(c.alloc.release(key))
		return nil
	}
	if err != nil {
		return err
	}
	if !ours(svc) {
		delete(c.pending, key)
		freed := c.alloc.release(key)
		c.released(freed)
		return c.clearStaleStatus(ctx, svc, freed)
	}

	before := c.alloc.byService[key]
	req, problems := c.requestFor(svc)
	var res result
	if len(problems) == 0 {
		res = c.alloc.assign(req)
		problems = res.problems
	} else {
		// The user asked for something specific and got it wrong: hand out nothing else.
		c.alloc.release(key)
	}
	for _, k := range res.evicted {
		c.queue.Add(k)
	}
	c.released(slices.ContainsFunc(before, func(ip netip.Addr) bool { return !slices.Contains(res.ips, ip) }))

	if err := c.writeIngress(ctx, svc, req, res); err != nil {
		return err
	}
	if len(problems) > 0 {
		c.pending[key] = true
		c.recorder.Eventf(svc, corev1.EventTypeWarning, ReasonAllocationFailed, "Failed to allocate IP for %q: %s",
			key, strings.Join(problems, "; "))
	} else {
		delete(c.pending, key)
	}
	c.queue.AddAfter(keyStatus, 100*time.Millisecond)
	return nil
}

// writeIngress makes the Service's status name res.ips, keeping entries it already has for them
// (an ipMode: Proxy set by the user or another component stays).
func (c *Controller) writeIngress(ctx context.Context, svc *corev1.Service, req *request, res result) error {
	var ingress []corev1.LoadBalancerIngress
	var added []string
	for _, ip := range res.ips {
		i := slices.IndexFunc(svc.Status.LoadBalancer.Ingress, func(in corev1.LoadBalancerIngress) bool { return in.IP == ip.String() })
		if i >= 0 {
			ingress = append(ingress, svc.Status.LoadBalancer.Ingress[i])
			continue
		}
		ingress = append(ingress, corev1.LoadBalancerIngress{IP: ip.String(), IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)})
		added = append(added, ip.String())
	}
	if ingressIPsEqual(svc.Status.LoadBalancer.Ingress, ingress) {
		return nil
	}
	var lost []string
	for _, ip := range req.current {
		if !slices.Contains(res.ips, ip) {
			lost = append(lost, ip.String())
		}
	}
	update := svc.DeepCopy()
	update.Status.LoadBalancer.Ingress = ingress
	// The cached resourceVersion is the precondition: a Service changed since is synced again.
	if _, err := c.client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, update, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating the load-balancer status of Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	if len(lost) > 0 {
		c.recorder.Eventf(svc, corev1.EventTypeNormal, ReasonIPReleased,
			"Released IP %s: no longer requested, no longer in a pool that selects this Service, or held by an older Service", strings.Join(lost, ","))
	}
	if len(added) > 0 {
		c.recorder.Eventf(svc, corev1.EventTypeNormal, ReasonIPAllocated, "Assigned IP %s from pool %s", strings.Join(added, ","), strings.Join(slices.Compact(slices.Clone(res.pools)), ","))
	}
	return nil
}

func ingressIPsEqual(a, b []corev1.LoadBalancerIngress) bool {
	return slices.EqualFunc(a, b, func(x, y corev1.LoadBalancerIngress) bool { return x.IP == y.IP && x.Hostname == y.Hostname })
}

// clearStaleStatus empties the load-balancer status of a Service that stopped being a
// LoadBalancer (type changed) when it holds our addresses. A foreign-class LoadBalancer is never
// touched: its status belongs to its implementation.
func (c *Controller) clearStaleStatus(ctx context.Context, svc *corev1.Service, held bool) error {
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer || len(svc.Status.LoadBalancer.Ingress) == 0 {
		return nil
	}
	var ips []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		ip, err := netip.ParseAddr(in.IP)
		if err == nil && (held || c.inAnyPool(ip)) {
			ips = append(ips, in.IP)
		}
	}
	if len(ips) == 0 {
		return nil
	}
	update := svc.DeepCopy()
	update.Status.LoadBalancer = corev1.LoadBalancerStatus{}
	if _, err := c.client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, update, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("clearing the load-balancer status of Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	c.recorder.Eventf(svc, corev1.EventTypeNormal, ReasonIPReleased, "Released IP %s: the Service is no longer of type LoadBalancer", strings.Join(ips, ","))
	return nil
}

func (c *Controller) inAnyPool(ip netip.Addr) bool {
	return slices.ContainsFunc(c.alloc.pools, func(p *pool) bool { return p.contains(ip) })
}

// released queues the Services waiting for an address when one was freed.
func (c *Controller) released(freed bool) {
	if !freed {
		return
	}
	for key := range c.pending {
		c.queue.Add(key)
	}
	c.queue.AddAfter(keyStatus, 100*time.Millisecond)
}

// requestFor reads what the allocator needs from a Service. Problems are mistakes in what the
// user requested.
func (c *Controller) requestFor(svc *corev1.Service) (*request, []string) {
	r := &request{
		key:        svc.Namespace + "/" + svc.Name,
		created:    svc.CreationTimestamp.Time,
		sharingKey: svc.Annotations[svcplanev1.AnnotationAllowSharedIP],
		labels:     labels.Set(svc.Labels),
		families:   svc.Spec.IPFamilies,
		requested:  map[corev1.IPFamily]netip.Addr{},
	}
	if ns, err := c.namespaces.Get(svc.Namespace); err == nil {
		r.namespaceLabels = labels.Set(ns.Labels)
	}
	if len(r.families) == 0 {
		r.families = []corev1.IPFamily{corev1.IPv4Protocol}
	}
	for _, p := range svc.Spec.Ports {
		r.ports = append(r.ports, portKey{port: p.Port, protocol: p.Protocol})
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if ip, err := netip.ParseAddr(in.IP); err == nil {
			r.current = append(r.current, ip)
		}
	}
	var problems []string
	source, value := "annotation "+svcplanev1.AnnotationLoadBalancerIPs, svc.Annotations[svcplanev1.AnnotationLoadBalancerIPs]
	if strings.TrimSpace(value) == "" {
		source, value = "spec.loadBalancerIP", svc.Spec.LoadBalancerIP
	}
	if strings.TrimSpace(value) != "" {
		for _, s := range strings.Split(value, ",") {
			ip, err := netip.ParseAddr(strings.TrimSpace(s))
			switch {
			case err != nil || ip.Zone() != "" || ip.Is4In6():
				problems = append(problems, fmt.Sprintf("%s: %q is not an IP address", source, s))
			case !slices.Contains(r.families, familyOf(ip)):
				problems = append(problems, fmt.Sprintf("%s: %s is %s but the Service's ipFamilies are %v", source, ip, familyOf(ip), r.families))
			case r.requested[familyOf(ip)].IsValid():
				problems = append(problems, fmt.Sprintf("%s: more than one %s address requested", source, familyOf(ip)))
			default:
				r.requested[familyOf(ip)] = ip
			}
		}
	}
	return r, problems
}

// ensureDefaultPool creates or updates the pool named "default" with --lb-pool's addresses,
// retrying (e.g. while it overlaps another pool, which validation refuses) until it is stored.
func (c *Controller) ensureDefaultPool(ctx context.Context) {
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Steps: 100, Cap: time.Minute}
	_ = wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		err := c.applyDefaultPool(ctx)
		if err != nil {
			klog.ErrorS(err, "Keeping the default LoadBalancerIPPool failed; retrying", "addresses", c.opts.DefaultPool)
		}
		return err == nil, nil
	})
}

func (c *Controller) applyDefaultPool(ctx context.Context) error {
	existing, err := c.pools.Get(ctx, svcplanev1.DefaultPoolName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		p := &svcplanev1.LoadBalancerIPPool{
			TypeMeta:   metav1.TypeMeta{APIVersion: svcplanev1.SchemeGroupVersion.String(), Kind: "LoadBalancerIPPool"},
			ObjectMeta: metav1.ObjectMeta{Name: svcplanev1.DefaultPoolName},
			Spec:       svcplanev1.LoadBalancerIPPoolSpec{Addresses: c.opts.DefaultPool},
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
		if err != nil {
			return err
		}
		_, err = c.pools.Create(ctx, &unstructured.Unstructured{Object: u}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	current, _, _ := unstructured.NestedStringSlice(existing.Object, "spec", "addresses")
	if slices.Equal(current, c.opts.DefaultPool) {
		return nil
	}
	if err := unstructured.SetNestedStringSlice(existing.Object, c.opts.DefaultPool, "spec", "addresses"); err != nil {
		return err
	}
	_, err = c.pools.Update(ctx, existing, metav1.UpdateOptions{})
	return err
}

// ValidatePoolFlag checks --lb-pool values.
func ValidatePoolFlag(values []string) error {
	for _, v := range values {
		if _, err := validation.ParseAddressRange(v); err != nil {
			return fmt.Errorf("--lb-pool %q: %w", v, err)
		}
	}
	return nil
}
