package proxy

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The network-programming latency histogram is fed from Snapshot.ChangeTimes: it must hold
// the endpoint controllers' trigger times of changes made while this proxy ran, and nothing
// else, or the histogram reports latencies nobody waited for (as kube-proxy's does).
func TestChangeTimesAreTriggerTimesSinceStart(t *testing.T) {
	tr := NewTracker(corev1.IPv4Protocol, "node1", nil)
	before := tr.started.Add(-time.Hour) // a change an earlier proxy programmed
	after := tr.started.Add(time.Millisecond)

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.5", Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}}
	slice := func(name string, trigger *time.Time) *discoveryv1.EndpointSlice {
		s := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name,
				Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
			Ports: []discoveryv1.EndpointPort{{Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
		if trigger != nil {
			s.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: trigger.UTC().Format(time.RFC3339Nano)}
		}
		return s
	}

	tr.OnServiceAdd(svc)
	tr.OnEndpointSliceAdd(slice("old", &before))
	tr.OnEndpointSliceAdd(slice("hand-made", nil))
	tr.OnEndpointSliceAdd(slice("new", &after))
	tr.OnEndpointSliceDelete(slice("deleted", &after))
	tr.OnServiceSynced()
	tr.OnEndpointSlicesSynced()

	got := tr.Snapshot().ChangeTimes
	if len(got) != 1 || !got[0].Equal(after) {
		t.Fatalf("ChangeTimes = %v, want only the trigger time %v of the change made after the start", got, after)
	}
	if again := tr.Snapshot().ChangeTimes; len(again) != 0 {
		t.Fatalf("a second Snapshot reported %v again", again)
	}
}
