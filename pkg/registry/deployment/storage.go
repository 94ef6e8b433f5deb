// Package deployment stores apps/v1 Deployments.
package deployment

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/svcplane/svcplane/pkg/registry/base"
)

// Definition describes the deployments resource.
func Definition() base.Definition {
	return base.Definition{
		Resource:   appsv1.Resource("deployments"),
		Singular:   "deployment",
		ShortNames: []string{"deploy"},
		Categories: []string{"all"},
		Namespaced: true,
		New:        func() runtime.Object { return &appsv1.Deployment{} },
		NewList:    func() runtime.Object { return &appsv1.DeploymentList{} },
		Status:     true,
		PrepareForCreate: func(_ context.Context, obj runtime.Object) {
			obj.(*appsv1.Deployment).Status = appsv1.DeploymentStatus{}
		},
		KeepStatus: func(obj, old runtime.Object) { obj.(*appsv1.Deployment).Status = old.(*appsv1.Deployment).Status },
		KeepSpec:   func(obj, old runtime.Object) { obj.(*appsv1.Deployment).Spec = old.(*appsv1.Deployment).Spec },
		SpecChanged: func(obj, old runtime.Object) bool {
			return !base.SpecEqual(obj.(*appsv1.Deployment).Spec, old.(*appsv1.Deployment).Spec)
		},
	}
}
