// Package replicaset keeps every ReplicaSet's Pods at its replica count. It reads ReplicaSets
// and Pods from the shared informers, claims the Pods its selector matches (adopting orphans,
// releasing Pods that stopped matching), creates missing Pods from the template in slow-start
// batches, deletes the least valuable surplus Pods first, and writes the counts back to
// ReplicaSet status. Expectations keep it from acting twice on a cache that has not yet seen its
// own creations and deletions. Written after upstream's pkg/controller/replicaset.
package replicaset

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/svcplane/svcplane/pkg/controller"
	"github.com/svcplane/svcplane/pkg/controller/internal/claim"
	"github.com/svcplane/svcplane/pkg/controller/internal/workloop"
)

const (
	// burstReplicas caps the creations or deletions of one sync, so that one huge ReplicaSet
	// cannot starve the others or flood the API server; the next sync does the rest.
	burstReplicas = 500
	// workers sync this many ReplicaSets at once.
	workers = 5
)

var controllerKind = appsv1.SchemeGroupVersion.WithKind("ReplicaSet")

// Controller is the ReplicaSet controller.
type Controller struct {
	client       kubernetes.Interface
	rsLister     appslisters.ReplicaSetLister
	podLister    corelisters.PodLister
	synced       []cache.InformerSynced
	queue        workqueue.TypedRateLimitingInterface[string]
	expectations *expectations
	events       *controller.Events
	now          func() time.Time
}

// New builds the controller on the shared informers.
func New(c controller.Context) (func(context.Context), error) {
	workloop.RegisterMetrics()
	rsInformer := c.Informers.Apps().V1().ReplicaSets()
	podInformer := c.Informers.Core().V1().Pods()
	rc := &Controller{
		client:       c.Client,
		rsLister:     rsInformer.Lister(),
		podLister:    podInformer.Lister(),
		synced:       []cache.InformerSynced{rsInformer.Informer().HasSynced, podInformer.Informer().HasSynced},
		queue:        workloop.NewQueue("replicaset"),
		expectations: newExpectations(),
		events:       controller.NewEvents(c.Client, "replicaset-controller"),
		now:          time.Now,
	}
	if _, err := rsInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    rc.enqueueRS,
		UpdateFunc: func(_, obj any) { rc.enqueueRS(obj) },
		DeleteFunc: rc.deleteRS,
	}); err != nil {
		return nil, err
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    rc.addPod,
		UpdateFunc: rc.updatePod,
		DeleteFunc: rc.deletePod,
	}); err != nil {
		return nil, err
	}
	return rc.Run, nil
}

// Run syncs ReplicaSets until ctx ends.
func (rc *Controller) Run(ctx context.Context) {
	defer rc.events.Start()()
	if !cache.WaitForCacheSync(ctx.Done(), rc.synced...) {
		rc.queue.ShutDown()
		return
	}
	loop := &workloop.Loop{Name: "replicaset", Workers: workers, Queue: rc.queue, Sync: rc.sync}
	loop.Run(ctx)
}

func (rc *Controller) enqueueRS(obj any) {
	if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
		rc.queue.Add(key)
	}
}

func (rc *Controller) deleteRS(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	rc.expectations.forget(key)
	rc.queue.Add(key)
}

// ownerOf returns the key of the ReplicaSet that controls pod, if it still exists with that UID.
func (rc *Controller) ownerOf(pod *corev1.Pod) (string, *appsv1.ReplicaSet) {
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil || ref.Kind != controllerKind.Kind || ref.APIVersion != controllerKind.GroupVersion().String() {
		return "", nil
	}
	rs, err := rc.rsLister.ReplicaSets(pod.Namespace).Get(ref.Name)
	if err != nil || rs.UID != ref.UID {
		return "", nil
	}
	return pod.Namespace + "/" + rs.Name, rs
}

