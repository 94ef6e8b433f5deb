// Package endpointslice is the EndpointSlice controller: for every Service with a selector it
// keeps EndpointSlices listing the Pods the selector matches, as upstream's controller does.
//
// Data comes from the shared Service, Pod, Node and EndpointSlice informers; the only writes are
// EndpointSlice creates, updates and deletes through the API. Planning those writes — packing
// endpoints into slices of at most MaxEndpointsPerSlice, resolving a named targetPort per Pod,
// the ready/serving/terminating conditions, zone, hostname and owner reference of each endpoint,
// and keeping unchanged slices untouched — is k8s.io/endpointslice's Reconciler, the library
// upstream's controller is built on. This package is the plumbing around it: which Services to
// sync when something changes, the guard against acting on a stale cache, and batching a burst of
// changes into one write per slice.
package endpointslice

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	esreconciler "k8s.io/endpointslice"
	esmetrics "k8s.io/endpointslice/metrics"
	"k8s.io/endpointslice/topologycache"
	esutil "k8s.io/endpointslice/util"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/controller"
	"github.com/svcplane/svcplane/pkg/controller/internal/selectindex"
	"github.com/svcplane/svcplane/pkg/controller/internal/workloop"
)

// ControllerName is the managed-by label value of the slices this controller owns; slices with
// any other value are never read or written here.
const ControllerName = "endpointslice-controller.k8s.io"

// sliceChangeDelay lets a burst of foreign edits to our slices settle before the Service is
// synced again to undo them, as upstream does.
const sliceChangeDelay = time.Second

// podNodeIndex finds the Pods on a Node when the Node's zone changes. The name is ours alone so
// that another controller's index on the shared Pod informer cannot conflict with it.
const podNodeIndex = "svcplane-endpointslice-node"

// Options tune the controller.
type Options struct {
	// MaxEndpointsPerSlice caps the endpoints of one slice (upstream's
	// --max-endpoints-per-slice; the API allows at most 1000).
	MaxEndpointsPerSlice int32
	// Workers is how many Services are synced at once.
	Workers int
	// Pod and Service changes are debounced: a Service is synced once its changes pause for
	// BatchQuiet (BatchBusyQuiet while more than 100 changes a second arrive), or BatchMaxDelay
	// after the first of them.
	BatchQuiet     time.Duration
	BatchBusyQuiet time.Duration
	BatchMaxDelay  time.Duration
}

// busyRate is the change rate (events a second) above which the longer debounce applies.
const busyRate = 100

// DefaultOptions are upstream's defaults plus a short debounce.
func DefaultOptions() Options {
	return Options{MaxEndpointsPerSlice: 100, Workers: 5,
		BatchQuiet: 20 * time.Millisecond, BatchBusyQuiet: 300 * time.Millisecond, BatchMaxDelay: 2 * time.Second}
}

// AddFlags registers the options on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.Int32Var(&o.MaxEndpointsPerSlice, "max-endpoints-per-slice", o.MaxEndpointsPerSlice,
		"The most endpoints the EndpointSlice controller puts in one EndpointSlice (1-1000).")
	fs.IntVar(&o.Workers, "concurrent-service-endpoint-syncs", o.Workers,
		"How many Services the EndpointSlice and Endpoints controllers sync at once.")
	fs.DurationVar(&o.BatchQuiet, "endpoint-updates-batch-quiet", o.BatchQuiet,
		"Sync a Service's endpoints once its Pods' changes pause this long (0 syncs on every change).")
	fs.DurationVar(&o.BatchBusyQuiet, "endpoint-updates-batch-busy-quiet", o.BatchBusyQuiet,
		"Like --endpoint-updates-batch-quiet, while more than 100 changes a second arrive.")
	fs.DurationVar(&o.BatchMaxDelay, "endpoint-updates-batch-max-delay", o.BatchMaxDelay,
		"Sync a Service's endpoints at the latest this long after the first of a run of changes.")
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	var errs []error
	if o.MaxEndpointsPerSlice < 1 || o.MaxEndpointsPerSlice > 1000 {
		errs = append(errs, fmt.Errorf("--max-endpoints-per-slice must be between 1 and 1000, got %d", o.MaxEndpointsPerSlice))
	}
	if o.Workers < 1 {
		errs = append(errs, fmt.Errorf("--concurrent-service-endpoint-syncs must be at least 1, got %d", o.Workers))
	}
	if o.BatchQuiet < 0 || o.BatchBusyQuiet < 0 || o.BatchMaxDelay < max(o.BatchQuiet, o.BatchBusyQuiet) {
		errs = append(errs, fmt.Errorf("--endpoint-updates-batch-quiet (%v) and --endpoint-updates-batch-busy-quiet (%v) must be between 0 and --endpoint-updates-batch-max-delay (%v)",
			o.BatchQuiet, o.BatchBusyQuiet, o.BatchMaxDelay))
	}
	return errors.Join(errs...)
}

