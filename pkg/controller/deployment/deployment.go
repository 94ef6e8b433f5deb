// Package deployment rolls Deployments out through ReplicaSets, as upstream's
// pkg/controller/deployment does: one ReplicaSet per distinct pod template (named and labelled
// by the template's hash), the newest one scaled up and the older ones down under the
// RollingUpdate fenceposts or all at once (Recreate), revision annotations that kubectl's rollout
// history and undo read, proportional scaling of a size change during a rollout, pause, cleanup
// beyond revisionHistoryLimit, and the status and Available/Progressing conditions `kubectl
// rollout status` waits on. It reads Deployments, ReplicaSets and Pods from the shared informers
// and writes only Deployments (status, revision annotation) and ReplicaSets; the ReplicaSet
// controller turns ReplicaSets into Pods.
package deployment

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/svcplane/svcplane/pkg/controller"
	"github.com/svcplane/svcplane/pkg/controller/internal/claim"
	"github.com/svcplane/svcplane/pkg/controller/internal/workloop"
)

const workers = 5

var (
	controllerKind = appsv1.SchemeGroupVersion.WithKind("Deployment")
	rsKind         = appsv1.SchemeGroupVersion.WithKind("ReplicaSet")
)

// Controller is the Deployment controller.
type Controller struct {
	client    kubernetes.Interface
	dLister   appslisters.DeploymentLister
	rsLister  appslisters.ReplicaSetLister
	podLister corelisters.PodLister
	synced    []cache.InformerSynced
	queue     workqueue.TypedRateLimitingInterface[string]
	events    *controller.Events
	now       func() time.Time
}

// New builds the controller on the shared informers.
func New(c controller.Context) (func(context.Context), error) {
	workloop.RegisterMetrics()
	dInformer := c.Informers.Apps().V1().Deployments()
	rsInformer := c.Informers.Apps().V1().ReplicaSets()
	podInformer := c.Informers.Core().V1().Pods()
	dc := &Controller{
		client:    c.Client,
		dLister:   dInformer.Lister(),
		rsLister:  rsInformer.Lister(),
		podLister: podInformer.Lister(),
		synced: []cache.InformerSynced{dInformer.Informer().HasSynced, rsInformer.Informer().HasSynced,
			podInformer.Informer().HasSynced},
		queue:  workloop.NewQueue("deployment"),
		events: controller.NewEvents(c.Client, "deployment-controller"),
		now:    time.Now,
	}
	handlers := []struct {
		informer cache.SharedIndexInformer
		funcs    cache.ResourceEventHandlerFuncs
	}{
		{dInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc: dc.enqueue, UpdateFunc: func(_, obj any) { dc.enqueue(obj) }, DeleteFunc: dc.enqueue,
		}},
		{rsInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc: dc.addRS, UpdateFunc: dc.updateRS, DeleteFunc: dc.deleteRS,
		}},
		// Recreate waits for the old Pods to be gone, which only Pod deletions tell.
		{podInformer.Informer(), cache.ResourceEventHandlerFuncs{DeleteFunc: dc.deletePod}},
	}
	for _, h := range handlers {
		if _, err := h.informer.AddEventHandler(h.funcs); err != nil {
			return nil, err
		}
	}
	return dc.Run, nil
}

// Run syncs Deployments until ctx ends.
func (dc *Controller) Run(ctx context.Context) {
	defer dc.events.Start()()
	if !cache.WaitForCacheSync(ctx.Done(), dc.synced...) {
		dc.queue.ShutDown()
		return
	}
	loop := &workloop.Loop{Name: "deployment", Workers: workers, Queue: dc.queue, Sync: dc.sync}
	loop.Run(ctx)
}

func (dc *Controller) enqueue(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		dc.queue.Add(key)
	}
}

// ownerOf returns the Deployment controlling obj, if it still exists with that UID.
func (dc *Controller) ownerOf(obj metav1.Object) *appsv1.Deployment {
	ref := metav1.GetControllerOfNoCopy(obj)
	if ref == nil || ref.Kind != controllerKind.Kind || ref.APIVersion != controllerKind.GroupVersion().String() {
		return nil
	}
	d, err := dc.dLister.Deployments(obj.GetNamespace()).Get(ref.Name)
	if err != nil || d.UID != ref.UID {
		return nil
	}
	return d
}

func (dc *Controller) enqueueDeployment(d *appsv1.Deployment) {
	dc.queue.Add(d.Namespace + "/" + d.Name)
}

// enqueueMatching wakes the Deployments that could adopt an orphan ReplicaSet.
func (dc *Controller) enqueueMatching(rs *appsv1.ReplicaSet) {
	list, err := dc.dLister.Deployments(rs.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, d := range list {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(rs.Labels)) {
			dc.enqueueDeployment(d)
		}
	}
}

func (dc *Controller) addRS(obj any) {
	rs := obj.(*appsv1.ReplicaSet)
	if metav1.GetControllerOfNoCopy(rs) != nil {
		if d := dc.ownerOf(rs); d != nil {
			dc.enqueueDeployment(d)
		}
		return
	}
	dc.enqueueMatching(rs)
}

