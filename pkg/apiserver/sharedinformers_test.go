package apiserver

import (
	"context"
	"io"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

// fakeStore stands in for a registry store over a watch cache: Get returns its current object
// for a name, List its list, Watch the events sent on watcher.
type fakeStore struct {
	rest.TableConvertor
	current map[string]*corev1.Service
	list    *corev1.ServiceList
	watcher *watch.FakeWatcher
	gets    int
}

func (f *fakeStore) New() runtime.Object     { return &corev1.Service{} }
func (f *fakeStore) NewList() runtime.Object { return &corev1.ServiceList{} }
func (f *fakeStore) Destroy()                {}

func (f *fakeStore) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	f.gets++
	ns, _ := genericapirequest.NamespaceFrom(ctx)
	svc, ok := f.current[ns+"/"+name]
	if !ok {
		return nil, io.EOF
	}
	shallow := *svc
	return &shallow, nil
}

func (f *fakeStore) List(context.Context, *metainternalversion.ListOptions) (runtime.Object, error) {
	return f.list, nil
}

func (f *fakeStore) Watch(context.Context, *metainternalversion.ListOptions) (watch.Interface, error) {
	return f.watcher, nil
}

// wrapped is what the watch cache sends its watchers: the object behind a serialization cache,
// which hands out only deep copies.
type wrapped struct {
	*corev1.Service
	unwrapped int
}

func (w *wrapped) CacheEncode(runtime.Identifier, func(runtime.Object, io.Writer) error, io.Writer) error {
	return nil
}

func (w *wrapped) GetObject() runtime.Object {
	w.unwrapped++
	return w.Service.DeepCopy()
}

func testService(name, rv string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: rv, UID: types.UID(name),
			Labels:        map[string]string{"app": name},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}},
	}
}

// sameMap reports whether a and b are the same map, not merely equal ones.
func sameMap(a, b map[string]string) bool {
	if len(a) == 0 || len(a) != len(b) {
		return false
	}
	a["__probe"] = "x"
	defer delete(a, "__probe")
	return b["__probe"] == "x"
}

func TestShareReplacesEventObjectsWithTheCachedOnes(t *testing.T) {
	cached := testService("web", "10")
	store := &fakeStore{current: map[string]*corev1.Service{"ns/web": cached}}
	lw := &storageListerWatcher{store: store}
	ctx := context.Background()

	// The cache holds exactly the event's version: the informer gets the cache's contents.
	event := &wrapped{Service: cached}
	got := lw.share(ctx, watch.Event{Type: watch.Modified, Object: event})
	svc, ok := got.Object.(*corev1.Service)
	if !ok {
		t.Fatalf("shared object is %T, want *v1.Service", got.Object)
	}
	if svc == cached || !sameMap(svc.Spec.Selector, cached.Spec.Selector) {
		t.Errorf("want a shallow copy of the cached Service sharing its selector map")
	}
	if event.unwrapped != 0 {
		t.Errorf("unwrapped (deep-copied) the event %d times, want 0", event.unwrapped)
	}

	// The cache has moved on: the informer gets a private copy of the event's version.
	stale := &wrapped{Service: testService("web", "9")}
	got = lw.share(ctx, watch.Event{Type: watch.Modified, Object: stale})
	if svc := got.Object.(*corev1.Service); svc.ResourceVersion != "9" || sameMap(svc.Labels, stale.Labels) {
		t.Errorf("want a deep copy at resourceVersion 9, got %q", svc.ResourceVersion)
	}

	// Deletions are no longer in the cache; they are unwrapped without a Get.
	gets := store.gets
	got = lw.share(ctx, watch.Event{Type: watch.Deleted, Object: &wrapped{Service: testService("gone", "11")}})
	if svc, ok := got.Object.(*corev1.Service); !ok || svc.Name != "gone" {
		t.Errorf("deleted event object = %#v, want the unwrapped Service", got.Object)
	}
	if store.gets != gets {
		t.Errorf("a deletion looked the object up in the cache")
	}

	// Bookmarks pass as they are.
	bookmark := &corev1.Service{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "12"}}
	if got := lw.share(ctx, watch.Event{Type: watch.Bookmark, Object: bookmark}); got.Object != bookmark {
		t.Errorf("bookmark was replaced")
	}
}