// New builds the controller with DefaultOptions.
func New(c controller.Context) (func(context.Context), error) {
	return NewWithOptions(DefaultOptions())(c)
}

// NewWithOptions returns a constructor for a controller.Registration.
func NewWithOptions(o Options) func(controller.Context) (func(context.Context), error) {
	return func(c controller.Context) (func(context.Context), error) {
		if err := o.Validate(); err != nil {
			return nil, err
		}
		return newController(c, o)
	}
}

type sliceController struct {
	client       kubernetes.Interface
	services     corelisters.ServiceLister
	selected     *selectindex.Pods
	selecting    *selectindex.Services
	podIndex     cache.Indexer
	nodes        corelisters.NodeLister
	sliceIndex   *selectindex.Slices
	synced       []cache.InformerSynced
	reconciler   *esreconciler.Reconciler
	tracker      *esutil.EndpointSliceTracker
	triggerTimes *esutil.TriggerTimeTracker
	topology     *topologycache.TopologyCache
	events       *controller.Events
	queue        workqueue.TypedRateLimitingInterface[string]
	debounce     *workloop.Debouncer
	workers      int
	// started gates topology refreshes until the Node cache is complete; before that each
	// initial Node event would recompute over a partial list.
	started atomic.Bool
}

func newController(c controller.Context, o Options) (func(context.Context), error) {
	sc, err := build(c, o)
	if err != nil {
		return nil, err
	}
	return sc.run, nil
}

// build wires the controller to the informers; its loop starts with run.
func build(c controller.Context, o Options) (*sliceController, error) {
	esmetrics.RegisterMetrics()
	workloop.RegisterMetrics()
	services := c.Informers.Core().V1().Services()
	pods := c.Informers.Core().V1().Pods()
	nodes := c.Informers.Core().V1().Nodes()
	slices := c.Informers.Discovery().V1().EndpointSlices()

	sc := &sliceController{
		client:       c.Client,
		services:     services.Lister(),
		podIndex:     pods.Informer().GetIndexer(),
		nodes:        nodes.Lister(),
		synced:       []cache.InformerSynced{services.Informer().HasSynced, pods.Informer().HasSynced, nodes.Informer().HasSynced, slices.Informer().HasSynced},
		tracker:      esutil.NewEndpointSliceTracker(),
		triggerTimes: esutil.NewTriggerTimeTracker(),
		topology:     topologycache.NewTopologyCache(),
		events:       controller.NewEvents(c.Client, "endpointslice-controller"),
		queue:        workloop.NewQueue("endpointslice"),
		workers:      o.Workers,
	}
	var err error
	if sc.selected, err = selectindex.ForPods(pods.Informer()); err != nil {
		return nil, err
	}
	if sc.selecting, err = selectindex.ForServices(services.Informer()); err != nil {
		return nil, err
	}
	if sc.sliceIndex, err = selectindex.ForSlices(slices.Informer()); err != nil {
		return nil, err
	}
	sc.debounce = &workloop.Debouncer{Quiet: o.BatchQuiet, BusyQuiet: o.BatchBusyQuiet, BusyRate: busyRate, MaxDelay: o.BatchMaxDelay, Queue: sc.queue}
	sc.reconciler = esreconciler.NewReconciler(c.Client, sc.nodes, o.MaxEndpointsPerSlice, sc.tracker, sc.topology,
		sc.events, ControllerName, esreconciler.WithPreferSameTrafficDistributionEnabled(true))

	if err := pods.Informer().AddIndexers(cache.Indexers{podNodeIndex: func(obj any) ([]string, error) {
		if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.NodeName != "" {
			return []string{pod.Spec.NodeName}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, fmt.Errorf("indexing Pods by node: %w", err)
	}
	handlers := []struct {
		informer cache.SharedIndexInformer
		funcs    cache.ResourceEventHandlerFuncs
	}{
		{services.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    sc.debounceObject,
			UpdateFunc: func(_, obj any) { sc.debounceObject(obj) },
			DeleteFunc: sc.onServiceDelete,
		}},
		{pods.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { sc.onPodChange(nil, obj) },
			UpdateFunc: sc.onPodChange,
			DeleteFunc: func(obj any) { sc.onPodChange(obj, nil) },
		}},
		{nodes.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { sc.onNodeChange(nil, obj) },
			UpdateFunc: sc.onNodeChange,
			DeleteFunc: func(obj any) { sc.onNodeChange(obj, nil) },
		}},
		{slices.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    sc.onSliceAdd,
			UpdateFunc: sc.onSliceUpdate,
			DeleteFunc: sc.onSliceDelete,
		}},
	}
	for _, h := range handlers {
		if _, err := h.informer.AddEventHandler(h.funcs); err != nil {
			return nil, err
		}
	}
	return sc, nil
}

