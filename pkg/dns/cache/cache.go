// Package cache is the DNS server's view of the cluster: it watches Services, EndpointSlices,
// Namespaces and (for verified pod records) Pods through client-go reflectors, slims each object
// with package object as it arrives, and keeps them in maps keyed the way queries ask: by
// "<service>.<namespace>" for forward lookups and by address for reverse ones.
//
// There is no second copy of the objects: the reflectors write straight into the Index (it is
// their store), so the informer cache and the DNS index are one and the same.
//
// Where the reflectors list and watch is the caller's choice, through a Source: ClientSource reads
// an API server over HTTP (`svcplane dns`); `svcplane server` passes one that reads its own
// storage in-process, so its objects are the watch cache's and must never be changed here.
package cache

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/svcplane/svcplane/pkg/dns/object"
)

// Index holds the slim objects. All methods are safe for concurrent use; readers never block each
// other, and a writer holds the lock only for a map update.
type Index struct {
	mu sync.RWMutex
	// services and slices are keyed "<name>.<namespace>", the order the labels come in a query.
	services   map[string]*object.Service
	slices     map[string]map[string]*object.EndpointSlice
	sliceOwner map[string]string // "<namespace>/<slice>" → service key, to find a slice whose label changed
	namespaces map[string]struct{}
	pods       map[string]*object.Pod // "<namespace>/<name>"
	podIPs     map[podIP]int
	// Reverse indexes: a ClusterIP to its Services, an endpoint address to the slices holding it.
	clusterIPs  map[netip.Addr][]string
	endpointIPs map[netip.Addr][]endpointRef

	watchPods bool
	serial    atomic.Uint32
	synced    map[string]bool
	allSynced atomic.Bool
	now       func() time.Time
}

type podIP struct {
	namespace string
	ip        netip.Addr
}

type endpointRef struct {
	service string
	slice   string
}

// New returns an empty index; watchPods makes Run also watch Pods (for --pod-records=verified).
func New(watchPods bool) *Index {
	ix := &Index{
		services:    map[string]*object.Service{},
		slices:      map[string]map[string]*object.EndpointSlice{},
		sliceOwner:  map[string]string{},
		namespaces:  map[string]struct{}{},
		pods:        map[string]*object.Pod{},
		podIPs:      map[podIP]int{},
		clusterIPs:  map[netip.Addr][]string{},
		endpointIPs: map[netip.Addr][]endpointRef{},
		watchPods:   watchPods,
		synced:      map[string]bool{"services": false, "endpointslices": false, "namespaces": false},
		now:         time.Now,
	}
	if watchPods {
		ix.synced["pods"] = false
	}
	ix.touch()
	return ix
}

// ServiceKey is the index key of a Service: "<name>.<namespace>".
func ServiceKey(namespace, name string) string { return name + "." + namespace }

// Source hands out the ListerWatcher the Index reads one resource through.
//
// The objects a ListerWatcher yields may be shared with others (an API server's watch cache):
// the Index only reads them, slimming each into a copy of its own, and keeps nothing that could
// be changed later.
type Source interface {
	ListerWatcher(resource schema.GroupVersionResource) (toolscache.ListerWatcher, error)
}

// The resources the Index reads.
var (
	servicesResource       = corev1.SchemeGroupVersion.WithResource("services")
	endpointSlicesResource = discoveryv1.SchemeGroupVersion.WithResource("endpointslices")
	namespacesResource     = corev1.SchemeGroupVersion.WithResource("namespaces")
	podsResource           = corev1.SchemeGroupVersion.WithResource("pods")
)

// ClientSource reads through an API client: one list and one watch per resource over HTTP.
func ClientSource(client kubernetes.Interface) Source { return clientSource{client} }

type clientSource struct{ client kubernetes.Interface }

func (c clientSource) ListerWatcher(resource schema.GroupVersionResource) (toolscache.ListerWatcher, error) {
	var rc rest.Interface
	switch resource.GroupVersion() {
	case corev1.SchemeGroupVersion:
		rc = c.client.CoreV1().RESTClient()
	case discoveryv1.SchemeGroupVersion:
		rc = c.client.DiscoveryV1().RESTClient()
	default:
		return nil, fmt.Errorf("no client for %s", resource)
	}
	return toolscache.NewListWatchFromClient(rc, resource.Resource, corev1.NamespaceAll, fields.Everything()), nil
}

