// Package endpointslicemirroring mirrors hand-written Endpoints into EndpointSlices, as upstream's
// mirroring controller does, so that consumers reading only slices (proxies, DNS) also see the
// backends of Services without a selector.
//
// An Endpoints object is mirrored when its Service exists and has no selector, and the object is
// neither labelled endpointslice.kubernetes.io/skip-mirror=true (the Endpoints controller's own
// objects, and the API server's "kubernetes" Endpoints) nor a leader-election lock. Its slices are
// labelled managed-by endpointslicemirroring-controller.k8s.io and owned by the Endpoints object;
// slices with any other managed-by value are never touched.
//
// It reads the shared Endpoints, Service and EndpointSlice informers and writes only slices.
package endpointslicemirroring

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"
	esutil "k8s.io/endpointslice/util"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/controller"
	"github.com/svcplane/svcplane/pkg/controller/internal/selectindex"
	"github.com/svcplane/svcplane/pkg/controller/internal/workloop"
)

// ControllerName is the managed-by label value of mirrored slices.
const ControllerName = "endpointslicemirroring-controller.k8s.io"

// sliceChangeDelay lets a burst of foreign edits to our slices settle before undoing them.
const sliceChangeDelay = time.Second

// Options tune the controller.
type Options struct {
	// MaxEndpointsPerSubset caps the addresses mirrored from one subset (upstream's
	// --mirroring-max-endpoints-per-subset).
	MaxEndpointsPerSubset int
	Workers               int
}

// DefaultOptions are upstream's.
func DefaultOptions() Options { return Options{MaxEndpointsPerSubset: 1000, Workers: 5} }

// New builds the controller with DefaultOptions.
func New(c controller.Context) (func(context.Context), error) {
	return NewWithOptions(DefaultOptions())(c)
}

// NewWithOptions returns a constructor for a controller.Registration.
func NewWithOptions(o Options) func(controller.Context) (func(context.Context), error) {
	return func(c controller.Context) (func(context.Context), error) {
		if o.MaxEndpointsPerSubset < 1 || o.MaxEndpointsPerSubset > 1000 {
			return nil, fmt.Errorf("max endpoints per subset must be between 1 and 1000, got %d", o.MaxEndpointsPerSubset)
		}
		return newController(c, o)
	}
}

type mirroringController struct {
	client     kubernetes.Interface
	endpoints  corelisters.EndpointsLister
	services   corelisters.ServiceLister
	sliceIndex *selectindex.Slices
	synced     []cache.InformerSynced
	tracker    *esutil.EndpointSliceTracker
	recorder   *controller.Events
	queue      workqueue.TypedRateLimitingInterface[string]
	limit      int
	workers    int
}

func newController(c controller.Context, o Options) (func(context.Context), error) {
	workloop.RegisterMetrics()
	endpoints := c.Informers.Core().V1().Endpoints()
	services := c.Informers.Core().V1().Services()
	slices := c.Informers.Discovery().V1().EndpointSlices()
	mc := &mirroringController{
		client:    c.Client,
		endpoints: endpoints.Lister(),
		services:  services.Lister(),
		synced:    []cache.InformerSynced{endpoints.Informer().HasSynced, services.Informer().HasSynced, slices.Informer().HasSynced},
		tracker:   esutil.NewEndpointSliceTracker(),
		recorder:  controller.NewEvents(c.Client, "endpointslicemirroring-controller"),
		queue:     workloop.NewQueue("endpointslicemirroring"),
		limit:     o.MaxEndpointsPerSubset,
		workers:   max(o.Workers, 1),
	}
	var err error
	if mc.sliceIndex, err = selectindex.ForSlices(slices.Informer()); err != nil {
		return nil, err
	}
	if _, err := endpoints.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { mc.onEndpointsChange(nil, obj) },
		UpdateFunc: mc.onEndpointsChange,
		DeleteFunc: func(obj any) { mc.onEndpointsChange(obj, nil) },
	}); err != nil {
		return nil, err
	}
	if _, err := services.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    mc.queueObject,
		UpdateFunc: mc.onServiceUpdate,
		DeleteFunc: mc.queueObject,
	}); err != nil {
		return nil, err
	}
	if _, err := slices.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    mc.onSliceAdd,
		UpdateFunc: mc.onSliceUpdate,
		DeleteFunc: mc.onSliceDelete,
	}); err != nil {
		return nil, err
	}
	return mc.run, nil
}

