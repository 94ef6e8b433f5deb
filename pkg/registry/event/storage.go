// Package event stores core/v1 Events, which expire after a TTL as upstream's --event-ttl.
package event

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/svcplane/svcplane/pkg/registry/base"
)

// DefaultTTLSeconds is how long an Event is kept, upstream's default of one hour.
const DefaultTTLSeconds = 3600

// Definition describes the events resource.
func Definition() base.Definition {
	return base.Definition{
		Resource:   corev1.Resource("events"),
		Singular:   "event",
		ShortNames: []string{"ev"},
		Namespaced: true,
		New:        func() runtime.Object { return &corev1.Event{} },
		NewList:    func() runtime.Object { return &corev1.EventList{} },
		TTLSeconds: DefaultTTLSeconds,
	}
}
