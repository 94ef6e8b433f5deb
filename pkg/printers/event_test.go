package printers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestEventCells(t *testing.T) {
	microAgo := func(d time.Duration) metav1.MicroTime { return metav1.NewMicroTime(testNow.Add(-d)) }
	pod := corev1.ObjectReference{Kind: "Pod", Name: "web-7d4b9", FieldPath: "spec.containers{app}"}
	for _, tc := range []struct {
		name  string
		event corev1.Event
		// LAST SEEN TYPE REASON OBJECT SUBOBJECT SOURCE MESSAGE FIRST SEEN COUNT NAME
		want []any
	}{
		{
			name: "legacy event uses its timestamps, count and source",
			event: corev1.Event{
				ObjectMeta: metav1.ObjectMeta{Name: "web-7d4b9.1"}, InvolvedObject: pod, Type: "Warning", Reason: "BackOff",
				Message: "Back-off restarting failed container\n", Source: corev1.EventSource{Component: "kubelet", Host: "node-1"},
				FirstTimestamp: ago(10 * time.Minute), LastTimestamp: ago(30 * time.Second), Count: 12,
			},
			want: []any{"30s", "Warning", "BackOff", "pod/web-7d4b9", "spec.containers{app}", "kubelet, node-1", "Back-off restarting failed container", "10m", int64(12), "web-7d4b9.1"},
		},
		{
			name: "events.k8s.io event uses eventTime, series and the reporting controller",
			event: corev1.Event{
				ObjectMeta: metav1.ObjectMeta{Name: "web.2"}, InvolvedObject: corev1.ObjectReference{Kind: "Deployment", Name: "web"}, Type: "Normal", Reason: "ScalingReplicaSet",
				Message: "Scaled up", ReportingController: "deployment-controller", ReportingInstance: "controller-0",
				EventTime: microAgo(5 * time.Minute), Series: &corev1.EventSeries{Count: 3, LastObservedTime: microAgo(time.Minute)},
			},
			want: []any{"60s", "Normal", "ScalingReplicaSet", "deployment/web", "", "deployment-controller, controller-0", "Scaled up", "5m", int64(3), "web.2"},
		},
		{
			name: "singleton event without count or last timestamp counts once, last seen at first seen",
			event: corev1.Event{
				ObjectMeta: metav1.ObjectMeta{Name: "n.3"}, InvolvedObject: corev1.ObjectReference{Kind: "Node"}, Type: "Normal", Reason: "Starting",
				Source: corev1.EventSource{Component: "kubelet"}, EventTime: microAgo(2 * time.Hour),
			},
			want: []any{"120m", "Normal", "Starting", "node", "", "kubelet", "", "120m", int64(1), "n.3"},
		},
		{
			name:  "event without any timestamp is unknown",
			event: corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "x"}, InvolvedObject: pod},
			want:  []any{"<unknown>", "", "", "pod/web-7d4b9", "spec.containers{app}", "", "", "<unknown>", int64(1), "x"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertCells(t, eventCells(&tc.event, testNow), tc.want)
		})
	}
}
