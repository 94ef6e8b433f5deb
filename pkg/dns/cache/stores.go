package cache

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/svcplane/svcplane/pkg/dns/object"
)

// The stores below adapt the Index to client-go's ReflectorStore, one per kind. Replace (the list
// at start, or a relist after a watch expired) swaps in the whole kind under one lock, so a query
// never sees a half-replaced index.
//
// They only read the objects they are given (package object copies out what DNS needs, keeping
// nothing but strings, which are immutable), because those objects may be an API server's watch
// cache's, shared with every other reader in its process.

var (
	_ toolscache.ReflectorStore = serviceStore{}
	_ toolscache.ReflectorStore = sliceStore{}
	_ toolscache.ReflectorStore = namespaceStore{}
	_ toolscache.ReflectorStore = podStore{}
	_ toolscache.ReflectorStore = detectingStore{}
)

// detectingStore hands every object it stores to a client-go mutation detector first, which
// (when KUBE_CACHE_MUTATION_DETECTOR=true) keeps a deep copy and panics if the object changes.
type detectingStore struct {
	toolscache.ReflectorStore
	detector toolscache.MutationDetector
}

func (s detectingStore) Add(obj any) error {
	s.detector.AddObject(obj)
	return s.ReflectorStore.Add(obj)
}

func (s detectingStore) Update(obj any) error {
	s.detector.AddObject(obj)
	return s.ReflectorStore.Update(obj)
}

func (s detectingStore) Replace(list []any, resourceVersion string) error {
	for _, obj := range list {
		s.detector.AddObject(obj)
	}
	return s.ReflectorStore.Replace(list, resourceVersion)
}

func deleteByKey(obj any, del func(namespace, name string)) error {
	if m, err := meta.Accessor(obj); err == nil {
		del(m.GetNamespace(), m.GetName())
	}
	return nil
}

type serviceStore struct{ ix *Index }

func (s serviceStore) Add(obj any) error {
	if svc, ok := obj.(*corev1.Service); ok {
		s.ix.SetService(object.ToService(svc))
	}
	return nil
}
func (s serviceStore) Update(obj any) error { return s.Add(obj) }
func (s serviceStore) Delete(obj any) error { return deleteByKey(obj, s.ix.DeleteService) }
func (s serviceStore) Resync() error        { return nil }
func (s serviceStore) Replace(list []any, _ string) error {
	slim := make([]*object.Service, 0, len(list))
	for _, obj := range list {
		if svc, ok := obj.(*corev1.Service); ok {
			slim = append(slim, object.ToService(svc))
		}
	}
	ix := s.ix
	ix.mu.Lock()
	ix.services = make(map[string]*object.Service, len(slim))
	ix.clusterIPs = make(map[netip.Addr][]string, len(slim))
	for _, svc := range slim {
		ix.setServiceLocked(svc)
	}
	ix.touch()
	ix.mu.Unlock()
	ix.markSynced("services")
	return nil
}

type sliceStore struct{ ix *Index }

func (s sliceStore) Add(obj any) error {
	if es, ok := obj.(*discoveryv1.EndpointSlice); ok {
		s.ix.SetEndpointSlice(object.ToEndpointSlice(es))
	}
	return nil
}
func (s sliceStore) Update(obj any) error { return s.Add(obj) }
func (s sliceStore) Delete(obj any) error { return deleteByKey(obj, s.ix.DeleteEndpointSlice) }
func (s sliceStore) Resync() error        { return nil }
func (s sliceStore) Replace(list []any, _ string) error {
	slim := make([]*object.EndpointSlice, 0, len(list))
	for _, obj := range list {
		if es, ok := obj.(*discoveryv1.EndpointSlice); ok {
			slim = append(slim, object.ToEndpointSlice(es))
		}
	}
	ix := s.ix
	ix.mu.Lock()
	ix.slices = make(map[string]map[string]*object.EndpointSlice, len(slim))
	ix.sliceOwner = make(map[string]string, len(slim))
	ix.endpointIPs = make(map[netip.Addr][]endpointRef, len(slim))
	for _, es := range slim {
		ix.setSliceLocked(es)
	}
	ix.touch()
	ix.mu.Unlock()
	ix.markSynced("endpointslices")
	return nil
}

type namespaceStore struct{ ix *Index }

func (s namespaceStore) Add(obj any) error {
	if ns, ok := obj.(*corev1.Namespace); ok {
		s.ix.SetNamespace(ns.Name)
	}
	return nil
}
func (s namespaceStore) Update(obj any) error { return s.Add(obj) }
func (s namespaceStore) Delete(obj any) error {
	return deleteByKey(obj, func(_, name string) { s.ix.DeleteNamespace(name) })
}
func (s namespaceStore) Resync() error { return nil }
func (s namespaceStore) Replace(list []any, _ string) error {
	ix := s.ix
	ix.mu.Lock()
	ix.namespaces = make(map[string]struct{}, len(list))
	for _, obj := range list {
		if ns, ok := obj.(*corev1.Namespace); ok {
			ix.namespaces[ns.Name] = struct{}{}
		}
	}
	ix.touch()
	ix.mu.Unlock()
	ix.markSynced("namespaces")
	return nil
}

type podStore struct{ ix *Index }

func (s podStore) Add(obj any) error {
	if p, ok := obj.(*corev1.Pod); ok {
		s.ix.SetPod(object.ToPod(p))
	}
	return nil
}
func (s podStore) Update(obj any) error { return s.Add(obj) }
func (s podStore) Delete(obj any) error { return deleteByKey(obj, s.ix.DeletePod) }
func (s podStore) Resync() error        { return nil }
func (s podStore) Replace(list []any, _ string) error {
	ix := s.ix
	ix.mu.Lock()
	ix.pods = make(map[string]*object.Pod, len(list))
	ix.podIPs = make(map[podIP]int, len(list))
	for _, obj := range list {
		if p, ok := obj.(*corev1.Pod); ok {
			ix.setPodLocked(object.ToPod(p))
		}
	}
	ix.touch()
	ix.mu.Unlock()
	ix.markSynced("pods")
	return nil
}
