// Package endpoints stores the legacy core/v1 Endpoints.
package endpoints

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcplane/svcplane/pkg/api/validation"
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
		Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
			return validation.ValidateEndpoints(obj.(*corev1.Endpoints))
		},
		ValidateUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
			return validation.ValidateEndpointsUpdate(obj.(*corev1.Endpoints), old.(*corev1.Endpoints))
		},
	}
}
