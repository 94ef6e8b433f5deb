// Package pod stores Pods: graceful deletion (an agent stops the processes before the object
// goes), the status its agent writes, and upstream's narrow rules for spec updates.
package pod

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/svcplane/svcplane/pkg/registry/base"
)

// Definition describes the pods resource.
func Definition() base.Definition {
	return base.Definition{
		Resource:   corev1.Resource("pods"),
		Singular:   "pod",
		ShortNames: []string{"po"},
		Categories: []string{"all"},
		Namespaced: true,
		New:        func() runtime.Object { return &corev1.Pod{} },
		NewList:    func() runtime.Object { return &corev1.PodList{} },
		Status:     true,
		PrepareForCreate: func(_ context.Context, obj runtime.Object) {
			pod := obj.(*corev1.Pod)
			pod.Status = corev1.PodStatus{Phase: corev1.PodPending, QOSClass: qosClass(pod)}
		},
		KeepStatus: func(obj, old runtime.Object) { obj.(*corev1.Pod).Status = old.(*corev1.Pod).Status },
		KeepSpec:   func(obj, old runtime.Object) { obj.(*corev1.Pod).Spec = old.(*corev1.Pod).Spec },
		SpecChanged: func(obj, old runtime.Object) bool {
			return !base.SpecEqual(obj.(*corev1.Pod).Spec, old.(*corev1.Pod).Spec)
		},
		ValidateUpdate: func(_ context.Context, obj, old runtime.Object) field.ErrorList {
			return validateSpecUpdate(obj.(*corev1.Pod), old.(*corev1.Pod))
		},
		GracefulDelete: checkGracefulDelete,
		// Agents watch only their own node's Pods; the watch cache indexes them for that.
		TriggerFields: []string{"spec.nodeName"},
	}
}

// checkGracefulDelete follows upstream: a Pod that runs somewhere is only marked for deletion,
// for its grace period, so its agent can stop it; a Pod that never ran, or has finished, goes at once.
func checkGracefulDelete(_ context.Context, obj runtime.Object, options *metav1.DeleteOptions) bool {
	if options == nil {
		return false
	}
	pod := obj.(*corev1.Pod)
	period := int64(0)
	switch {
	case options.GracePeriodSeconds != nil:
		period = *options.GracePeriodSeconds
	case pod.DeletionGracePeriodSeconds != nil:
		period = *pod.DeletionGracePeriodSeconds
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		period = *pod.Spec.TerminationGracePeriodSeconds
	}
	if pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		period = 0
	}
	// A negative grace period is upstream's old way of asking for the minimum: one second.
	if period < 0 {
		period = 1
	}
	options.GracePeriodSeconds = &period
	return true
}

// validateSpecUpdate allows only the spec changes upstream allows on a running Pod.
func validateSpecUpdate(pod, old *corev1.Pod) field.ErrorList {
	mutable := old.Spec.DeepCopy()
	for i := range mutable.Containers {
		if i < len(pod.Spec.Containers) {
			mutable.Containers[i].Image = pod.Spec.Containers[i].Image
		}
	}
	for i := range mutable.InitContainers {
		if i < len(pod.Spec.InitContainers) {
			mutable.InitContainers[i].Image = pod.Spec.InitContainers[i].Image
		}
	}
	mutable.ActiveDeadlineSeconds = pod.Spec.ActiveDeadlineSeconds
	mutable.Tolerations = pod.Spec.Tolerations
	mutable.TerminationGracePeriodSeconds = pod.Spec.TerminationGracePeriodSeconds
	// spec.nodeName may be set once, by the scheduler, never changed afterwards.
	if old.Spec.NodeName == "" {
		mutable.NodeName = pod.Spec.NodeName
	}
	if base.SpecEqual(*mutable, pod.Spec) {
		return nil
	}
	return field.ErrorList{field.Forbidden(field.NewPath("spec"),
		"pod updates may not change fields other than `spec.containers[*].image`,"+
			"`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "+
			"(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "+
			"(allow it to be set to 1 if it was previously negative)")}
}

// qosClass is upstream's classification: Guaranteed when every container's requests equal its
// limits for cpu and memory, BestEffort when none sets any, Burstable otherwise.
func qosClass(pod *corev1.Pod) corev1.PodQOSClass {
	any, guaranteed := false, true
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[name]
			limit, hasLimit := c.Resources.Limits[name]
			if hasReq || hasLimit {
				any = true
			}
			if !hasLimit || (hasReq && req.Cmp(limit) != 0) {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}