func (sc *sliceController) run(ctx context.Context) {
	defer sc.events.Start()()
	if !cache.WaitForCacheSync(ctx.Done(), sc.synced...) {
		sc.queue.ShutDown()
		return
	}
	sc.started.Store(true)
	sc.refreshTopology()
	loop := &workloop.Loop{Name: "endpointslice", Workers: sc.workers, Queue: sc.queue, Sync: sc.sync}
	loop.Run(ctx)
}

func (sc *sliceController) debounceObject(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		sc.debounce.Add(key)
	}
}

// onServiceDelete syncs at once: there is nothing left to batch, only trackers to forget.
func (sc *sliceController) onServiceDelete(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		sc.queue.Add(key)
	}
}

func (sc *sliceController) onPodChange(oldObj, newObj any) {
	keys, err := sc.selecting.ForPodChange(esutil.GetPodUpdateProjectionKey(oldObj, newObj))
	if err != nil {
		klog.ErrorS(err, "Finding the Services of a changed Pod")
		return
	}
	for key := range keys {
		sc.debounce.Add(key)
	}
}

// onNodeChange matters for two things: a Node's zone is copied into its Pods' endpoints, and the
// Nodes' zones and CPUs drive topology hints for Services that ask for them.
func (sc *sliceController) onNodeChange(oldObj, newObj any) {
	oldNode, newNode := nodeOf(oldObj), nodeOf(newObj)
	if oldNode != nil && newNode != nil && !nodeChangeMatters(oldNode, newNode) {
		return
	}
	// Before the caches are complete every Service gets synced anyway.
	if !sc.started.Load() {
		return
	}
	sc.refreshTopology()
	node := newNode
	if node == nil {
		node = oldNode
	}
	if node == nil || (oldNode != nil && newNode != nil && oldNode.Labels[corev1.LabelTopologyZone] == newNode.Labels[corev1.LabelTopologyZone]) {
		return
	}
	// A new Node may carry Pods that were left out while it was unknown; a changed zone changes
	// their endpoints.
	pods, err := sc.podIndex.ByIndex(podNodeIndex, node.Name)
	if err != nil {
		return
	}
	for _, obj := range pods {
		sc.onPodChange(nil, obj)
	}
}

func nodeOf(obj any) *corev1.Node {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	node, _ := obj.(*corev1.Node)
	return node
}

