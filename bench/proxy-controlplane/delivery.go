package main

import (
	"context"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// deliveryWatch measures the part of the network-programming latency that no proxy controls:
// from a slice's trigger time to its watch event reaching a client (two writes through the API
// server and the watch fan-out, on the same loaded machine). It is a third watcher beside the
// two proxies, in the host's namespace.
type deliveryWatch struct {
	mu   sync.Mutex
	lats []float64
}

func startDeliveryWatch(ctx context.Context, c kubernetes.Interface) *deliveryWatch {
	d := &deliveryWatch{}
	factory := informers.NewSharedInformerFactoryWithOptions(c, 0, informers.WithNamespace(benchNamespace))
	inf := factory.Discovery().V1().EndpointSlices().Informer()
	record := func(obj any) {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return
		}
		t, err := time.Parse(time.RFC3339Nano, s.Annotations[corev1.EndpointsLastChangeTriggerTime])
		if err != nil {
			return
		}
		lat := time.Since(t).Seconds()
		d.mu.Lock()
		d.lats = append(d.lats, lat)
		d.mu.Unlock()
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    record,
		UpdateFunc: func(_, obj any) { record(obj) },
	})
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	return d
}

// take returns the latencies recorded so far and forgets them.
func (d *deliveryWatch) take() []float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.lats
	d.lats = nil
	return out
}

// percentile of exact samples (nearest rank).
func percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
