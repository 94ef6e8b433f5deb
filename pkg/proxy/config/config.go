// Package config delivers Service and EndpointSlice informer events to a proxy's handlers
// (On<Kind>Add/Update/Delete and On<Kind>Synced once the initial list is in). Objects are slimmed
// before they enter the informer cache: a proxy at 10k Services must not hold managed fields and
// last-applied annotations it never reads.
package config

import (
	"context"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// ServiceHandler receives Service events.
type ServiceHandler interface {
	OnServiceAdd(*corev1.Service)
	OnServiceUpdate(old, cur *corev1.Service)
	OnServiceDelete(*corev1.Service)
	OnServiceSynced()
}

// EndpointSliceHandler receives EndpointSlice events.
type EndpointSliceHandler interface {
	OnEndpointSliceAdd(*discoveryv1.EndpointSlice)
	OnEndpointSliceUpdate(old, cur *discoveryv1.EndpointSlice)
	OnEndpointSliceDelete(*discoveryv1.EndpointSlice)
	OnEndpointSlicesSynced()
}

// Handler is both; pkg/proxy.Tracker implements it.
type Handler interface {
	ServiceHandler
	EndpointSliceHandler
}

// Run starts the informers and delivers events to h until ctx ends. Like kube-proxy it skips
// Services labelled service.kubernetes.io/service-proxy-name (handled by another proxy) and
// headless Services (DNS only), filtering on the server.
func Run(ctx context.Context, client kubernetes.Interface, resync time.Duration, h Handler) {
	noProxyName, _ := labels.NewRequirement("service.kubernetes.io/service-proxy-name", selection.DoesNotExist, nil)
	noHeadless, _ := labels.NewRequirement(corev1.IsHeadlessService, selection.DoesNotExist, nil)
	selector := labels.NewSelector().Add(*noProxyName, *noHeadless)
	factory := informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector.String() }))

	svcInf := factory.Core().V1().Services().Informer()
	_ = svcInf.SetTransform(slimService)
	svcReg, _ := svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) {
			if s, ok := o.(*corev1.Service); ok {
				h.OnServiceAdd(s)
			}
		},
		UpdateFunc: func(o, n any) {
			old, ok1 := o.(*corev1.Service)
			cur, ok2 := n.(*corev1.Service)
			if ok1 && ok2 {
				h.OnServiceUpdate(old, cur)
			}
		},
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if s, ok := o.(*corev1.Service); ok {
				h.OnServiceDelete(s)
			}
		},
	})
	sliceInf := factory.Discovery().V1().EndpointSlices().Informer()
	_ = sliceInf.SetTransform(slimSlice)
	sliceReg, _ := sliceInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) {
			if s, ok := o.(*discoveryv1.EndpointSlice); ok {
				h.OnEndpointSliceAdd(s)
			}
		},
		UpdateFunc: func(o, n any) {
			old, ok1 := o.(*discoveryv1.EndpointSlice)
			cur, ok2 := n.(*discoveryv1.EndpointSlice)
			if ok1 && ok2 {
				h.OnEndpointSliceUpdate(old, cur)
			}
		},
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if s, ok := o.(*discoveryv1.EndpointSlice); ok {
				h.OnEndpointSliceDelete(s)
			}
		},
	})
	// The EndpointSlice selector above is harmless: slices never carry those labels on
	// their own, the controller copies the Service's.
	factory.Start(ctx.Done())
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), svcReg.HasSynced) {
			h.OnServiceSynced()
		}
	}()
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), sliceReg.HasSynced) {
			h.OnEndpointSlicesSynced()
		}
	}()
	<-ctx.Done()
	factory.Shutdown()
}

// slimService keeps what pkg/proxy reads. Guard: a field added here costs memory ×
// every Service on every node.
func slimService(o any) (any, error) {
	s, ok := o.(*corev1.Service)
	if !ok {
		return o, nil
	}
	out := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID,
			ResourceVersion: s.ResourceVersion, Annotations: ownAnnotations(s.Annotations, "svcplane.io/")},
		Spec: s.Spec,
	}
	out.Spec.Selector = nil
	out.Status.LoadBalancer = s.Status.LoadBalancer
	return out, nil
}

func slimSlice(o any) (any, error) {
	s, ok := o.(*discoveryv1.EndpointSlice)
	if !ok {
		return o, nil
	}
	out := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID,
			ResourceVersion: s.ResourceVersion, Labels: s.Labels,
			Annotations: ownAnnotations(s.Annotations, corev1.EndpointsLastChangeTriggerTime)},
		AddressType: s.AddressType,
		Ports:       s.Ports,
		Endpoints:   make([]discoveryv1.Endpoint, len(s.Endpoints)),
	}
	for i, e := range s.Endpoints {
		e.TargetRef, e.Hostname, e.DeprecatedTopology = nil, nil, nil
		out.Endpoints[i] = e
	}
	return out, nil
}

func ownAnnotations(in map[string]string, prefix string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if strings.HasPrefix(k, prefix) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