// enqueueMatching wakes every ReplicaSet whose selector matches an orphan Pod: one of them may
// adopt it.
func (rc *Controller) enqueueMatching(pod *corev1.Pod) {
	list, err := rc.rsLister.ReplicaSets(pod.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, rs := range list {
		sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		rc.queue.Add(pod.Namespace + "/" + rs.Name)
	}
}

func (rc *Controller) addPod(obj any) {
	pod := obj.(*corev1.Pod)
	if pod.DeletionTimestamp != nil {
		// Seen for the first time already terminating (e.g. after a restart): count it as deleted.
		rc.deletePod(pod)
		return
	}
	if metav1.GetControllerOfNoCopy(pod) != nil {
		if key, _ := rc.ownerOf(pod); key != "" {
			rc.expectations.creationObserved(key)
			rc.queue.Add(key)
		}
		return
	}
	rc.enqueueMatching(pod)
}

func (rc *Controller) updatePod(oldObj, newObj any) {
	pod, old := newObj.(*corev1.Pod), oldObj.(*corev1.Pod)
	if pod.ResourceVersion == old.ResourceVersion {
		return // a resync: nothing changed
	}
	labelsChanged := !apiequality.Semantic.DeepEqual(pod.Labels, old.Labels)
	if pod.DeletionTimestamp != nil {
		// A graceful deletion is what the controller asked for; seeing it begin is enough.
		rc.deletePod(pod)
		if labelsChanged {
			rc.deletePod(old)
		}
		return
	}
	oldRef, newRef := metav1.GetControllerOfNoCopy(old), metav1.GetControllerOfNoCopy(pod)
	if oldRef != nil && (newRef == nil || oldRef.UID != newRef.UID) {
		if key, _ := rc.ownerOf(old); key != "" {
			rc.queue.Add(key)
		}
	}
	if newRef != nil {
		key, rs := rc.ownerOf(pod)
		if key == "" {
			return
		}
		rc.queue.Add(key)
		// A Pod that just became ready turns available only minReadySeconds later, with no
		// event of its own then.
		if rs.Spec.MinReadySeconds > 0 && !isReady(old) && isReady(pod) {
			rc.queue.AddAfter(key, time.Duration(rs.Spec.MinReadySeconds)*time.Second+time.Second)
		}
		return
	}
	if labelsChanged || oldRef != nil {
		rc.enqueueMatching(pod)
	}
}

func (rc *Controller) deletePod(obj any) {
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
	key, _ := rc.ownerOf(pod)
	if key == "" {
		return
	}
	rc.expectations.deletionObserved(key, pod.Namespace+"/"+pod.Name)
	rc.queue.Add(key)
}

// sync brings one ReplicaSet's Pods to its replica count and writes its status.
func (rc *Controller) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	rs, err := rc.rsLister.ReplicaSets(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		rc.expectations.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	// Read before listing Pods: expectations satisfied now mean the list below includes them.
	trustCache := rc.expectations.satisfied(key)
	selector, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	if err != nil {
		return nil // validation prevents this; nothing sensible to do until the spec changes
	}
	all, err := rc.podLister.Pods(namespace).List(labels.Everything())
	if err != nil {
		return err
	}
	var candidates []*corev1.Pod
	for _, pod := range all {
		if isActive(pod) {
			candidates = append(candidates, pod)
		}
	}
	owner := &claim.Owner{
		Object: rs, Kind: controllerKind, Selector: selector,
		Recheck: claim.RecheckFunc(rs, func(ctx context.Context) (metav1.Object, error) {
			return rc.client.AppsV1().ReplicaSets(namespace).Get(ctx, name, metav1.GetOptions{})
		}),
		Patch: func(ctx context.Context, ns, name string, patch []byte) error {
			_, err := rc.client.CoreV1().Pods(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
			return err
		},
	}
	pods, err := claim.Claim(ctx, owner, candidates)
	if err != nil {
		return err
	}
	var manageErr error
	if trustCache && rs.DeletionTimestamp == nil {
		manageErr = rc.manageReplicas(ctx, key, pods, rs)
	}
	status := rc.calculateStatus(rs, pods, terminatingOf(all, rs.UID), manageErr)
	updated, err := rc.updateStatus(ctx, rs, status)
	if err != nil {
		return errors.Join(manageErr, err)
	}
	if manageErr != nil {
		return manageErr
	}
	// Ready Pods turn available after minReadySeconds without an event; look again then.
	if updated.Spec.MinReadySeconds > 0 && updated.Status.ReadyReplicas == ptr.Deref(updated.Spec.Replicas, 1) &&
		updated.Status.AvailableReplicas != ptr.Deref(updated.Spec.Replicas, 1) {
		rc.queue.AddAfter(key, nextAvailable(pods, updated.Spec.MinReadySeconds, rc.now()))
	}
	return nil
}

func terminatingOf(pods []*corev1.Pod, uid types.UID) int32 {
	var n int32
	for _, pod := range pods {
		if ref := metav1.GetControllerOfNoCopy(pod); ref != nil && ref.UID == uid && pod.DeletionTimestamp != nil &&
			pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
			n++
		}
	}
	return n
}

// nextAvailable is when the first ready-but-not-yet-available Pod becomes available.
func nextAvailable(pods []*corev1.Pod, minReadySeconds int32, now time.Time) time.Duration {
	next := time.Duration(minReadySeconds) * time.Second
	for _, pod := range pods {
		if ok, wait := isAvailable(pod, minReadySeconds, now); !ok && wait > 0 && wait < next {
			next = wait
		}
	}
	return next + 100*time.Millisecond
}

// manageReplicas creates or deletes Pods to reach the replica count.
func (rc *Controller) manageReplicas(ctx context.Context, key string, pods []*corev1.Pod, rs *appsv1.ReplicaSet) error {
	diff := len(pods) - int(ptr.Deref(rs.Spec.Replicas, 1))
	switch {
	case diff < 0:
		n := min(-diff, burstReplicas)
		// Expect all before sending any: the first creation's event may arrive before the last send.
		rc.expectations.expectCreations(key, n)
		created, err := slowStartBatch(n, func() error { return rc.createPod(ctx, rs) })
		for range n - created {
			rc.expectations.creationObserved(key)
		}
		return err
	case diff > 0:
		n := min(diff, burstReplicas)
		victims := podsToDelete(pods, rc.relatedPods(rs), n, rc.now())
		podKeys := make([]string, len(victims))
		for i, pod := range victims {
			podKeys[i] = pod.Namespace + "/" + pod.Name
		}
		rc.expectations.expectDeletions(key, podKeys)
		return rc.deletePods(ctx, key, rs, victims)
	}
	return nil
}

// slowStartBatch calls create count times in batches of 1, 2, 4, ... and stops after a batch
// with a failure: when every creation fails (quota, admission, a bad template) only one request
// was wasted, not hundreds. It returns how many succeeded.
func slowStartBatch(count int, create func() error) (int, error) {
	done := 0
	for batch := 1; done < count; batch *= 2 {
		batch = min(batch, count-done)
		var wg sync.WaitGroup
		errs := make(chan error, batch)
		for range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := create(); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		failed := 0
		var errList []error
		for err := range errs {
			failed++
			errList = append(errList, err)
		}
		done += batch - failed
		if failed > 0 {
			return done, utilerrors.NewAggregate(errList)
		}
	}
	return done, nil
}

func (rc *Controller) createPod(ctx context.Context, rs *appsv1.ReplicaSet) error {
	pod := podFromTemplate(rs)
	created, err := rc.client.CoreV1().Pods(rs.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		// A namespace being emptied refuses new Pods; that is expected, not a failure to report.
		if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			return nil
		}
		rc.events.Eventf(rs, corev1.EventTypeWarning, "FailedCreate", "Error creating: %v", err)
		return err
	}
	rc.events.Eventf(rs, corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: %v", created.Name)
	return nil
}

// podFromTemplate is a Pod of rs: the template's labels, annotations, finalizers and spec, a
// generated name with the ReplicaSet's name as prefix, and rs as controller.
func podFromTemplate(rs *appsv1.ReplicaSet) *corev1.Pod {
	t := rs.Spec.Template.DeepCopy()
	prefix := rs.Name + "-"
	if len(validation.IsDNS1123Subdomain(prefix+"xxxxx")) > 0 {
		prefix = rs.Name
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    prefix,
			Namespace:       rs.Namespace,
			Labels:          t.Labels,
			Annotations:     t.Annotations,
			Finalizers:      t.Finalizers,
			OwnerReferences: []metav1.OwnerReference{claim.ControllerRef(rs, controllerKind)},
		},
		Spec: t.Spec,
	}
}

