// Package node stores Nodes; their agents write the status.
package node

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/svcplane/svcplane/pkg/registry/base"
)

// Definition describes the nodes resource.
func Definition() base.Definition {
	return base.Definition{
		Resource:   corev1.Resource("nodes"),
		Singular:   "node",
		ShortNames: []string{"no"},
		New:        func() runtime.Object { return &corev1.Node{} },
		NewList:    func() runtime.Object { return &corev1.NodeList{} },
		// A node registers itself with its status, so create keeps it (as upstream).
		Status:     true,
		KeepStatus: func(obj, old runtime.Object) { obj.(*corev1.Node).Status = old.(*corev1.Node).Status },
		KeepSpec:   func(obj, old runtime.Object) { obj.(*corev1.Node).Spec = old.(*corev1.Node).Spec },
	}
}
