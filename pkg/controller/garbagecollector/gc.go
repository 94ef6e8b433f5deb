// Package garbagecollector deletes objects whose owners are gone, as upstream's garbage
// collector does for ownerReferences: with background propagation, a dependent whose every owner
// is deleted is deleted too; with orphan propagation (the "orphan" finalizer) the owner's
// dependents lose their reference to it instead; with foreground propagation (the
// "foregroundDeletion" finalizer) the owner stays until its dependents are gone.
//
// It watches the metadata of every resource discovery lists as list/watch/delete-able and keeps a
// graph of owner UID → dependents. A dependent is deleted only after a live read confirms that
// its owner no longer exists, so a cache that has not seen a new owner yet never causes a delete.
package garbagecollector

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/controller"
)

// node is what the collector knows of one object: the informer's copy of its metadata (which the
// informer keeps anyway; the collector never changes it) and its resource, shared by every node
// of that resource. A node of its own fields cost ~170 bytes per object in the cluster.
type node struct {
	gvr *schema.GroupVersionResource
	obj *metav1.PartialObjectMetadata
}

func (n *node) deleting() bool { return n.obj.DeletionTimestamp != nil }

type collector struct {
	metadata metadata.Interface
	mapper   meta.RESTMapper
	factory  metadatainformer.SharedInformerFactory
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[types.UID]

	mu    sync.Mutex
	nodes map[types.UID]*node
	// dependents lists, per owner UID, the UIDs of the objects that name it. Most owners have
	// one or two dependents: a slice per owner costs a sixth of a set.
	dependents map[types.UID][]types.UID
}

// New builds the collector over every resource known at start.
func New(c controller.Context) (func(context.Context), error) {
	meta, err := metadata.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	groups, err := restmapper.GetAPIGroupResources(c.Client.Discovery())
	if err != nil {
		return nil, fmt.Errorf("discovering API resources: %w", err)
	}
	factory := c.MetadataInformers
	if factory == nil {
		factory = metadatainformer.NewSharedInformerFactory(meta, 0)
	}
	gc := &collector{
		metadata:   meta,
		mapper:     restmapper.NewDiscoveryRESTMapper(groups),
		factory:    factory,
		queue:      workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[types.UID](), workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: "garbage-collector"}),
		nodes:      map[types.UID]*node{},
		dependents: map[types.UID][]types.UID{},
	}
	for _, group := range groups {
		for version, resources := range group.VersionedResources {
			if version != group.Group.PreferredVersion.Version {
				continue
			}
			for _, r := range resources {
				if slices.Contains(r.Verbs, "watch") && slices.Contains(r.Verbs, "list") && slices.Contains(r.Verbs, "delete") && !containsSlash(r.Name) {
					if err := gc.watch(schema.GroupVersionResource{Group: group.Group.Name, Version: version, Resource: r.Name}); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	return gc.run, nil
}

func containsSlash(s string) bool { return slices.Contains([]byte(s), '/') }

func (gc *collector) watch(gvr schema.GroupVersionResource) error {
	informer := gc.factory.ForResource(gvr).Informer()
	resource := &gvr // one copy shared by the nodes of this resource
	// The collector reads owner references, finalizers and deletion state only; managedFields
	// were the largest part of its cache of every object in the cluster.
	if err := informer.SetTransform(func(obj any) (any, error) {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
			m.ManagedFields = nil
		}
		return obj, nil
	}); err != nil {
		return err
	}
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { gc.observe(resource, obj) },
		UpdateFunc: func(_, obj any) { gc.observe(resource, obj) },
		DeleteFunc: func(obj any) { gc.forget(obj) },
	})
	gc.synced = append(gc.synced, informer.HasSynced)
	return err
}