// nodeChangeMatters ignores heartbeats: only readiness, zone and allocatable CPU feed endpoints
// or topology hints.
func nodeChangeMatters(a, b *corev1.Node) bool {
	return a.Labels[corev1.LabelTopologyZone] != b.Labels[corev1.LabelTopologyZone] ||
		nodeReady(a) != nodeReady(b) ||
		!a.Status.Allocatable.Cpu().Equal(*b.Status.Allocatable.Cpu())
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// refreshTopology recomputes zone CPU ratios and resyncs the Services whose hints no longer fit.
func (sc *sliceController) refreshTopology() {
	nodes, err := sc.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	sc.topology.SetNodes(klog.Background(), nodes)
	for _, key := range sc.topology.GetOverloadedServices() {
		sc.debounce.Add(key)
	}
}

func (sc *sliceController) onSliceAdd(obj any) {
	slice, ok := obj.(*discoveryv1.EndpointSlice)
	if ok && sc.reconciler.ManagedByController(slice) && sc.tracker.ShouldSync(slice) {
		sc.queueSliceService(slice)
	}
}

// onSliceUpdate resyncs a Service when one of its slices was changed by someone else (a newer
// generation than we wrote) or its managed-by label moved to or from us.
func (sc *sliceController) onSliceUpdate(oldObj, newObj any) {
	prev, ok1 := oldObj.(*discoveryv1.EndpointSlice)
	slice, ok2 := newObj.(*discoveryv1.EndpointSlice)
	if !ok1 || !ok2 || prev.ResourceVersion == slice.ResourceVersion {
		return
	}
	if slice.Labels[discoveryv1.LabelServiceName] != prev.Labels[discoveryv1.LabelServiceName] {
		sc.queueSliceService(prev)
	}
	if sc.reconciler.ManagedByChanged(prev, slice) || (sc.reconciler.ManagedByController(slice) && sc.tracker.ShouldSync(slice)) {
		sc.queueSliceService(slice)
	}
}

func (sc *sliceController) onSliceDelete(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	slice, ok := obj.(*discoveryv1.EndpointSlice)
	if ok && sc.reconciler.ManagedByController(slice) && !sc.tracker.HandleDeletion(slice) {
		sc.queueSliceService(slice)
	}
}

func (sc *sliceController) queueSliceService(slice *discoveryv1.EndpointSlice) {
	if key, err := esreconciler.ServiceControllerKey(slice); err == nil {
		sc.queue.AddAfter(key, sliceChangeDelay)
	}
}

// errStaleCache makes the loop retry after our own last writes have reached the informer.
var errStaleCache = errors.New("EndpointSlice informer cache is older than this controller's last writes")

func (sc *sliceController) sync(ctx context.Context, key string) error {
	logger := klog.FromContext(ctx).WithValues("service", key)
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	service, err := sc.services.Services(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		// The garbage collector deletes the slices through their owner reference.
		sc.reconciler.DeleteService(namespace, name)
		sc.tracker.DeleteService(namespace, name)
		sc.triggerTimes.DeleteService(namespace, name)
		return nil
	}
	if err != nil {
		return err
	}
	slices, err := sc.sliceIndex.ManagedBy(namespace, name, ControllerName)
	if err != nil {
		return err
	}
	if sc.tracker.StaleSlices(service, slices) {
		return errStaleCache
	}
	if len(service.Spec.Selector) == 0 || service.Spec.Type == corev1.ServiceTypeExternalName {
		// Endpoints of such a Service are someone else's business (or nobody's); slices we
		// wrote while it had a selector would otherwise linger until it is deleted.
		return sc.deleteSlices(ctx, service, slices)
	}
	pods, err := sc.selected.Selected(namespace, service.Spec.Selector)
	if err != nil {
		return err
	}
	triggerTime := sc.triggerTimes.ComputeEndpointLastChangeTriggerTime(namespace, service, pods)
	if err := sc.reconciler.Reconcile(logger, service, pods, slices, triggerTime); err != nil {
		return fmt.Errorf("reconciling EndpointSlices of Service %s: %w", key, err)
	}
	return nil
}

func (sc *sliceController) deleteSlices(ctx context.Context, service *corev1.Service, slices []*discoveryv1.EndpointSlice) error {
	var errs []error
	for _, slice := range slices {
		if !ownedBy(slice, service) {
			continue
		}
		err := sc.client.DiscoveryV1().EndpointSlices(slice.Namespace).Delete(ctx, slice.Name,
			metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(slice.UID))})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting EndpointSlice %s/%s: %w", slice.Namespace, slice.Name, err))
			continue
		}
		sc.tracker.ExpectDeletion(slice)
	}
	return errors.Join(errs...)
}

func ownedBy(slice *discoveryv1.EndpointSlice, service *corev1.Service) bool {
	for _, ref := range slice.OwnerReferences {
		if ref.UID == service.UID {
			return true
		}
	}
	return false
}
