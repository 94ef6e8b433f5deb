package pods

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcplane/svcplane/pkg/agent/runtime"
)

func (a *Agent) processStatus(ctx context.Context) bool {
	key, quit := a.status.Get()
	if quit {
		return false
	}
	defer a.status.Done(key)
	if err := a.syncStatus(ctx, key); err != nil {
		a.status.AddRateLimited(key)
		return true
	}
	a.status.Forget(key)
	return true
}

// syncStatus writes a Pod's status when it differs from what the API has.
func (a *Agent) syncStatus(ctx context.Context, key string) error {
	pr := a.lookup(key)
	if pr == nil {
		return nil
	}
	pr.mu.Lock()
	if pr.terminating {
		pr.mu.Unlock()
		return nil
	}
	pod := pr.pod
	lastSent := pr.lastSent
	pr.mu.Unlock()
	if cur, err := a.pods.Pods(pod.Namespace).Get(pod.Name); err == nil && cur.UID == pod.UID {
		pod = cur
	}
	known := pod.Status
	if lastSent != nil {
		known = *lastSent
	}
	status := pr.computeStatus(known)
	if apiequality.Semantic.DeepEqual(status, known) {
		return nil
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": pod.UID},
		"status":   status,
	})
	if err != nil {
		return err
	}
	_, err = a.cfg.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	pr.mu.Lock()
	pr.lastSent = nil
	if err == nil {
		pr.lastSent = &status
	}
	pr.mu.Unlock()
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing status of pod %s: %w", key, err)
	}
	return nil
}

// computeStatus derives the Pod's status from its processes and probes, keeping transition
// times of conditions whose status did not change.
func (pr *podRuntime) computeStatus(old corev1.PodStatus) corev1.PodStatus {
	a := pr.agent
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pod := pr.pod
	st := corev1.PodStatus{
		HostIP:    a.cfg.NodeIPs[0].String(),
		HostIPs:   hostIPs(a.cfg.NodeIPs),
		PodIP:     pr.ip.String(),
		PodIPs:    podIPs(pr.ips),
		StartTime: &metav1.Time{Time: pr.startTime.Truncate(time.Second)},
		QOSClass:  old.QOSClass,
	}
	allReady := true
	running, waiting, succeeded, failed := 0, 0, 0, 0
	for _, c := range pr.containers {
		cs := corev1.ContainerStatus{Name: c.spec.Name, Image: c.spec.Image, ImageID: c.spec.Image}
		if c.unsupported != "" {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: ReasonImageUnsupported, Message: c.unsupported}
			st.ContainerStatuses = append(st.ContainerStatuses, cs)
			allReady = false
			waiting++
			continue
		}
		s := c.sup.State()
		cs.RestartCount = int32(s.RestartCount)
		started := c.started
		cs.Started = &started
		if s.LastExit != nil {
			term := terminated(s.LastExit, s.LastStarted)
			if s.Running == nil && (s.Done || s.Waiting == "") {
				cs.State.Terminated = term
			} else {
				cs.LastTerminationState.Terminated = term
			}
		}
		switch {
		case s.Running != nil:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.Time{Time: s.StartedAt.Truncate(time.Second)}}
			cs.ContainerID = "svcplane://" + strconv.Itoa(s.Running.PID)
			cs.Ready = c.ready || (c.spec.ReadinessProbe == nil && c.started)
			running++
		case s.Waiting != "":
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: s.Waiting, Message: s.Message}
			waiting++
		case cs.State.Terminated != nil:
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			} else {
				failed++
			}
		default:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
			waiting++
		}
		if !cs.Ready {
			allReady = false
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	// Upstream's phase rules for a Pod past its init containers.
	total := len(pr.containers)
	switch {
	case waiting > 0 && running == 0 && succeeded+failed == 0:
		st.Phase = corev1.PodPending
	case running > 0 || waiting > 0:
		st.Phase = corev1.PodRunning
	case succeeded == total:
		st.Phase = corev1.PodSucceeded
	case failed > 0:
		st.Phase = corev1.PodFailed
	default:
		st.Phase = corev1.PodPending
	}
	if st.Phase == corev1.PodPending && waiting > 0 {
		for _, cs := range st.ContainerStatuses {
			if cs.State.Waiting != nil && cs.State.Waiting.Reason == ReasonImageUnsupported {
				// A container that can never run fails the Pod, so nobody waits for it.
				st.Phase = corev1.PodFailed
				st.Reason = ReasonImageUnsupported
				st.Message = fmt.Sprintf("container %s: %s", cs.Name, cs.State.Waiting.Message)
			}
		}
	}
	ready := allReady && st.Phase == corev1.PodRunning
	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason}
		if ok {
			c.Status, c.Reason = corev1.ConditionTrue, ""
		}
		c.LastTransitionTime = metav1.Time{Time: time.Now().Truncate(time.Second)}
		for _, o := range old.Conditions {
			if o.Type == t && o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		return c
	}
	st.Conditions = []corev1.PodCondition{
		cond("PodReadyToStartContainers", true, ""),
		cond(corev1.PodInitialized, true, ""),
		cond(corev1.PodReady, ready, "ContainersNotReady"),
		cond(corev1.ContainersReady, ready, "ContainersNotReady"),
		cond(corev1.PodScheduled, true, ""),
	}
	if pod.Status.QOSClass != "" {
		st.QOSClass = pod.Status.QOSClass
	}
	return st
}

func terminated(e *runtime.Exit, started time.Time) *corev1.ContainerStateTerminated {
	t := &corev1.ContainerStateTerminated{
		ExitCode:   int32(e.Code),
		StartedAt:  metav1.Time{Time: started.Truncate(time.Second)},
		FinishedAt: metav1.Time{Time: e.Finished.Truncate(time.Second)},
	}
	switch {
	case e.Code == 0:
		t.Reason = "Completed"
	case e.Code == -1:
		// Exited while no agent was its parent: the code went to init.
		t.Reason, t.ExitCode = "Unknown", 255
	default:
		t.Reason = "Error"
	}
	return t
}

// hostIPs lists the node's addresses as status.hostIPs, primary (status.hostIP) first.
func hostIPs(ips []netip.Addr) []corev1.HostIP {
	out := make([]corev1.HostIP, 0, len(ips))
	for _, ip := range ips {
		out = append(out, corev1.HostIP{IP: ip.String()})
	}
	return out
}

// podIPs lists a Pod's addresses as status.podIPs: primary (status.podIP) first, then the
// other family's, in the order of the Node's podCIDRs.
func podIPs(ips []netip.Addr) []corev1.PodIP {
	out := make([]corev1.PodIP, 0, len(ips))
	for _, ip := range ips {
		out = append(out, corev1.PodIP{IP: ip.String()})
	}
	return out
}
