// Package namespace empties namespaces that are being deleted. For each namespace marked
// Terminating it deletes everything inside it (every namespaced resource discovery lists, so
// resources added later are covered too), waits until nothing is left, then clears the
// "kubernetes" finalizer through /finalize and deletes the namespace for good.
package namespace

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/controller"
)

// recheckInterval is how soon a namespace whose content is still going away is looked at again
// (Pods may take their grace period).
const recheckInterval = 2 * time.Second

type namespaceController struct {
	client    kubernetes.Interface
	metadata  metadata.Interface
	discovery discovery.DiscoveryInterface
	lister    corelisters.NamespaceLister
	synced    cache.InformerSynced
	queue     workqueue.TypedRateLimitingInterface[string]
}

// New builds the controller.
func New(c controller.Context) (func(context.Context), error) {
	meta, err := metadata.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	informer := c.Informers.Core().V1().Namespaces()
	nc := &namespaceController{
		client:    c.Client,
		metadata:  meta,
		discovery: c.Client.Discovery(),
		lister:    informer.Lister(),
		synced:    informer.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "namespace"}),
	}
	enqueue := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok && ns.DeletionTimestamp != nil {
			nc.queue.Add(ns.Name)
		}
	}
	_, err = informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	return nc.run, err
}

func (nc *namespaceController) run(ctx context.Context) {
	defer utilruntime.HandleCrash()
	defer nc.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), nc.synced) {
		return
	}
	go wait.UntilWithContext(ctx, nc.work, time.Second)
	<-ctx.Done()
}

func (nc *namespaceController) work(ctx context.Context) {
	for {
		name, quit := nc.queue.Get()
		if quit {
			return
		}
		done, err := nc.sync(ctx, name)
		switch {
		case err != nil:
			klog.ErrorS(err, "Emptying namespace failed; retrying", "namespace", name)
			nc.queue.AddRateLimited(name)
		case !done:
			nc.queue.Forget(name)
			nc.queue.AddAfter(name, recheckInterval)
		default:
			nc.queue.Forget(name)
		}
		nc.queue.Done(name)
	}
}

// sync reports done when the namespace is gone or needs nothing more from this controller.
func (nc *namespaceController) sync(ctx context.Context, name string) (bool, error) {
	ns, err := nc.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil || ns.DeletionTimestamp == nil {
		return true, err
	}
	if slices.Contains(ns.Spec.Finalizers, corev1.FinalizerKubernetes) {
		remaining, err := nc.deleteContent(ctx, name)
		if err != nil {
			return false, err
		}
		if remaining > 0 {
			klog.V(2).InfoS("Namespace still has content", "namespace", name, "remaining", remaining)
			return false, nil
		}
		finalized := ns.DeepCopy()
		finalized.Spec.Finalizers = slices.DeleteFunc(finalized.Spec.Finalizers, func(f corev1.FinalizerName) bool {
			return f == corev1.FinalizerKubernetes
		})
		if ns, err = nc.client.CoreV1().Namespaces().Finalize(ctx, finalized, metav1.UpdateOptions{}); err != nil {
			return false, fmt.Errorf("finalizing namespace %s: %w", name, err)
		}
	}
	if len(ns.Spec.Finalizers) > 0 || len(ns.Finalizers) > 0 {
		return true, nil // others still have work; their change requeues it
	}
	err = nc.client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(ns.UID))})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return true, nil
	}
	return err == nil, err
}

// deleteContent asks every namespaced resource to delete its objects in ns and returns how
// many objects are still there.
func (nc *namespaceController) deleteContent(ctx context.Context, ns string) (int, error) {
	resources, err := deletableResources(nc.discovery)
	if err != nil {
		return 0, err
	}
	remaining := 0
	for _, gvr := range resources {
		client := nc.metadata.Resource(gvr).Namespace(ns)
		background := metav1.DeletePropagationBackground
		err := client.DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &background}, metav1.ListOptions{})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsMethodNotSupported(err) {
			return 0, fmt.Errorf("deleting %s in namespace %s: %w", gvr.Resource, ns, err)
		}
		list, err := client.List(ctx, metav1.ListOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return 0, fmt.Errorf("listing %s in namespace %s: %w", gvr.Resource, ns, err)
		}
		if list != nil {
			remaining += len(list.Items)
		}
	}
	return remaining, nil
}

// deletableResources lists the namespaced resources that can be listed and deleted as a collection.
func deletableResources(d discovery.DiscoveryInterface) ([]schema.GroupVersionResource, error) {
	lists, err := d.ServerPreferredNamespacedResources()
	if err != nil && len(lists) == 0 {
		return nil, fmt.Errorf("discovering namespaced resources: %w", err)
	}
	var out []schema.GroupVersionResource
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range list.APIResources {
			if slices.Contains(r.Verbs, "deletecollection") && slices.Contains(r.Verbs, "list") {
				out = append(out, gv.WithResource(r.Name))
			}
		}
	}
	return out, nil
}
