// Package endpointslice stores discovery.k8s.io/v1 EndpointSlices.
package endpointslice

import (
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"

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
		// Upstream counts every change of the slice's content in metadata.generation, which the
		// EndpointSlice controller uses to tell a stale cache from its own writes.
		SpecChanged: func(obj, old runtime.Object) bool {
			n, o := obj.(*discoveryv1.EndpointSlice), old.(*discoveryv1.EndpointSlice)
			return n.AddressType != o.AddressType || !base.SpecEqual(n.Endpoints, o.Endpoints) ||
				!base.SpecEqual(n.Ports, o.Ports)
		},
	}
}
