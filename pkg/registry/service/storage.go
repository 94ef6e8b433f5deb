// Package service stores Services: the create and update rules of spec and status.
package service

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcplane/svcplane/pkg/api/validation"
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
		// Validation runs where upstream's does. Upstream's store first normalizes clusterIP into
		// clusterIPs and allocates IP families, cluster IPs, node ports and the health-check node
		// port (BeginCreate/BeginUpdate), rejecting malformed, out-of-range or taken values with
		// its own 422; only then do PrepareForCreate/Update and these checks run, so they see the
		// allocated values: clusterIPs agree with clusterIP and ipFamilies, a LoadBalancer with
		// externalTrafficPolicy Local has its healthCheckNodePort. Everything that needs no
		// allocation (ports, names, types, policies, externalIPs, source ranges, affinity) is
		// decided here alone.
		Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
			return validation.ValidateService(obj.(*corev1.Service))
		},
		ValidateUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
			return validation.ValidateServiceUpdate(obj.(*corev1.Service), old.(*corev1.Service))
		},
		ValidateStatus: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
			return validation.ValidateServiceStatusUpdate(obj.(*corev1.Service), old.(*corev1.Service))
		},
		KeepStatus: func(obj, old runtime.Object) { obj.(*corev1.Service).Status = old.(*corev1.Service).Status },
		KeepSpec:   func(obj, old runtime.Object) { obj.(*corev1.Service).Spec = old.(*corev1.Service).Spec },
	}
}