func (rc *Controller) deletePods(ctx context.Context, key string, rs *appsv1.ReplicaSet, victims []*corev1.Pod) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(victims))
	for _, pod := range victims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := rc.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(pod.UID))})
			if err == nil {
				rc.events.Eventf(rs, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %v", pod.Name)
				return
			}
			// No deletion event will come for this Pod now; stop waiting for it.
			rc.expectations.deletionObserved(key, pod.Namespace+"/"+pod.Name)
			if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
				return
			}
			rc.events.Eventf(rs, corev1.EventTypeWarning, "FailedDelete", "Error deleting: %v", err)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	var errList []error
	for err := range errs {
		errList = append(errList, err)
	}
	return utilerrors.NewAggregate(errList)
}

// relatedPods are the active Pods of rs and of the ReplicaSets that share its controller (the
// other revisions of its Deployment): how crowded a node is counts all of them.
func (rc *Controller) relatedPods(rs *appsv1.ReplicaSet) []*corev1.Pod {
	siblings := map[types.UID]bool{rs.UID: true}
	if ref := metav1.GetControllerOfNoCopy(rs); ref != nil {
		if list, err := rc.rsLister.ReplicaSets(rs.Namespace).List(labels.Everything()); err == nil {
			for _, other := range list {
				if r := metav1.GetControllerOfNoCopy(other); r != nil && r.UID == ref.UID {
					siblings[other.UID] = true
				}
			}
		}
	}
	all, err := rc.podLister.Pods(rs.Namespace).List(labels.Everything())
	if err != nil {
		return nil
	}
	var related []*corev1.Pod
	for _, pod := range all {
		if ref := metav1.GetControllerOfNoCopy(pod); ref != nil && siblings[ref.UID] && isActive(pod) {
			related = append(related, pod)
		}
	}
	return related
}