func (mc *mirroringController) run(ctx context.Context) {
	defer mc.recorder.Start()()
	if !cache.WaitForCacheSync(ctx.Done(), mc.synced...) {
		mc.queue.ShutDown()
		return
	}
	loop := &workloop.Loop{Name: "endpointslicemirroring", Workers: mc.workers, Queue: mc.queue, Sync: mc.sync}
	loop.Run(ctx)
}

func (mc *mirroringController) queueObject(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		mc.queue.Add(key)
	}
}

// onEndpointsChange ignores the Endpoints controller's own objects, which are all marked
// skip-mirror: at scale they are nearly every Endpoints change and never concern us.
func (mc *mirroringController) onEndpointsChange(oldObj, newObj any) {
	oldEP, newEP := endpointsOf(oldObj), endpointsOf(newObj)
	if (oldEP == nil || skipMirror(oldEP)) && (newEP == nil || skipMirror(newEP)) {
		return
	}
	if newEP != nil {
		mc.queueObject(newEP)
	} else {
		mc.queueObject(oldEP)
	}
}

func endpointsOf(obj any) *corev1.Endpoints {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	ep, _ := obj.(*corev1.Endpoints)
	return ep
}

func skipMirror(ep *corev1.Endpoints) bool {
	return ep.Labels[discoveryv1.LabelSkipMirror] == "true"
}

// onServiceUpdate cares only about a selector appearing or disappearing, which starts or ends
// mirroring.
func (mc *mirroringController) onServiceUpdate(oldObj, newObj any) {
	prev, ok1 := oldObj.(*corev1.Service)
	svc, ok2 := newObj.(*corev1.Service)
	if ok1 && ok2 && (len(prev.Spec.Selector) == 0) != (len(svc.Spec.Selector) == 0) {
		mc.queueObject(svc)
	}
}

func ours(slice *discoveryv1.EndpointSlice) bool {
	return slice.Labels[discoveryv1.LabelManagedBy] == ControllerName
}

func (mc *mirroringController) onSliceAdd(obj any) {
	if slice, ok := obj.(*discoveryv1.EndpointSlice); ok && ours(slice) && mc.tracker.ShouldSync(slice) {
		mc.queueSliceOwner(slice)
	}
}

func (mc *mirroringController) onSliceUpdate(oldObj, newObj any) {
	prev, ok1 := oldObj.(*discoveryv1.EndpointSlice)
	slice, ok2 := newObj.(*discoveryv1.EndpointSlice)
	if !ok1 || !ok2 || prev.ResourceVersion == slice.ResourceVersion {
		return
	}
	if ours(prev) != ours(slice) || (ours(slice) && mc.tracker.ShouldSync(slice)) {
		mc.queueSliceOwner(slice)
		if prev.Labels[discoveryv1.LabelServiceName] != slice.Labels[discoveryv1.LabelServiceName] {
			mc.queueSliceOwner(prev)
		}
	}
}

func (mc *mirroringController) onSliceDelete(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if slice, ok := obj.(*discoveryv1.EndpointSlice); ok && ours(slice) && !mc.tracker.HandleDeletion(slice) {
		mc.queueSliceOwner(slice)
	}
}

func (mc *mirroringController) queueSliceOwner(slice *discoveryv1.EndpointSlice) {
	if name := slice.Labels[discoveryv1.LabelServiceName]; name != "" {
		mc.queue.AddAfter(slice.Namespace+"/"+name, sliceChangeDelay)
	}
}

var errStaleCache = errors.New("EndpointSlice informer cache is older than this controller's last writes")

