package apiserver

import (
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
)

// The garbage collector watches the metadata of every resource. Through the loopback metadata
// client each of its informers held a decoded PartialObjectMetadata of every object in the
// cluster, a copy of what the watch caches already hold (about a tenth of the live heap at 10k
// Services). The factory here gives it informers over the registry stores in-process, like the
// typed ones of sharedinformers.go: each object it keeps is a PartialObjectMetadata of its own
// whose ObjectMeta is a shallow copy of the watch cache's, so the labels, annotations, owner
// references and finalizers are the cache's own (the same contract: nothing changes them in
// place), and managedFields are left out.

// partialTypeMeta is what the API answers for metadata-only requests.
var partialTypeMeta = metav1.TypeMeta{APIVersion: metav1.SchemeGroupVersion.String(), Kind: "PartialObjectMetadata"}

// partialMetadata returns obj's metadata as a PartialObjectMetadata sharing its contents, or obj
// itself when it has no ObjectMeta (a Status in an error event).
func partialMetadata(obj runtime.Object) runtime.Object {
	accessor, ok := obj.(metav1.ObjectMetaAccessor)
	if !ok {
		return obj
	}
	om, ok := accessor.GetObjectMeta().(*metav1.ObjectMeta)
	if !ok {
		return obj
	}
	partial := &metav1.PartialObjectMetadata{TypeMeta: partialTypeMeta, ObjectMeta: *om}
	partial.ManagedFields = nil
	return partial
}

// metadataList turns a list of typed objects into a PartialObjectMetadataList of their metadata.
func metadataList(list runtime.Object) (runtime.Object, error) {
	listMeta, err := meta.ListAccessor(list)
	if err != nil {
		return nil, err
	}
	out := &metav1.PartialObjectMetadataList{
		TypeMeta: metav1.TypeMeta{APIVersion: metav1.SchemeGroupVersion.String(), Kind: "PartialObjectMetadataList"},
		ListMeta: metav1.ListMeta{ResourceVersion: listMeta.GetResourceVersion()},
		Items:    make([]metav1.PartialObjectMetadata, 0, meta.LenList(list)),
	}
	err = meta.EachListItem(list, func(obj runtime.Object) error {
		partial, ok := partialMetadata(obj).(*metav1.PartialObjectMetadata)
		if !ok {
			return fmt.Errorf("list item %T has no ObjectMeta", obj)
		}
		out.Items = append(out.Items, *partial)
		return nil
	})
	return out, err
}

// storeMetadataInformers is a metadatainformer.SharedInformerFactory whose informers read the
// registry stores in-process; a resource without a store here (none today) is left to fallback,
// a factory over the loopback client.
type storeMetadataInformers struct {
	stores   map[schema.GroupVersionResource]readableStore
	fallback metadatainformer.SharedInformerFactory

	mu           sync.Mutex
	informers    map[schema.GroupVersionResource]cache.SharedIndexInformer
	started      map[schema.GroupVersionResource]bool
	shuttingDown bool
	running      sync.WaitGroup
}

var _ metadatainformer.SharedInformerFactory = &storeMetadataInformers{}

func newStoreMetadataInformers(stores map[schema.GroupVersionResource]rest.Storage, fallback metadatainformer.SharedInformerFactory) *storeMetadataInformers {
	f := &storeMetadataInformers{
		stores:    map[schema.GroupVersionResource]readableStore{},
		fallback:  fallback,
		informers: map[schema.GroupVersionResource]cache.SharedIndexInformer{},
		started:   map[schema.GroupVersionResource]bool{},
	}
	for gvr, store := range stores {
		if readable, ok := store.(readableStore); ok {
			f.stores[gvr] = readable
		}
	}
	return f
}

func (f *storeMetadataInformers) ForResource(gvr schema.GroupVersionResource) informers.GenericInformer {
	store, ok := f.stores[gvr]
	if !ok {
		return f.fallback.ForResource(gvr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	informer := f.informers[gvr]
	if informer == nil {
		// No namespace index: the garbage collector, its only user, follows events and never
		// lists by namespace (a lister still can, by a scan), and the index was a set entry per
		// object in the cluster.
		informer = cache.NewSharedIndexInformer(&storageListerWatcher{store: store, asMetadata: true},
			&metav1.PartialObjectMetadata{}, 0, cache.Indexers{})
		f.informers[gvr] = informer
	}
	return genericInformer{informer: informer, resource: gvr.GroupResource()}
}

func (f *storeMetadataInformers) Start(stopCh <-chan struct{}) {
	f.fallback.Start(stopCh)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shuttingDown {
		return
	}
	for gvr, informer := range f.informers {
		if !f.started[gvr] {
			f.started[gvr] = true
			f.running.Go(func() { informer.Run(stopCh) })
		}
	}
}

func (f *storeMetadataInformers) WaitForCacheSync(stopCh <-chan struct{}) map[schema.GroupVersionResource]bool {
	synced := f.fallback.WaitForCacheSync(stopCh)
	f.mu.Lock()
	started := map[schema.GroupVersionResource]cache.SharedIndexInformer{}
	for gvr, informer := range f.informers {
		if f.started[gvr] {
			started[gvr] = informer
		}
	}
	f.mu.Unlock()
	for gvr, informer := range started {
		synced[gvr] = cache.WaitForCacheSync(stopCh, informer.HasSynced)
	}
	return synced
}

func (f *storeMetadataInformers) Shutdown() {
	f.mu.Lock()
	f.shuttingDown = true
	f.mu.Unlock()
	f.running.Wait()
	f.fallback.Shutdown()
}

// genericInformer pairs an informer with a lister over its cache.
type genericInformer struct {
	informer cache.SharedIndexInformer
	resource schema.GroupResource
}

func (g genericInformer) Informer() cache.SharedIndexInformer { return g.informer }
func (g genericInformer) Lister() cache.GenericLister {
	return cache.NewGenericLister(g.informer.GetIndexer(), g.resource)
}