// Run lists and watches every kind through source until ctx is done. The index reports Synced
// once every watched kind has been listed. An error (source has no ListerWatcher for a kind) is
// returned before anything starts.
func (ix *Index) Run(ctx context.Context, source Source) error {
	kinds := []watchedKind{
		{servicesResource, &corev1.Service{}, serviceStore{ix}},
		{endpointSlicesResource, &discoveryv1.EndpointSlice{}, sliceStore{ix}},
		{namespacesResource, &corev1.Namespace{}, namespaceStore{ix}},
	}
	if ix.watchPods {
		kinds = append(kinds, watchedKind{podsResource, &corev1.Pod{}, podStore{ix}})
	}
	lws := make([]toolscache.ListerWatcher, len(kinds))
	for i, k := range kinds {
		lw, err := source.ListerWatcher(k.resource)
		if err != nil {
			return fmt.Errorf("reading %s: %w", k.resource.Resource, err)
		}
		lws[i] = lw
	}
	for i, k := range kinds {
		ix.reflect(ctx, k.resource.Resource, lws[i], k.example, k.store)
	}
	return nil
}

// watchedKind is one kind the Index reads: the resource, an example of its objects for the
// reflector, and the store that slims them into the Index.
type watchedKind struct {
	resource schema.GroupVersionResource
	example  any
	store    toolscache.ReflectorStore
}

func (ix *Index) reflect(ctx context.Context, kind string, lw toolscache.ListerWatcher, example any, store toolscache.ReflectorStore) {
	// With KUBE_CACHE_MUTATION_DETECTOR=true client-go checks that nothing changes the objects
	// the reflector delivered (they may be the API server's own); otherwise this costs nothing.
	detector := toolscache.NewCacheMutationDetector("dns-" + kind)
	go detector.Run(ctx.Done())
	r := toolscache.NewReflectorWithOptions(lw, example, detectingStore{store, detector}, toolscache.ReflectorOptions{Name: "dns-" + kind})
	go r.RunWithContext(ctx)
}

// MarkSynced declares the index complete without a list from the API, for callers (and tests)
// that feed it through the Set methods.
func (ix *Index) MarkSynced() {
	ix.mu.Lock()
	for kind := range ix.synced {
		ix.synced[kind] = true
	}
	ix.mu.Unlock()
	ix.allSynced.Store(true)
}

// Synced reports whether every watched kind has been listed at least once.
func (ix *Index) Synced() bool { return ix.allSynced.Load() }

// Serial is the time of the last change in seconds, used as the zone's SOA serial.
func (ix *Index) Serial() uint32 { return ix.serial.Load() }

func (ix *Index) touch() { ix.serial.Store(uint32(ix.now().Unix())) }

func (ix *Index) markSynced(kind string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.synced[kind] = true
	for _, ok := range ix.synced {
		if !ok {
			return
		}
	}
	ix.allSynced.Store(true)
}

// Service returns the Service, or nil.
func (ix *Index) Service(namespace, name string) *object.Service {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.services[ServiceKey(namespace, name)]
}

// NamespaceExists reports whether the Namespace exists.
func (ix *Index) NamespaceExists(namespace string) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	_, ok := ix.namespaces[namespace]
	return ok
}

// PodHasIP reports whether a Pod in namespace has ip.
func (ix *Index) PodHasIP(namespace string, ip netip.Addr) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.podIPs[podIP{namespace, ip}] > 0
}

// EachEndpoint calls fn for every endpoint of the Service's slices. fn runs under the read lock:
// it must not call back into the Index.
func (ix *Index) EachEndpoint(namespace, name string, fn func(slice *object.EndpointSlice, ep *object.Endpoint)) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, s := range ix.slices[ServiceKey(namespace, name)] {
		for i := range s.Endpoints {
			fn(s, &s.Endpoints[i])
		}
	}
}

// ServicesWithClusterIP returns the Services that have ip as a ClusterIP.
func (ix *Index) ServicesWithClusterIP(ip netip.Addr) []*object.Service {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []*object.Service
	for _, key := range ix.clusterIPs[ip] {
		if s := ix.services[key]; s != nil {
			out = append(out, s)
		}
	}
	return out
}

// EachEndpointWithIP calls fn for every endpoint holding ip, with its Service (nil if the Service
// does not exist). fn runs under the read lock.
func (ix *Index) EachEndpointWithIP(ip netip.Addr, fn func(svc *object.Service, slice *object.EndpointSlice, ep *object.Endpoint)) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, ref := range ix.endpointIPs[ip] {
		s := ix.slices[ref.service][ref.slice]
		if s == nil {
			continue
		}
		svc := ix.services[ref.service]
		for i := range s.Endpoints {
			if slices.Contains(s.Endpoints[i].Addresses, ip) {
				fn(svc, s, &s.Endpoints[i])
			}
		}
	}
}

// Counts returns the number of Services and endpoints held, for logs and benchmarks.
func (ix *Index) Counts() (services, endpoints int) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, byName := range ix.slices {
		for _, s := range byName {
			endpoints += len(s.Endpoints)
		}
	}
	return len(ix.services), endpoints
}

