package cache

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
)

// sharedSource stands in for an API server handing out its own objects: each resource lists
// list and then follows the events sent on its watcher.
type sharedSource struct {
	lists    map[schema.GroupVersionResource]runtime.Object
	watchers map[schema.GroupVersionResource]*watch.FakeWatcher
}

func (s *sharedSource) ListerWatcher(resource schema.GroupVersionResource) (toolscache.ListerWatcher, error) {
	list, ok := s.lists[resource]
	if !ok {
		return nil, errors.New("not served")
	}
	w := watch.NewFake()
	s.watchers[resource] = w
	return listThenWatch{&toolscache.ListWatch{
		ListFunc:  func(metav1.ListOptions) (runtime.Object, error) { return list, nil },
		WatchFunc: func(metav1.ListOptions) (watch.Interface, error) { return w, nil },
	}}, nil
}

// listThenWatch tells the reflector to list, then watch, as the API server's in-process
// ListerWatcher does, instead of asking the watch for the initial objects.
type listThenWatch struct{ *toolscache.ListWatch }

func (listThenWatch) IsWatchListSemanticsUnSupported() bool { return true }

func sharedService(name, ip string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: "1", Labels: map[string]string{"app": name}},
		Spec: corev1.ServiceSpec{ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []corev1.ServicePort{{Name: "HTTP", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
}

func sharedSlice(name, svc, ip string) *discoveryv1.EndpointSlice {
	hostname := "Web-0"
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: "1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Hostname: &hostname}},
	}
}

// TestRunReadsTheSourceAndLeavesItsObjectsAlone: the index answers from what the caller's
// ListerWatchers deliver, listed and watched, and every object it was handed is exactly as it
// was (they may be an API server's watch cache's).
func TestRunReadsTheSourceAndLeavesItsObjectsAlone(t *testing.T) {
	web := sharedService("web", "10.96.0.5")
	slice := sharedSlice("web-1", "web", "10.244.0.5")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns", ResourceVersion: "1"}}
	src := &sharedSource{
		lists: map[schema.GroupVersionResource]runtime.Object{
			servicesResource:       &corev1.ServiceList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: []corev1.Service{*web}},
			endpointSlicesResource: &discoveryv1.EndpointSliceList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: []discoveryv1.EndpointSlice{*slice}},
			namespacesResource:     &corev1.NamespaceList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: []corev1.Namespace{*ns}},
		},
		watchers: map[schema.GroupVersionResource]*watch.FakeWatcher{},
	}
	listed := map[schema.GroupVersionResource]runtime.Object{}
	for r, l := range src.lists {
		listed[r] = l.DeepCopyObject()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ix := New(false)
	if err := ix.Run(ctx, src); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "sync", ix.Synced)
	if s := ix.Service("ns", "web"); s == nil || !reflect.DeepEqual(s.ClusterIPs, []netip.Addr{netip.MustParseAddr("10.96.0.5")}) {
		t.Fatalf("listed Service: %+v", s)
	}
	if got := endpointsOf(ix, "web"); len(got) != 1 || got[0] != netip.MustParseAddr("10.244.0.5") {
		t.Errorf("listed slice's endpoints: %v", got)
	}

	api := sharedService("api", "10.96.0.6")
	apiCopy := api.DeepCopy()
	src.watchers[servicesResource].Add(api)
	waitFor(t, "watched Service", func() bool { return ix.Service("ns", "api") != nil })

	for r, l := range src.lists {
		if !reflect.DeepEqual(l, listed[r]) {
			t.Errorf("the index changed the listed %s", r.Resource)
		}
	}
	if !reflect.DeepEqual(api, apiCopy) {
		t.Errorf("the index changed the watched Service")
	}
}

func TestRunFailsWithoutASourceForEveryKind(t *testing.T) {
	src := &sharedSource{
		lists: map[schema.GroupVersionResource]runtime.Object{
			servicesResource:       &corev1.ServiceList{},
			endpointSlicesResource: &discoveryv1.EndpointSliceList{},
			namespacesResource:     &corev1.NamespaceList{},
		},
		watchers: map[schema.GroupVersionResource]*watch.FakeWatcher{},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := New(true).Run(ctx, src); err == nil {
		t.Fatal("Run with no source of Pods (verified pod records) succeeded")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
