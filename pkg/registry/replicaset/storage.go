// Package replicaset stores apps/v1 ReplicaSets.
package replicaset

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"

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
	}
}