// SetService adds or replaces a Service.
func (ix *Index) SetService(s *object.Service) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.setServiceLocked(s)
	ix.touch()
}

func (ix *Index) setServiceLocked(s *object.Service) {
	key := ServiceKey(s.Namespace, s.Name)
	if old := ix.services[key]; old != nil {
		ix.unindexClusterIPs(key, old)
	}
	ix.services[key] = s
	for _, ip := range s.ClusterIPs {
		ix.clusterIPs[ip] = append(ix.clusterIPs[ip], key)
	}
}

// DeleteService removes a Service.
func (ix *Index) DeleteService(namespace, name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	key := ServiceKey(namespace, name)
	if old := ix.services[key]; old != nil {
		ix.unindexClusterIPs(key, old)
		delete(ix.services, key)
	}
	ix.touch()
}

func (ix *Index) unindexClusterIPs(key string, s *object.Service) {
	for _, ip := range s.ClusterIPs {
		keys := slices.DeleteFunc(ix.clusterIPs[ip], func(k string) bool { return k == key })
		if len(keys) == 0 {
			delete(ix.clusterIPs, ip)
		} else {
			ix.clusterIPs[ip] = keys
		}
	}
}

// SetEndpointSlice adds or replaces an EndpointSlice.
func (ix *Index) SetEndpointSlice(s *object.EndpointSlice) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.setSliceLocked(s)
	ix.touch()
}

func (ix *Index) setSliceLocked(s *object.EndpointSlice) {
	ix.deleteSliceLocked(s.Namespace, s.Name)
	if s.Service == "" {
		return
	}
	svcKey := ServiceKey(s.Namespace, s.Service)
	byName := ix.slices[svcKey]
	if byName == nil {
		byName = map[string]*object.EndpointSlice{}
		ix.slices[svcKey] = byName
	}
	byName[s.Name] = s
	ix.sliceOwner[s.Namespace+"/"+s.Name] = svcKey
	ref := endpointRef{service: svcKey, slice: s.Name}
	for _, ep := range s.Endpoints {
		for _, ip := range ep.Addresses {
			if !slices.Contains(ix.endpointIPs[ip], ref) {
				ix.endpointIPs[ip] = append(ix.endpointIPs[ip], ref)
			}
		}
	}
}

// DeleteEndpointSlice removes an EndpointSlice.
func (ix *Index) DeleteEndpointSlice(namespace, name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.deleteSliceLocked(namespace, name)
	ix.touch()
}

func (ix *Index) deleteSliceLocked(namespace, name string) {
	ownerKey := namespace + "/" + name
	svcKey, ok := ix.sliceOwner[ownerKey]
	if !ok {
		return
	}
	delete(ix.sliceOwner, ownerKey)
	old := ix.slices[svcKey][name]
	if old == nil {
		return
	}
	delete(ix.slices[svcKey], name)
	if len(ix.slices[svcKey]) == 0 {
		delete(ix.slices, svcKey)
	}
	ref := endpointRef{service: svcKey, slice: name}
	for _, ep := range old.Endpoints {
		for _, ip := range ep.Addresses {
			refs := slices.DeleteFunc(ix.endpointIPs[ip], func(r endpointRef) bool { return r == ref })
			if len(refs) == 0 {
				delete(ix.endpointIPs, ip)
			} else {
				ix.endpointIPs[ip] = refs
			}
		}
	}
}

// SetNamespace records that a Namespace exists.
func (ix *Index) SetNamespace(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.namespaces[name] = struct{}{}
	ix.touch()
}

// DeleteNamespace forgets a Namespace.
func (ix *Index) DeleteNamespace(name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	delete(ix.namespaces, name)
	ix.touch()
}

// SetPod adds or replaces a Pod.
func (ix *Index) SetPod(p *object.Pod) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.setPodLocked(p)
	ix.touch()
}

func (ix *Index) setPodLocked(p *object.Pod) {
	ix.deletePodLocked(p.Namespace, p.Name)
	ix.pods[p.Namespace+"/"+p.Name] = p
	for _, ip := range p.IPs {
		ix.podIPs[podIP{p.Namespace, ip}]++
	}
}

// DeletePod removes a Pod.
func (ix *Index) DeletePod(namespace, name string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.deletePodLocked(namespace, name)
	ix.touch()
}

func (ix *Index) deletePodLocked(namespace, name string) {
	key := namespace + "/" + name
	old := ix.pods[key]
	if old == nil {
		return
	}
	delete(ix.pods, key)
	for _, ip := range old.IPs {
		k := podIP{namespace, ip}
		if ix.podIPs[k]--; ix.podIPs[k] <= 0 {
			delete(ix.podIPs, k)
		}
	}
}
