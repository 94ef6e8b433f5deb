// Package endpointslice stores discovery.k8s.io/v1 EndpointSlices.
package endpointslice

import (
	"context"
	"maps"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcplane/svcplane/pkg/api/validation"
	"github.com/svcplane/svcplane/pkg/registry/base"
)

// Definition describes the endpointslices resource.
func Definition() base.Definition {
	return base.Definition{
		Resource:   discoveryv1.Resource("endpointslices"),
		Singular:   "endpointslice",
		Namespaced: true,
		New:        func() runtime.Object { return &discoveryv1.EndpointSlice{} },
		NewList:    func() runtime.Object { return &discoveryv1.EndpointSliceList{} },
		Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
			return validation.ValidateEndpointSlice(obj.(*discoveryv1.EndpointSlice))
		},
		ValidateUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
			return validation.ValidateEndpointSliceUpdate(obj.(*discoveryv1.EndpointSlice), old.(*discoveryv1.EndpointSlice))
		},
		// Upstream counts every change of the slice's content, and of its labels, in
		// metadata.generation: the EndpointSlice controller uses it to tell a stale cache from its
		// own writes and to notice someone else relabelling its slices.
		SpecChanged: func(obj, old runtime.Object) bool {
			n, o := obj.(*discoveryv1.EndpointSlice), old.(*discoveryv1.EndpointSlice)
			return n.AddressType != o.AddressType || !base.SpecEqual(n.Endpoints, o.Endpoints) ||
				!base.SpecEqual(n.Ports, o.Ports) || !maps.Equal(n.Labels, o.Labels)
		},
	}
}