// TestFactoryInformerReadsTheStore checks the wiring end to end with a client-go informer: the
// factory hands out the storage-backed informer, lists then follows the watch, and its transform
// drops managedFields from the informer's own copy only.
func TestFactoryInformerReadsTheStore(t *testing.T) {
	web := testService("web", "5")
	store := &fakeStore{
		current: map[string]*corev1.Service{"ns/web": web},
		list:    &corev1.ServiceList{ListMeta: metav1.ListMeta{ResourceVersion: "5"}, Items: []corev1.Service{*web}},
		watcher: watch.NewFake(),
	}
	factory := informers.NewSharedInformerFactoryWithOptions(fake.NewClientset(), 0, informers.WithTransform(func(obj any) (any, error) {
		obj.(*corev1.Service).ManagedFields = nil
		return obj, nil
	}))
	shareWatchCaches(factory, map[schema.GroupVersionResource]rest.Storage{corev1.SchemeGroupVersion.WithResource("services"): store})
	lister := factory.Core().V1().Services().Lister()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), factory.Core().V1().Services().Informer().HasSynced) {
		t.Fatal("informer never synced")
	}
	got, err := lister.Services("ns").Get("web")
	if err != nil {
		t.Fatal(err)
	}
	if got.ManagedFields != nil || web.ManagedFields == nil {
		t.Errorf("managedFields: informer %v, store %v; want dropped from the informer's copy only", got.ManagedFields, web.ManagedFields)
	}

	api := testService("api", "6")
	store.current["ns/api"] = api
	store.watcher.Add(&wrapped{Service: api})
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := lister.Services("ns").Get("api")
		if err == nil {
			if !sameMap(got.Spec.Selector, api.Spec.Selector) {
				t.Errorf("watched Service does not share the cached object's selector")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("watched Service never reached the informer")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMetadataInformerSharesTheStoresMetadata checks the garbage collector's factory: its
// informer over a store holds PartialObjectMetadata whose labels are the cached objects' own,
// without managedFields, from the list and from the watch alike.
func TestMetadataInformerSharesTheStoresMetadata(t *testing.T) {
	web := testService("web", "5")
	store := &fakeStore{
		current: map[string]*corev1.Service{"ns/web": web},
		list:    &corev1.ServiceList{ListMeta: metav1.ListMeta{ResourceVersion: "5"}, Items: []corev1.Service{*web}},
		watcher: watch.NewFake(),
	}
	services := corev1.SchemeGroupVersion.WithResource("services")
	factory := newStoreMetadataInformers(map[schema.GroupVersionResource]rest.Storage{services: store}, metadatainformerStub{})
	informer := factory.ForResource(services)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		factory.Shutdown()
	}()
	factory.Start(ctx.Done())
	if synced := factory.WaitForCacheSync(ctx.Done()); !synced[services] {
		t.Fatalf("informer never synced: %v", synced)
	}
	check := func(name string, cached *corev1.Service) bool {
		obj, err := informer.Lister().ByNamespace("ns").Get(name)
		if err != nil {
			return false
		}
		m, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			t.Fatalf("%s: informer holds %T, want *PartialObjectMetadata", name, obj)
		}
		if m.UID != cached.UID || m.ResourceVersion != cached.ResourceVersion {
			t.Errorf("%s: got uid %q rv %q, want %q %q", name, m.UID, m.ResourceVersion, cached.UID, cached.ResourceVersion)
		}
		if !sameMap(m.Labels, cached.Labels) {
			t.Errorf("%s: labels are not the cached object's own map", name)
		}
		if m.ManagedFields != nil || cached.ManagedFields == nil {
			t.Errorf("%s: managedFields: informer %v, store %v; want dropped from the informer's copy only", name, m.ManagedFields, cached.ManagedFields)
		}
		return true
	}
	if !check("web", web) {
		t.Fatal("listed Service is not in the informer")
	}
	api := testService("api", "6")
	store.current["ns/api"] = api
	store.watcher.Add(&wrapped{Service: api})
	deadline := time.Now().Add(10 * time.Second)
	for !check("api", api) {
		if time.Now().After(deadline) {
			t.Fatal("watched Service never reached the informer")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metadatainformerStub is a fallback factory with nothing in it.
type metadatainformerStub struct{}

func (metadatainformerStub) Start(<-chan struct{}) {}
func (metadatainformerStub) ForResource(gvr schema.GroupVersionResource) informers.GenericInformer {
	panic("fallback asked for " + gvr.String())
}
func (metadatainformerStub) WaitForCacheSync(<-chan struct{}) map[schema.GroupVersionResource]bool {
	return map[schema.GroupVersionResource]bool{}
}
func (metadatainformerStub) Shutdown() {}
