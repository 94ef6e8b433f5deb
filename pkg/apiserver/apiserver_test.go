package apiserver

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/client-go/util/watchlist"
)

// TestServerListerWatcherReadsTheStore: a component in the server's process gets a ListerWatcher
// over the store of a resource the server serves (one the reflector lists then watches, as the
// in-process informers do), and an error for one it does not.
func TestServerListerWatcherReadsTheStore(t *testing.T) {
	services := corev1.SchemeGroupVersion.WithResource("services")
	store := &fakeStore{}
	s := &Server{stores: map[schema.GroupVersionResource]rest.Storage{services: store}}
	lw, err := s.ListerWatcher(services)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := lw.(*storageListerWatcher); !ok || got.store != store || got.asMetadata {
		t.Errorf("ListerWatcher(services) = %#v, want a typed one over the services store", lw)
	}
	if !watchlist.DoesClientNotSupportWatchListSemantics(lw) {
		t.Errorf("the reflector would ask for a streaming list, which the watch cache answers with deep copies")
	}
	if _, err := s.ListerWatcher(corev1.SchemeGroupVersion.WithResource("configmaps")); err == nil {
		t.Errorf("ListerWatcher(configmaps) succeeded on a server without that store")
	}
}
