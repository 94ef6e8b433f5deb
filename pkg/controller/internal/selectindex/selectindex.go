// Package selectindex answers "which Pods does this Service select" and "which slices belong to
// this Service" from indexes on the shared informers, so that a sync costs in proportion to what
// it selects rather than to everything in the namespace. A lister's selector List matches every
// object of the namespace: at 10,000 Pods in one namespace that scan was most of the controllers'
// CPU during a burst.
package selectindex

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/cache"
	esutil "k8s.io/endpointslice/util"
)

// The index names are ours alone; controllers that share an informer add each index once.
const (
	podLabelIndex     = "svcplane-pod-label"
	sliceServiceIndex = "svcplane-endpointslice-service"
)

// Pods indexes Pods by namespace and label pair.
type Pods struct{ indexer cache.Indexer }

// ForPods adds the label index to informer (once, whoever asks first) and returns its reader.
func ForPods(informer cache.SharedIndexInformer) (*Pods, error) {
	if err := ensure(informer, podLabelIndex, func(obj any) ([]string, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return nil, nil
		}
		keys := make([]string, 0, len(pod.Labels))
		for k, v := range pod.Labels {
			keys = append(keys, labelKey(pod.Namespace, k, v))
		}
		return keys, nil
	}); err != nil {
		return nil, err
	}
	return &Pods{indexer: informer.GetIndexer()}, nil
}

func labelKey(namespace, key, value string) string { return namespace + "/" + key + "=" + value }

// Selected returns the Pods of namespace whose labels match selector. An empty selector selects
// nothing: the controllers treat it as no selector, which is what an empty map becomes after
// upstream's protobuf storage.
func (p *Pods) Selected(namespace string, selector map[string]string) ([]*corev1.Pod, error) {
	if len(selector) == 0 {
		return nil, nil
	}
	// Start from the smallest candidate set any one pair of the selector gives.
	var smallest []any
	first := true
	for k, v := range selector {
		objs, err := p.indexer.ByIndex(podLabelIndex, labelKey(namespace, k, v))
		if err != nil {
			return nil, err
		}
		if first || len(objs) < len(smallest) {
			smallest, first = objs, false
		}
		if len(smallest) == 0 {
			return nil, nil
		}
	}
	match := labels.SelectorFromValidatedSet(selector)
	out := make([]*corev1.Pod, 0, len(smallest))
	for _, obj := range smallest {
		if pod, ok := obj.(*corev1.Pod); ok && match.Matches(labels.Set(pod.Labels)) {
			out = append(out, pod)
		}
	}
	return out, nil
}

// Slices indexes EndpointSlices by namespace and the Service they name.
type Slices struct{ indexer cache.Indexer }

// ForSlices adds the service-name index to informer (once) and returns its reader.
func ForSlices(informer cache.SharedIndexInformer) (*Slices, error) {
	if err := ensure(informer, sliceServiceIndex, func(obj any) ([]string, error) {
		slice, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok || slice.Labels[discoveryv1.LabelServiceName] == "" {
			return nil, nil
		}
		return []string{slice.Namespace + "/" + slice.Labels[discoveryv1.LabelServiceName]}, nil
	}); err != nil {
		return nil, err
	}
	return &Slices{indexer: informer.GetIndexer()}, nil
}

// ManagedBy returns the slices of namespace/service whose managed-by label is managedBy and that
// are not being deleted.
func (s *Slices) ManagedBy(namespace, service, managedBy string) ([]*discoveryv1.EndpointSlice, error) {
	objs, err := s.indexer.ByIndex(sliceServiceIndex, namespace+"/"+service)
	if err != nil {
		return nil, err
	}
	var out []*discoveryv1.EndpointSlice
	for _, obj := range objs {
		slice, ok := obj.(*discoveryv1.EndpointSlice)
		if ok && slice.Labels[discoveryv1.LabelManagedBy] == managedBy && slice.DeletionTimestamp == nil {
			out = append(out, slice)
		}
	}
	return out, nil
}

func ensure(informer cache.SharedIndexInformer, name string, index cache.IndexFunc) error {
	if _, ok := informer.GetIndexer().GetIndexers()[name]; ok {
		return nil
	}
	if err := informer.AddIndexers(cache.Indexers{name: index}); err != nil {
		return fmt.Errorf("adding index %s: %w", name, err)
	}
	return nil
}

const serviceSelectorIndex = "svcplane-service-selector"

// Services indexes Services by namespace and each label pair of their selector, so that the
// Services of a changed Pod are found from the Pod's labels instead of by matching every Service
// of the namespace on every Pod event.
type Services struct{ indexer cache.Indexer }

// ForServices adds the selector index to informer (once) and returns its reader.
func ForServices(informer cache.SharedIndexInformer) (*Services, error) {
	if err := ensure(informer, serviceSelectorIndex, func(obj any) ([]string, error) {
		svc, ok := obj.(*corev1.Service)
		if !ok {
			return nil, nil
		}
		keys := make([]string, 0, len(svc.Spec.Selector))
		for k, v := range svc.Spec.Selector {
			keys = append(keys, labelKey(svc.Namespace, k, v))
		}
		return keys, nil
	}); err != nil {
		return nil, err
	}
	return &Services{indexer: informer.GetIndexer()}, nil
}

// Selecting returns the keys (namespace/name) of the Services whose non-empty selector matches
// podLabels.
func (s *Services) Selecting(namespace string, podLabels map[string]string) (sets.Set[string], error) {
	out := sets.New[string]()
	for k, v := range podLabels {
		objs, err := s.indexer.ByIndex(serviceSelectorIndex, labelKey(namespace, k, v))
		if err != nil {
			return nil, err
		}
		for _, obj := range objs {
			svc, ok := obj.(*corev1.Service)
			if !ok || len(svc.Spec.Selector) == 0 {
				continue
			}
			key := svc.Namespace + "/" + svc.Name
			if !out.Has(key) && labels.SelectorFromValidatedSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
				out.Insert(key)
			}
		}
	}
	return out, nil
}

// ForPodChange returns the Services to sync after a Pod event, by upstream's rule: with unchanged
// labels the Services selecting the Pod; with changed labels those selecting it before or after
// if its endpoint changed too, else only those that gained or lost it.
func (s *Services) ForPodChange(key *esutil.PodProjectionKey) (sets.Set[string], error) {
	if key == nil {
		return nil, nil
	}
	now, err := s.Selecting(key.Namespace, key.Labels)
	if err != nil || key.OldLabels == nil {
		return now, err
	}
	before, err := s.Selecting(key.Namespace, key.OldLabels)
	if err != nil {
		return nil, err
	}
	if key.PodChanged {
		return now.Union(before), nil
	}
	return now.SymmetricDifference(before), nil
}
