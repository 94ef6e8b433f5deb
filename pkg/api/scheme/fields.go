package scheme

import (
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// selectableFields are the field selectors upstream accepts for each kind, beyond metadata.name
// and metadata.namespace (kubectl describe lists Events by involvedObject.*, an agent lists its
// Pods by spec.nodeName).
var selectableFields = map[schema.GroupVersionKind][]string{
	corev1.SchemeGroupVersion.WithKind("Pod"): {
		"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
		"spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName",
	},
	corev1.SchemeGroupVersion.WithKind("Event"): {
		"involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
		"involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
		"reason", "reportingComponent", "source", "type",
	},
	corev1.SchemeGroupVersion.WithKind("Namespace"):          {"status.phase"},
	corev1.SchemeGroupVersion.WithKind("Node"):               {"spec.unschedulable"},
	corev1.SchemeGroupVersion.WithKind("Service"):            {"spec.clusterIP", "spec.type"},
	appsv1.SchemeGroupVersion.WithKind("ReplicaSet"):         {"status.replicas"},
	corev1.SchemeGroupVersion.WithKind("Endpoints"):          {},
	corev1.SchemeGroupVersion.WithKind("Binding"):            {},
	appsv1.SchemeGroupVersion.WithKind("Deployment"):         {},
	discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"): {},
}

func addFieldLabelConversions(s *runtime.Scheme) error {
	for gvk, labels := range selectableFields {
		allowed := map[string]bool{"metadata.name": true, "metadata.namespace": true}
		for _, l := range labels {
			allowed[l] = true
		}
		convert := func(label, value string) (string, string, error) {
			if !allowed[label] {
				return "", "", fmt.Errorf("field label not supported: %s", label)
			}
			return label, value, nil
		}
		internal := schema.GroupVersionKind{Group: gvk.Group, Version: runtime.APIVersionInternal, Kind: gvk.Kind}
		for _, k := range []schema.GroupVersionKind{gvk, internal} {
			if err := s.AddFieldLabelConversionFunc(k, convert); err != nil {
				return err
			}
		}
	}
	return nil
}

// FieldSet returns the values of obj's selectable fields, for field selectors in list and watch.
func FieldSet(obj runtime.Object) fields.Set {
	switch o := obj.(type) {
	case *corev1.Pod:
		podIPs := make([]string, 0, len(o.Status.PodIPs))
		for _, ip := range o.Status.PodIPs {
			podIPs = append(podIPs, ip.IP)
		}
		podIPsValue := ""
		if len(podIPs) > 0 {
			podIPsValue = podIPs[0]
			for _, ip := range podIPs[1:] {
				podIPsValue += "," + ip
			}
		}
		return withMeta(o.Name, o.Namespace, fields.Set{
			"spec.nodeName":            o.Spec.NodeName,
			"spec.restartPolicy":       string(o.Spec.RestartPolicy),
			"spec.schedulerName":       o.Spec.SchedulerName,
			"spec.serviceAccountName":  o.Spec.ServiceAccountName,
			"spec.hostNetwork":         strconv.FormatBool(o.Spec.HostNetwork),
			"status.phase":             string(o.Status.Phase),
			"status.podIP":             o.Status.PodIP,
			"status.podIPs":            podIPsValue,
			"status.nominatedNodeName": o.Status.NominatedNodeName,
		})
	case *corev1.Event:
		source := o.Source.Component
		if source == "" {
			source = o.ReportingController
		}
		return withMeta(o.Name, o.Namespace, fields.Set{
			"involvedObject.kind":            o.InvolvedObject.Kind,
			"involvedObject.namespace":       o.InvolvedObject.Namespace,
			"involvedObject.name":            o.InvolvedObject.Name,
			"involvedObject.uid":             string(o.InvolvedObject.UID),
			"involvedObject.apiVersion":      o.InvolvedObject.APIVersion,
			"involvedObject.resourceVersion": o.InvolvedObject.ResourceVersion,
			"involvedObject.fieldPath":       o.InvolvedObject.FieldPath,
			"reason":                         o.Reason,
			"reportingComponent":             o.ReportingController,
			"source":                         source,
			"type":                           o.Type,
		})
	case *corev1.Namespace:
		return withMeta(o.Name, "", fields.Set{"status.phase": string(o.Status.Phase)})
	case *corev1.Node:
		return withMeta(o.Name, "", fields.Set{"spec.unschedulable": strconv.FormatBool(o.Spec.Unschedulable)})
	case *corev1.Service:
		return withMeta(o.Name, o.Namespace, fields.Set{"spec.clusterIP": o.Spec.ClusterIP, "spec.type": string(o.Spec.Type)})
	case *appsv1.ReplicaSet:
		return withMeta(o.Name, o.Namespace, fields.Set{"status.replicas": strconv.Itoa(int(o.Status.Replicas))})
	}
	return nil
}

func withMeta(name, namespace string, set fields.Set) fields.Set {
	set["metadata.name"] = name
	if namespace != "" {
		set["metadata.namespace"] = namespace
	}
	return set
}