func (gc *collector) observe(gvr *schema.GroupVersionResource, obj any) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	n := &node{gvr: gvr, obj: m}
	gc.mu.Lock()
	if old := gc.nodes[m.UID]; old != nil {
		gc.unlink(old)
	}
	gc.nodes[m.UID] = n
	for _, ref := range n.obj.OwnerReferences {
		if !slices.Contains(gc.dependents[ref.UID], m.UID) {
			gc.dependents[ref.UID] = append(gc.dependents[ref.UID], m.UID)
		}
	}
	gc.mu.Unlock()
	if len(n.obj.OwnerReferences) > 0 || n.deleting() {
		gc.queue.Add(m.UID)
	}
}

func (gc *collector) forget(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return
	}
	gc.mu.Lock()
	if old := gc.nodes[m.UID]; old != nil {
		gc.unlink(old)
	}
	delete(gc.nodes, m.UID)
	deps := gc.dependentsOf(m.UID)
	gc.mu.Unlock()
	for _, uid := range deps {
		gc.queue.Add(uid)
	}
}

// unlink removes n from the dependents of its owners. gc.mu is held.
func (gc *collector) unlink(n *node) {
	for _, ref := range n.obj.OwnerReferences {
		deps := slices.DeleteFunc(gc.dependents[ref.UID], func(uid types.UID) bool { return uid == n.obj.UID })
		if len(deps) == 0 {
			delete(gc.dependents, ref.UID)
		} else {
			gc.dependents[ref.UID] = deps
		}
	}
}

// dependentsOf returns a copy of the dependents of uid. gc.mu is held.
func (gc *collector) dependentsOf(uid types.UID) []types.UID {
	return slices.Clone(gc.dependents[uid])
}

func (gc *collector) run(ctx context.Context) {
	defer utilruntime.HandleCrash()
	defer gc.queue.ShutDown()
	gc.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), gc.synced...) {
		return
	}
	go wait.UntilWithContext(ctx, gc.work, time.Second)
	<-ctx.Done()
}

func (gc *collector) work(ctx context.Context) {
	for {
		uid, quit := gc.queue.Get()
		if quit {
			return
		}
		if err := gc.sync(ctx, uid); err != nil {
			klog.V(2).InfoS("Garbage collection failed; retrying", "uid", uid, "err", err)
			gc.queue.AddRateLimited(uid)
		} else {
			gc.queue.Forget(uid)
		}
		gc.queue.Done(uid)
	}
}

func (gc *collector) sync(ctx context.Context, uid types.UID) error {
	gc.mu.Lock()
	n := gc.nodes[uid]
	var deps []*node
	for _, dep := range gc.dependentsOf(uid) {
		if d := gc.nodes[dep]; d != nil {
			deps = append(deps, d)
		}
	}
	gc.mu.Unlock()
	if n == nil {
		return nil
	}
	if n.deleting() && slices.Contains(n.obj.Finalizers, metav1.FinalizerOrphanDependents) {
		return gc.orphan(ctx, n, deps)
	}
	if n.deleting() && slices.Contains(n.obj.Finalizers, metav1.FinalizerDeleteDependents) {
		return gc.deleteForeground(ctx, n, deps)
	}
	if len(n.obj.OwnerReferences) == 0 {
		return nil
	}
	var alive, gone []metav1.OwnerReference
	for _, ref := range n.obj.OwnerReferences {
		exists, err := gc.ownerExists(ctx, n, ref)
		if err != nil {
			return err
		}
		if exists {
			alive = append(alive, ref)
		} else {
			gone = append(gone, ref)
		}
	}
	switch {
	case len(gone) == 0:
		return nil
	case len(alive) == 0:
		klog.V(2).InfoS("Deleting object whose owners are gone", "resource", n.gvr.Resource, "namespace", n.obj.Namespace, "name", n.obj.Name)
		return gc.delete(ctx, n, metav1.DeletePropagationBackground)
	default:
		return gc.patchOwners(ctx, n, alive)
	}
}

