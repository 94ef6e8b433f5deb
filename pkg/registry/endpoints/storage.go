// Package endpoints stores the legacy core/v1 Endpoints.
package endpoints

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/svcplane/svcplane/pkg/registry/base"
)

// Definition describes the endpoints resource.
func Definition() base.Definition {
	return base.Definition{
		Resource:   corev1.Resource("endpoints"),
		Singular:   "endpoints",
		ShortNames: []string{"ep"},
		Namespaced: true,
		New:        func() runtime.Object { return &corev1.Endpoints{} },
		NewList:    func() runtime.Object { return &corev1.EndpointsList{} },
	}
}
