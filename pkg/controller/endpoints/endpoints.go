// Package endpoints is the legacy Endpoints controller: for every Service with a selector it
// writes one core/v1 Endpoints object of the same name listing the selected Pods, ready ones in
// addresses and the others in notReadyAddresses, at most 1000 of them (the object is then
// annotated endpoints.kubernetes.io/over-capacity: truncated, and the annotation is removed once
// it fits again). Services without a selector are left to whoever writes their Endpoints.
//
// It reads the shared Service, Pod and Endpoints informers and writes only Endpoints.
package endpoints

import (
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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

// Options tune the controller.
type Options struct {
	Workers        int
	BatchQuiet     time.Duration
	BatchBusyQuiet time.Duration
	BatchMaxDelay  time.Duration
}

// DefaultOptions match the EndpointSlice controller's.
func DefaultOptions() Options {
	return Options{Workers: 5, BatchQuiet: 20 * time.Millisecond, BatchBusyQuiet: 300 * time.Millisecond, BatchMaxDelay: 2 * time.Second}
}

// New builds the controller with DefaultOptions.
func New(c controller.Context) (func(context.Context), error) {
	return NewWithOptions(DefaultOptions())(c)
}

// NewWithOptions returns a constructor for a controller.Registration.
func NewWithOptions(o Options) func(controller.Context) (func(context.Context), error) {
	return func(c controller.Context) (func(context.Context), error) { return newController(c, o) }
}

type endpointsController struct {
	client       kubernetes.Interface
	services     corelisters.ServiceLister
	selected     *selectindex.Pods
	selecting    *selectindex.Services
	endpoints    corelisters.EndpointsLister
	synced       []cache.InformerSynced
	triggerTimes *esutil.TriggerTimeTracker
	queue        workqueue.TypedRateLimitingInterface[string]
	debounce     *workloop.Debouncer
	workers      int
}

func newController(c controller.Context, o Options) (func(context.Context), error) {
	workloop.RegisterMetrics()
	services := c.Informers.Core().V1().Services()
	pods := c.Informers.Core().V1().Pods()
	endpoints := c.Informers.Core().V1().Endpoints()
	ec := &endpointsController{
		client:       c.Client,
		services:     services.Lister(),
		endpoints:    endpoints.Lister(),
		synced:       []cache.InformerSynced{services.Informer().HasSynced, pods.Informer().HasSynced, endpoints.Informer().HasSynced},
		triggerTimes: esutil.NewTriggerTimeTracker(),
		queue:        workloop.NewQueue("endpoints"),
		workers:      max(o.Workers, 1),
	}
	var err error
	if ec.selected, err = selectindex.ForPods(pods.Informer()); err != nil {
		return nil, err
	}
	if ec.selecting, err = selectindex.ForServices(services.Informer()); err != nil {
		return nil, err
	}
	ec.debounce = &workloop.Debouncer{Quiet: o.BatchQuiet, BusyQuiet: o.BatchBusyQuiet, BusyRate: 100, MaxDelay: o.BatchMaxDelay, Queue: ec.queue}
	if _, err := services.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    ec.debounceObject,
		UpdateFunc: func(_, obj any) { ec.debounceObject(obj) },
		DeleteFunc: func(obj any) {
			if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
				ec.queue.Add(key)
			}
		},
	}); err != nil {
		return nil, err
	}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { ec.onPodChange(nil, obj) },
		UpdateFunc: ec.onPodChange,
		DeleteFunc: func(obj any) { ec.onPodChange(obj, nil) },
	}); err != nil {
		return nil, err
	}
	// Only a deleted Endpoints object needs us: a Service that still selects Pods gets it back.
	if _, err := endpoints.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: ec.debounceObject,
	}); err != nil {
		return nil, err
	}
	return ec.run, nil
}

func (ec *endpointsController) run(ctx context.Context) {
	if !cache.WaitForCacheSync(ctx.Done(), ec.synced...) {
		ec.queue.ShutDown()
		return
	}
	ec.queueLeftovers()
	loop := &workloop.Loop{Name: "endpoints", Workers: ec.workers, Queue: ec.queue, Sync: ec.sync}
	loop.Run(ctx)
}

// queueLeftovers looks at every Endpoints object once after a start: one whose Service was
// deleted while we were down is removed by its sync.
func (ec *endpointsController) queueLeftovers() {
	all, err := ec.endpoints.List(labels.Everything())
	if err != nil {
		return
	}
	for _, ep := range all {
		if _, isLock := ep.Annotations[resourcelock.LeaderElectionRecordAnnotationKey]; isLock {
			continue
		}
		if key, err := cache.MetaNamespaceKeyFunc(ep); err == nil {
			ec.queue.Add(key)
		}
	}
}

func (ec *endpointsController) debounceObject(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		ec.debounce.Add(key)
	}
}

