// Package replicaset stores apps/v1 ReplicaSets.
package replicaset

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcplane/svcplane/pkg/api/validation"
	"github.com/svcplane/svcplane/pkg/registry/base"
)

// Definition describes the replicasets resource.
func Definition() base.Definition {
	return base.Definition{
		Resource:   appsv1.Resource("replicasets"),
		Singular:   "replicaset",
		ShortNames: []string{"rs"},
		Categories: []string{"all"},
		Namespaced: true,
		New:        func() runtime.Object { return &appsv1.ReplicaSet{} },
		NewList:    func() runtime.Object { return &appsv1.ReplicaSetList{} },
		Status:     true,
		PrepareForCreate: func(_ context.Context, obj runtime.Object) {
			obj.(*appsv1.ReplicaSet).Status = appsv1.ReplicaSetStatus{}
		},
		KeepStatus: func(obj, old runtime.Object) { obj.(*appsv1.ReplicaSet).Status = old.(*appsv1.ReplicaSet).Status },
		KeepSpec:   func(obj, old runtime.Object) { obj.(*appsv1.ReplicaSet).Spec = old.(*appsv1.ReplicaSet).Spec },
		SpecChanged: func(obj, old runtime.Object) bool {
			return !base.SpecEqual(obj.(*appsv1.ReplicaSet).Spec, old.(*appsv1.ReplicaSet).Spec)
		},
		Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
			return validation.ValidateReplicaSet(obj.(*appsv1.ReplicaSet))
		},
		ValidateUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
			return validation.ValidateReplicaSetUpdate(obj.(*appsv1.ReplicaSet), old.(*appsv1.ReplicaSet))
		},
		ValidateStatus: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
			return validation.ValidateReplicaSetStatusUpdate(obj.(*appsv1.ReplicaSet), old.(*appsv1.ReplicaSet))
		},
		Scale: &base.Scale{
			Read: func(obj runtime.Object) (int32, int32, *metav1.LabelSelector) {
				rs := obj.(*appsv1.ReplicaSet)
				n := int32(1)
				if rs.Spec.Replicas != nil {
					n = *rs.Spec.Replicas
				}
				return n, rs.Status.Replicas, rs.Spec.Selector
			},
			SetReplicas: func(obj runtime.Object, n int32) { obj.(*appsv1.ReplicaSet).Spec.Replicas = &n },
		},
	}
}
