package printers

import (
	"cmp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/registry/rest"
)

// ForEvents prints core/v1 Events and EventLists: LAST SEEN TYPE REASON
// OBJECT MESSAGE, wide SUBOBJECT SOURCE (between OBJECT and MESSAGE) and
// FIRST SEEN COUNT NAME.
func ForEvents() rest.TableConvertor {
	docs := corev1.Event{}.SwaggerDoc()
	return newTableConvertor(
		[]metav1.TableColumnDefinition{
			column("Last Seen", "string", docs["lastTimestamp"]),
			column("Type", "string", docs["type"]),
			column("Reason", "string", docs["reason"]),
			column("Object", "string", docs["involvedObject"]),
			wide(column("Subobject", "string", corev1.ObjectReference{}.SwaggerDoc()["fieldPath"])),
			wide(column("Source", "string", docs["source"])),
			column("Message", "string", docs["message"]),
			wide(column("First Seen", "string", docs["firstTimestamp"])),
			wide(column("Count", "string", docs["count"])),
			wide(nameColumn()),
		},
		eventCells,
	)
}

func eventCells(ev *corev1.Event, now time.Time) []any {
	// Events written through events.k8s.io carry eventTime and series
	// instead of the legacy first/last timestamps and count.
	firstSeen := since(ev.FirstTimestamp, now)
	if ev.FirstTimestamp.IsZero() {
		firstSeen = since(metav1.Time(ev.EventTime), now)
	}
	lastSeen := since(ev.LastTimestamp, now)
	if ev.LastTimestamp.IsZero() {
		lastSeen = firstSeen
	}
	count := ev.Count
	if ev.Series != nil {
		lastSeen = since(metav1.Time(ev.Series.LastObservedTime), now)
		count = ev.Series.Count
	} else if count == 0 {
		count = 1
	}

	object := strings.ToLower(ev.InvolvedObject.Kind)
	if ev.InvolvedObject.Name != "" {
		object += "/" + ev.InvolvedObject.Name
	}
	return []any{
		lastSeen,
		ev.Type,
		ev.Reason,
		object,
		ev.InvolvedObject.FieldPath,
		eventSource(ev),
		strings.TrimSpace(ev.Message),
		firstSeen,
		int64(count),
		ev.Name,
	}
}

// eventSource is "component, host", falling back to the events.k8s.io
// reporting controller and instance, and leaving out an empty host.
func eventSource(ev *corev1.Event) string {
	component := cmp.Or(ev.Source.Component, ev.ReportingController)
	host := cmp.Or(ev.Source.Host, ev.ReportingInstance)
	if host == "" {
		return component
	}
	return component + ", " + host
}