func (ec *endpointsController) onPodChange(oldObj, newObj any) {
	keys, err := ec.selecting.ForPodChange(esutil.GetPodUpdateProjectionKey(oldObj, newObj))
	if err != nil {
		klog.ErrorS(err, "Finding the Services of a changed Pod")
		return
	}
	for key := range keys {
		ec.debounce.Add(key)
	}
}

func (ec *endpointsController) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	service, err := ec.services.Services(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		ec.triggerTimes.DeleteService(namespace, name)
		return ec.deleteLeftover(ctx, namespace, name)
	}
	if err != nil {
		return err
	}
	if len(service.Spec.Selector) == 0 {
		return nil
	}
	pods, err := ec.selected.Selected(namespace, service.Spec.Selector)
	if err != nil {
		return err
	}
	// Computed on every sync so the tracker knows which Pod changes it has already reported.
	triggerTime := ec.triggerTimes.ComputeEndpointLastChangeTriggerTime(namespace, service, pods)
	subsets, truncated := truncate(desiredSubsets(service, pods), maxAddresses)
	wantLabels := endpointsLabels(service)

	current, err := ec.endpoints.Endpoints(namespace).Get(name)
	create := apierrors.IsNotFound(err)
	if err != nil && !create {
		return err
	}
	if !create && upToDate(current, subsets, wantLabels, truncated) {
		return nil
	}

	next := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if !create {
		next = current.DeepCopy()
	}
	next.Subsets = subsets
	next.Labels = wantLabels
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	if triggerTime.IsZero() {
		delete(next.Annotations, corev1.EndpointsLastChangeTriggerTime)
	} else {
		next.Annotations[corev1.EndpointsLastChangeTriggerTime] = triggerTime.UTC().Format(time.RFC3339Nano)
	}
	if truncated {
		next.Annotations[corev1.EndpointsOverCapacity] = "truncated"
	} else {
		delete(next.Annotations, corev1.EndpointsOverCapacity)
	}

	client := ec.client.CoreV1().Endpoints(namespace)
	if create {
		_, err = client.Create(ctx, next, metav1.CreateOptions{})
	} else {
		_, err = client.Update(ctx, next, metav1.UpdateOptions{})
	}
	switch {
	case err == nil:
		return nil
	case create && apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
		return nil
	case create && apierrors.IsAlreadyExists(err), !create && apierrors.IsConflict(err):
		// Our cache is behind; the informer will deliver the newer object before the retry.
		return fmt.Errorf("writing Endpoints %s: cache is stale: %w", key, err)
	default:
		return fmt.Errorf("writing Endpoints %s: %w", key, err)
	}
}

// upToDate tells whether current already says what we would write. The trigger-time annotation
// is left out on purpose: it only travels with a real change, so a restart rewrites nothing.
func upToDate(current *corev1.Endpoints, subsets []corev1.EndpointSubset, wantLabels map[string]string, truncated bool) bool {
	_, markedTruncated := current.Annotations[corev1.EndpointsOverCapacity]
	return markedTruncated == truncated &&
		maps.Equal(current.Labels, wantLabels) &&
		apiequality.Semantic.DeepEqual(normalize(current.Subsets), normalize(subsets))
}

// normalize treats an empty list and a missing one alike, as the API round trip does.
func normalize(subsets []corev1.EndpointSubset) []corev1.EndpointSubset {
	if len(subsets) == 0 {
		return nil
	}
	out := make([]corev1.EndpointSubset, len(subsets))
	for i, s := range subsets {
		out[i] = corev1.EndpointSubset{Ports: s.Ports}
		if len(s.Addresses) > 0 {
			out[i].Addresses = s.Addresses
		}
		if len(s.NotReadyAddresses) > 0 {
			out[i].NotReadyAddresses = s.NotReadyAddresses
		}
		if len(s.Ports) == 0 {
			out[i].Ports = nil
		}
	}
	return out
}

// endpointsLabels are the Service's labels plus the markers upstream adds: headless-ness for DNS
// servers, and skip-mirror so the mirroring controller leaves our objects alone.
func endpointsLabels(service *corev1.Service) map[string]string {
	out := maps.Clone(service.Labels)
	if out == nil {
		out = map[string]string{}
	}
	delete(out, corev1.IsHeadlessService)
	if service.Spec.ClusterIP == corev1.ClusterIPNone {
		out[corev1.IsHeadlessService] = ""
	}
	out[discoveryv1.LabelSkipMirror] = "true"
	return out
}

// deleteLeftover removes the Endpoints of a deleted Service, as upstream does for every Service
// (with or without a selector: hand-written Endpoints go with their Service too).
func (ec *endpointsController) deleteLeftover(ctx context.Context, namespace, name string) error {
	current, err := ec.endpoints.Endpoints(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, isLock := current.Annotations[resourcelock.LeaderElectionRecordAnnotationKey]; isLock {
		return nil
	}
	err = ec.client.CoreV1().Endpoints(namespace).Delete(ctx, name,
		metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(current.UID))})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting Endpoints %s/%s of a deleted Service: %w", namespace, name, err)
	}
	return nil
}