func (mc *mirroringController) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	existing, err := mc.sliceIndex.ManagedBy(namespace, name, ControllerName)
	if err != nil {
		return err
	}
	owner := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if mc.tracker.StaleSlices(owner, existing) {
		return errStaleCache
	}

	endpoints, err := mc.mirrored(namespace, name)
	if err != nil {
		return err
	}
	if endpoints == nil {
		err := mc.apply(ctx, namespace, nil, nil, existing)
		if err == nil && len(existing) == 0 {
			mc.tracker.DeleteService(namespace, name)
		}
		return err
	}

	p := planMirror(endpoints, mc.limit)
	if p.invalid > 0 {
		mc.recorder.Eventf(endpoints, corev1.EventTypeWarning, "AddressNotAllowed",
			"Skipped %d invalid IP addresses when mirroring to EndpointSlices", p.invalid)
	}
	if p.over > 0 {
		klog.V(2).InfoS("Endpoints has more addresses than are mirrored", "endpoints", key, "skipped", p.over, "limit", mc.limit)
		mc.recorder.Eventf(endpoints, corev1.EventTypeWarning, "TooManyAddressesToMirror",
			"A max of %d addresses can be mirrored to EndpointSlices per Endpoints subset. %d addresses were skipped", mc.limit, p.over)
	}

	// Each group keeps the existing slice of the same address type and ports if there is one;
	// every other existing slice is reused for a group that has none before anything is created
	// or deleted, so a changed port list is one update, not a create and a delete.
	byKey := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range existing {
		k := string(s.AddressType) + "|" + portsKey(s.Ports)
		byKey[k] = append(byKey[k], s)
	}
	for _, list := range byKey {
		slices.SortFunc(list, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	}
	var unmatched []*group
	var toWrite []*discoveryv1.EndpointSlice
	var spare []*discoveryv1.EndpointSlice
	kept := map[string]*discoveryv1.EndpointSlice{}
	for _, g := range p.groups {
		if list := byKey[g.key]; len(list) > 0 {
			kept[g.key] = list[0]
			if want := newSlice(endpoints, g, list[0].Name); !sameContent(list[0], want) {
				toWrite = append(toWrite, want)
			}
			spare = append(spare, list[1:]...)
			delete(byKey, g.key)
			continue
		}
		unmatched = append(unmatched, g)
	}
	for _, list := range byKey {
		spare = append(spare, list...)
	}
	slices.SortFunc(spare, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	for _, g := range unmatched {
		// The address type of a slice is immutable, so only a slice of the same type is reused.
		i := slices.IndexFunc(spare, func(s *discoveryv1.EndpointSlice) bool { return s.AddressType == g.addressType })
		if i < 0 {
			toWrite = append(toWrite, newSlice(endpoints, g, ""))
			continue
		}
		toWrite = append(toWrite, newSlice(endpoints, g, spare[i].Name))
		spare = slices.Delete(spare, i, i+1)
	}
	return mc.apply(ctx, namespace, endpoints, toWrite, spare)
}

// mirrored returns the Endpoints object for key if it should be mirrored, else nil.
func (mc *mirroringController) mirrored(namespace, name string) (*corev1.Endpoints, error) {
	service, err := mc.services.Services(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(service.Spec.Selector) > 0 {
		return nil, nil
	}
	endpoints, err := mc.endpoints.Endpoints(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if _, isLock := endpoints.Annotations[resourcelock.LeaderElectionRecordAnnotationKey]; isLock || skipMirror(endpoints) {
		return nil, nil
	}
	return endpoints, nil
}

// apply writes the slices of toWrite (creating those without a name) and deletes toDelete.
func (mc *mirroringController) apply(ctx context.Context, namespace string, endpoints *corev1.Endpoints, toWrite, toDelete []*discoveryv1.EndpointSlice) error {
	client := mc.client.DiscoveryV1().EndpointSlices(namespace)
	for _, slice := range toWrite {
		var written *discoveryv1.EndpointSlice
		var err error
		if slice.Name == "" {
			// A deleted Endpoints object takes its slices along through their owner reference;
			// creating more for it would race the garbage collector.
			if endpoints.DeletionTimestamp != nil {
				continue
			}
			written, err = client.Create(ctx, slice, metav1.CreateOptions{})
			if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
				return nil
			}
		} else {
			written, err = client.Update(ctx, slice, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("writing mirrored EndpointSlice for Endpoints %s/%s: %w", namespace, slice.Labels[discoveryv1.LabelServiceName], err)
		}
		mc.tracker.Update(written)
	}
	for _, slice := range toDelete {
		err := client.Delete(ctx, slice.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(slice.UID))})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting mirrored EndpointSlice %s/%s: %w", namespace, slice.Name, err)
		}
		mc.tracker.ExpectDeletion(slice)
	}
	return nil
}

// sameContent compares what mirroring controls; endpoint order is canonical on our writes, and a
// slice someone reordered is simply rewritten once.
func sameContent(current, want *discoveryv1.EndpointSlice) bool {
	return maps.Equal(current.Labels, want.Labels) &&
		maps.Equal(current.Annotations, want.Annotations) &&
		apiequality.Semantic.DeepEqual(current.OwnerReferences, want.OwnerReferences) &&
		portsKey(current.Ports) == portsKey(want.Ports) &&
		apiequality.Semantic.DeepEqual(nilIfEmpty(current.Endpoints), nilIfEmpty(want.Endpoints))
}

func nilIfEmpty(e []discoveryv1.Endpoint) []discoveryv1.Endpoint {
	if len(e) == 0 {
		return nil
	}
	return e
}
