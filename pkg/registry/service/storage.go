// Package service stores Services: the create and update rules of spec and status.
package service

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/svcplane/svcplane/pkg/registry/base"
)

// Definition describes the services resource.
func Definition() base.Definition {
	return base.Definition{
		Resource:   corev1.Resource("services"),
		Singular:   "service",
		ShortNames: []string{"svc"},
		Categories: []string{"all"},
		Namespaced: true,
		New:        func() runtime.Object { return &corev1.Service{} },
		NewList:    func() runtime.Object { return &corev1.ServiceList{} },
		// Kubernetes 1.37 accepts any RFC 1123 label, including one that starts with a digit.
		ValidateName: apimachineryvalidation.NameIsDNSLabel,
		Status:       true,
		PrepareForCreate: func(_ context.Context, obj runtime.Object) {
			obj.(*corev1.Service).Status = corev1.ServiceStatus{}
		},
		KeepStatus: func(obj, old runtime.Object) { obj.(*corev1.Service).Status = old.(*corev1.Service).Status },
		KeepSpec:   func(obj, old runtime.Object) { obj.(*corev1.Service).Spec = old.(*corev1.Service).Spec },
	}
}
