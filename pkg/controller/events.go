package controller

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// Events records one controller's Events. They reach the API only between Start and the stop it
// returns, so a controller built but never run (as in unit tests) writes nothing.
type Events struct {
	record.EventRecorder
	client      kubernetes.Interface
	broadcaster record.EventBroadcaster
}

// NewEvents returns the Events of component (the Event's source, e.g. "replicaset-controller").
func NewEvents(client kubernetes.Interface, component string) *Events {
	broadcaster := record.NewBroadcaster()
	return &Events{
		EventRecorder: broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: component}),
		client:        client,
		broadcaster:   broadcaster,
	}
}

// Start begins writing recorded Events to the API; stop ends it.
func (e *Events) Start() (stop func()) {
	if e.broadcaster == nil {
		return func() {}
	}
	e.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: e.client.CoreV1().Events("")})
	return e.broadcaster.Shutdown
}