// calculateStatus counts the claimed active Pods.
func (rc *Controller) calculateStatus(rs *appsv1.ReplicaSet, pods []*corev1.Pod, terminating int32, manageErr error) appsv1.ReplicaSetStatus {
	status := *rs.Status.DeepCopy()
	templateLabels := labels.Set(rs.Spec.Template.Labels).AsSelectorPreValidated()
	var fullyLabeled, ready, available int32
	now := rc.now()
	for _, pod := range pods {
		if templateLabels.Matches(labels.Set(pod.Labels)) {
			fullyLabeled++
		}
		if isReady(pod) {
			ready++
			if ok, _ := isAvailable(pod, rs.Spec.MinReadySeconds, now); ok {
				available++
			}
		}
	}
	status.Replicas = int32(len(pods))
	status.FullyLabeledReplicas = fullyLabeled
	status.ReadyReplicas = ready
	status.AvailableReplicas = available
	status.TerminatingReplicas = &terminating
	status.ObservedGeneration = rs.Generation

	failure := replicaFailure(status.Conditions)
	switch {
	case manageErr != nil && failure == nil:
		reason := "FailedCreate"
		if len(pods) > int(ptr.Deref(rs.Spec.Replicas, 1)) {
			reason = "FailedDelete"
		}
		status.Conditions = append(status.Conditions, appsv1.ReplicaSetCondition{
			Type: appsv1.ReplicaSetReplicaFailure, Status: corev1.ConditionTrue,
			LastTransitionTime: metav1.NewTime(now), Reason: reason, Message: manageErr.Error(),
		})
	case manageErr == nil && failure != nil:
		var kept []appsv1.ReplicaSetCondition
		for _, c := range status.Conditions {
			if c.Type != appsv1.ReplicaSetReplicaFailure {
				kept = append(kept, c)
			}
		}
		status.Conditions = kept
	}
	return status
}

func replicaFailure(conds []appsv1.ReplicaSetCondition) *appsv1.ReplicaSetCondition {
	for i := range conds {
		if conds[i].Type == appsv1.ReplicaSetReplicaFailure {
			return &conds[i]
		}
	}
	return nil
}

// updateStatus writes status unless it is already current; on a conflict it retries once on a
// fresh read, as the status is computed from Pods, not from the stored ReplicaSet.
func (rc *Controller) updateStatus(ctx context.Context, rs *appsv1.ReplicaSet, status appsv1.ReplicaSetStatus) (*appsv1.ReplicaSet, error) {
	if apiequality.Semantic.DeepEqual(rs.Status, status) {
		return rs, nil
	}
	namespace, name := rs.Namespace, rs.Name
	client := rc.client.AppsV1().ReplicaSets(namespace)
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		next := rs.DeepCopy()
		next.Status = status
		updated, err := client.UpdateStatus(ctx, next, metav1.UpdateOptions{})
		if err == nil {
			return updated, nil
		}
		lastErr = err
		fresh, err := client.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			break
		}
		rs = fresh
	}
	return nil, fmt.Errorf("updating status of ReplicaSet %s/%s: %w", namespace, name, lastErr)
}