// ownerExists reads the owner live: the cache may not have seen a new owner yet.
func (gc *collector) ownerExists(ctx context.Context, dependent *node, ref metav1.OwnerReference) (bool, error) {
	gc.mu.Lock()
	owner := gc.nodes[ref.UID]
	gc.mu.Unlock()
	if owner != nil && !(owner.deleting() && slices.Contains(owner.obj.Finalizers, metav1.FinalizerDeleteDependents)) {
		return true, nil
	}
	if owner != nil {
		return false, nil // the owner waits for its dependents to go (foreground)
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return false, nil // a reference that cannot name anything owns nothing
	}
	mapping, err := gc.mapper.RESTMapping(gv.WithKind(ref.Kind).GroupKind(), gv.Version)
	if err != nil {
		return true, nil // an unknown kind may be served later; keep the dependent
	}
	client := gc.metadata.Resource(mapping.Resource)
	var live *metav1.PartialObjectMetadata
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		live, err = client.Namespace(dependent.obj.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	} else {
		live, err = client.Get(ctx, ref.Name, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return live.UID == ref.UID, nil
}

func (gc *collector) resource(n *node) metadata.ResourceInterface {
	if n.obj.Namespace == "" {
		return gc.metadata.Resource(*n.gvr)
	}
	return gc.metadata.Resource(*n.gvr).Namespace(n.obj.Namespace)
}

func (gc *collector) delete(ctx context.Context, n *node, policy metav1.DeletionPropagation) error {
	err := gc.resource(n).Delete(ctx, n.obj.Name, metav1.DeleteOptions{
		Preconditions:     metav1.NewUIDPreconditions(string(n.obj.UID)),
		PropagationPolicy: &policy,
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// patchMeta writes metadata fields guarded by the resourceVersion the collector saw.
func (gc *collector) patchMeta(ctx context.Context, n *node, fields map[string]any) error {
	fields["resourceVersion"] = n.obj.ResourceVersion
	fields["uid"] = n.obj.UID
	patch, err := json.Marshal(map[string]any{"metadata": fields})
	if err != nil {
		return err
	}
	_, err = gc.resource(n).Patch(ctx, n.obj.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (gc *collector) patchOwners(ctx context.Context, n *node, owners []metav1.OwnerReference) error {
	return gc.patchMeta(ctx, n, map[string]any{"ownerReferences": owners})
}

func (gc *collector) removeFinalizer(ctx context.Context, n *node, finalizer string) error {
	rest := slices.DeleteFunc(slices.Clone(n.obj.Finalizers), func(f string) bool { return f == finalizer })
	return gc.patchMeta(ctx, n, map[string]any{"finalizers": rest})
}

// orphan removes the owner's reference from each dependent, then lets the owner go.
func (gc *collector) orphan(ctx context.Context, owner *node, deps []*node) error {
	for _, d := range deps {
		kept := slices.DeleteFunc(slices.Clone(d.obj.OwnerReferences), func(r metav1.OwnerReference) bool { return r.UID == owner.obj.UID })
		if err := gc.patchOwners(ctx, d, kept); err != nil {
			return fmt.Errorf("orphaning %s/%s: %w", d.obj.Namespace, d.obj.Name, err)
		}
	}
	return gc.removeFinalizer(ctx, owner, metav1.FinalizerOrphanDependents)
}

// deleteForeground deletes the dependents and lets the owner go once none is left.
func (gc *collector) deleteForeground(ctx context.Context, owner *node, deps []*node) error {
	if len(deps) == 0 {
		return gc.removeFinalizer(ctx, owner, metav1.FinalizerDeleteDependents)
	}
	for _, d := range deps {
		if !d.deleting() {
			if err := gc.delete(ctx, d, metav1.DeletePropagationForeground); err != nil {
				return err
			}
		}
	}
	// Each dependent's deletion requeues the owner through forget; check again soon regardless.
	gc.queue.AddAfter(owner.obj.UID, time.Second)
	return nil
}
