package apiserver

import (
	"context"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// The built-in controllers run in the API server's process and read the same objects its watch
// caches hold. Through the loopback client each informer decoded a copy of every object of its
// kind: at 10k Services that was a fifth of the server's live heap, for data already in memory.
// Here the shared informer factory gets, for the kinds the controllers watch, informers whose
// ListerWatcher reads the registry's storage directly (the watch cache: List from it, Watch on
// it). Each object an informer keeps is then a shallow copy of the watch cache's: its own
// top-level struct (so the factory's transform may clear managedFields), but every slice, map
// and pointer inside shared with the watch cache and with every reader of the API.
//
// The contract that follows: nothing may change an object taken from these informers in place,
// not even a label map or a port list. Controllers DeepCopy before they change anything, as
// client-go's informer contract already asks; a violation would change what the API serves
// without a write. KUBE_CACHE_MUTATION_DETECTOR=true makes client-go check that at run time.
//
// The controllers still depend only on client-go (informers.SharedInformerFactory, listers and a
// kubernetes.Interface for writes); only this wiring knows where the informers' objects come from.

// sharedKinds are the kinds the built-in controllers watch, with the resource that stores them.
// Namespaces are left to the loopback client: admission registers that informer before the
// storage exists, and there are few of them.
var sharedKinds = []struct {
	resource schema.GroupVersionResource
	example  runtime.Object
}{
	{corev1.SchemeGroupVersion.WithResource("services"), &corev1.Service{}},
	{corev1.SchemeGroupVersion.WithResource("endpoints"), &corev1.Endpoints{}},
	{corev1.SchemeGroupVersion.WithResource("pods"), &corev1.Pod{}},
	{corev1.SchemeGroupVersion.WithResource("nodes"), &corev1.Node{}},
	{discoveryv1.SchemeGroupVersion.WithResource("endpointslices"), &discoveryv1.EndpointSlice{}},
	{appsv1.SchemeGroupVersion.WithResource("deployments"), &appsv1.Deployment{}},
	{appsv1.SchemeGroupVersion.WithResource("replicasets"), &appsv1.ReplicaSet{}},
}

// readableStore is what a registry store offers to read its objects.
type readableStore interface {
	rest.Lister
	rest.Watcher
	rest.Getter
}

// shareWatchCaches registers in factory an informer backed by the storage of each shared kind
// whose store is in stores. It must run before anything asks the factory for those informers;
// an informer that already exists is left as it is.
func shareWatchCaches(factory informers.SharedInformerFactory, stores map[schema.GroupVersionResource]rest.Storage) {
	for _, kind := range sharedKinds {
		store, ok := stores[kind.resource].(readableStore)
		if !ok {
			continue
		}
		example := kind.example
		factory.InformerFor(example, func(_ kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
			return cache.NewSharedIndexInformer(&storageListerWatcher{store: store}, example, resync,
				cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		})
	}
}

// storageListerWatcher lists and watches a registry store in-process, as a client-go
// ListerWatcher.
type storageListerWatcher struct {
	store readableStore
	// asMetadata makes lists and watches carry each object's metadata only, as
	// PartialObjectMetadata (metadatainformers.go).
	asMetadata bool
}

var _ cache.ListerWatcherWithContext = &storageListerWatcher{}

// IsWatchListSemanticsUnSupported makes the reflector list then watch. A streaming list
// (sendInitialEvents) would be answered with a deep copy of every object; a list from the watch
// cache is a shallow copy of each.
func (lw *storageListerWatcher) IsWatchListSemanticsUnSupported() bool { return true }

func (lw *storageListerWatcher) List(opts metav1.ListOptions) (runtime.Object, error) {
	return lw.ListWithContext(context.Background(), opts)
}

func (lw *storageListerWatcher) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return lw.WatchWithContext(context.Background(), opts)
}

func (lw *storageListerWatcher) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	internal, err := internalListOptions(opts)
	if err != nil {
		return nil, err
	}
	// The watch cache answers in one piece; pages would only be chunks of the same memory.
	internal.Limit, internal.Continue = 0, ""
	list, err := lw.store.List(genericapirequest.WithNamespace(ctx, metav1.NamespaceAll), internal)
	if err != nil || !lw.asMetadata {
		return list, err
	}
	return metadataList(list)
}

func (lw *storageListerWatcher) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	internal, err := internalListOptions(opts)
	if err != nil {
		return nil, err
	}
	w, err := lw.store.Watch(genericapirequest.WithNamespace(ctx, metav1.NamespaceAll), internal)
	if err != nil {
		return nil, err
	}
	return mapEvents(w, func(e watch.Event) watch.Event {
		e = lw.share(ctx, e)
		if lw.asMetadata {
			e.Object = partialMetadata(e.Object)
		}
		return e
	}), nil
}

func internalListOptions(opts metav1.ListOptions) (*metainternalversion.ListOptions, error) {
	internal := &metainternalversion.ListOptions{}
	if err := metainternalversion.Convert_v1_ListOptions_To_internalversion_ListOptions(&opts, internal, nil); err != nil {
		return nil, err
	}
	return internal, nil
}

// share replaces an event's object by the watch cache's own, read back with Get (a shallow copy
// of what the cache stores). The watch cache hands each event to its watchers wrapped for
// serialization (runtime.CacheableObject) or deep-copied, and unwrapping makes a deep copy; that
// copy is kept only when the cache has already moved on to a newer version, and for deletions,
// which the cache no longer holds.
func (lw *storageListerWatcher) share(ctx context.Context, e watch.Event) watch.Event {
	if e.Type != watch.Added && e.Type != watch.Modified && e.Type != watch.Deleted {
		return e
	}
	if e.Type != watch.Deleted {
		if obj := lw.cached(ctx, e.Object); obj != nil {
			e.Object = obj
			return e
		}
	}
	if wrapped, ok := e.Object.(runtime.CacheableObject); ok {
		e.Object = wrapped.GetObject()
	}
	return e
}

// cached returns the watch cache's copy of obj if it holds exactly that version, else nil.
func (lw *storageListerWatcher) cached(ctx context.Context, obj runtime.Object) runtime.Object {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil
	}
	rv := m.GetResourceVersion()
	// A resourceVersion makes the registry answer from the watch cache (at least that fresh).
	got, err := lw.store.Get(genericapirequest.WithNamespace(ctx, m.GetNamespace()), m.GetName(), &metav1.GetOptions{ResourceVersion: rv})
	if err != nil {
		return nil
	}
	if gm, err := meta.Accessor(got); err != nil || gm.GetResourceVersion() != rv || gm.GetUID() != m.GetUID() {
		return nil
	}
	return got
}

// mapEvents returns a watch that passes every event of w through f, and stops w when stopped.
func mapEvents(w watch.Interface, f func(watch.Event) watch.Event) watch.Interface {
	out := make(chan watch.Event)
	proxy := watch.NewProxyWatcher(out)
	go func() {
		defer close(out)
		defer w.Stop()
		for {
			select {
			case <-proxy.StopChan():
				return
			case e, ok := <-w.ResultChan():
				if !ok {
					return
				}
				select {
				case out <- f(e):
				case <-proxy.StopChan():
					return
				}
			}
		}
	}()
	return proxy
}
