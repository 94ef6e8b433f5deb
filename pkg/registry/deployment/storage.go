// Package deployment stores apps/v1 Deployments.
package deployment

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcplane/svcplane/pkg/api/validation"
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
		// Upstream counts annotation changes as a new generation too: `kubectl rollout undo` and
		// change-cause edits then show up as an unobserved generation until the controller acts.
		SpecChanged: func(obj, old runtime.Object) bool {
			d, o := obj.(*appsv1.Deployment), old.(*appsv1.Deployment)
			return !base.SpecEqual(d.Spec, o.Spec) || !base.SpecEqual(d.Annotations, o.Annotations)
		},
		Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
			return validation.ValidateDeployment(obj.(*appsv1.Deployment))
		},
		ValidateUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
			return validation.ValidateDeploymentUpdate(obj.(*appsv1.Deployment), old.(*appsv1.Deployment))
		},
		ValidateStatus: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
			return validation.ValidateDeploymentStatusUpdate(obj.(*appsv1.Deployment), old.(*appsv1.Deployment))
		},
		StatusWritesAnnotations: true,
		Scale: &base.Scale{
			Read: func(obj runtime.Object) (int32, int32, *metav1.LabelSelector) {
				d := obj.(*appsv1.Deployment)
				return replicas(d.Spec.Replicas), d.Status.Replicas, d.Spec.Selector
			},
			SetReplicas: func(obj runtime.Object, n int32) { obj.(*appsv1.Deployment).Spec.Replicas = &n },
		},
	}
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}