func (dc *Controller) updateRS(oldObj, newObj any) {
	rs, old := newObj.(*appsv1.ReplicaSet), oldObj.(*appsv1.ReplicaSet)
	if rs.ResourceVersion == old.ResourceVersion {
		return
	}
	oldRef, newRef := metav1.GetControllerOfNoCopy(old), metav1.GetControllerOfNoCopy(rs)
	if oldRef != nil && (newRef == nil || oldRef.UID != newRef.UID) {
		if d := dc.ownerOf(old); d != nil {
			dc.enqueueDeployment(d)
		}
	}
	if newRef != nil {
		if d := dc.ownerOf(rs); d != nil {
			dc.enqueueDeployment(d)
		}
		return
	}
	dc.enqueueMatching(rs)
}

func (dc *Controller) deleteRS(obj any) {
	rs, ok := obj.(*appsv1.ReplicaSet)
	if !ok {
		tombstone, ok := obj.(cache.DeletedFinalStateUnknown)
		if !ok {
			return
		}
		if rs, ok = tombstone.Obj.(*appsv1.ReplicaSet); !ok {
			return
		}
	}
	if d := dc.ownerOf(rs); d != nil {
		dc.enqueueDeployment(d)
	}
}

func (dc *Controller) deletePod(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		tombstone, ok := obj.(cache.DeletedFinalStateUnknown)
		if !ok {
			return
		}
		if pod, ok = tombstone.Obj.(*corev1.Pod); !ok {
			return
		}
	}
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil || ref.Kind != rsKind.Kind {
		return
	}
	rs, err := dc.rsLister.ReplicaSets(pod.Namespace).Get(ref.Name)
	if err != nil || rs.UID != ref.UID {
		return
	}
	if d := dc.ownerOf(rs); d != nil && d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		dc.enqueueDeployment(d)
	}
}

// sync does one step of a Deployment's rollout: whatever the current ReplicaSets allow now.
// The ReplicaSets' status changes bring it back for the next step.
func (dc *Controller) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	cached, err := dc.dLister.Deployments(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	// Everything below edits d; the cached object is shared with other readers.
	d := cached.DeepCopy()
	selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || selector.Empty() {
		// Validation refuses these; an empty selector would claim every ReplicaSet in the namespace.
		dc.events.Eventf(d, corev1.EventTypeWarning, "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required.")
		if d.Status.ObservedGeneration < d.Generation {
			d.Status.ObservedGeneration = d.Generation
			_, err = dc.client.AppsV1().Deployments(namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{})
		}
		return err
	}
	rsList, err := dc.claimReplicaSets(ctx, d, selector)
	if err != nil {
		return err
	}
	if d.DeletionTimestamp != nil {
		return dc.syncStatusOnly(ctx, d, rsList)
	}
	if err := dc.checkPausedConditions(ctx, d); err != nil {
		return err
	}
	if d.Spec.Paused {
		return dc.syncScaleOnly(ctx, d, rsList)
	}
	scaling, err := dc.isScalingEvent(ctx, d, rsList)
	if err != nil {
		return err
	}
	if scaling {
		return dc.syncScaleOnly(ctx, d, rsList)
	}
	switch d.Spec.Strategy.Type {
	case appsv1.RecreateDeploymentStrategyType:
		return dc.rolloutRecreate(ctx, d, rsList)
	case appsv1.RollingUpdateDeploymentStrategyType:
		return dc.rolloutRolling(ctx, d, rsList)
	}
	return fmt.Errorf("unexpected deployment strategy type: %s", d.Spec.Strategy.Type)
}

// claimReplicaSets adopts and releases ReplicaSets by the Deployment's selector.
func (dc *Controller) claimReplicaSets(ctx context.Context, d *appsv1.Deployment, selector labels.Selector) ([]*appsv1.ReplicaSet, error) {
	all, err := dc.rsLister.ReplicaSets(d.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	owner := &claim.Owner{
		Object: d, Kind: controllerKind, Selector: selector,
		Recheck: claim.RecheckFunc(d, func(ctx context.Context) (metav1.Object, error) {
			return dc.client.AppsV1().Deployments(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{})
		}),
		Patch: func(ctx context.Context, ns, name string, patch []byte) error {
			_, err := dc.client.AppsV1().ReplicaSets(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
			return err
		},
	}
	return claim.Claim(ctx, owner, all)
}

// podsByReplicaSet groups the Pods of the Deployment's ReplicaSets by ReplicaSet UID.
func (dc *Controller) podsByReplicaSet(d *appsv1.Deployment, rsList []*appsv1.ReplicaSet) (map[types.UID][]*corev1.Pod, error) {
	selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, err
	}
	pods, err := dc.podLister.Pods(d.Namespace).List(selector)
	if err != nil {
		return nil, err
	}
	byRS := map[types.UID][]*corev1.Pod{}
	for _, rs := range rsList {
		byRS[rs.UID] = nil
	}
	for _, pod := range pods {
		ref := metav1.GetControllerOfNoCopy(pod)
		if ref == nil {
			continue
		}
		if _, ok := byRS[ref.UID]; ok {
			byRS[ref.UID] = append(byRS[ref.UID], pod)
		}
	}
	return byRS, nil
}
