package printers

import (
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/registry/rest"
)

// nodeLostReason is the pod status reason the node lifecycle controller sets
// when a node stops reporting (k8s.io/kubernetes/pkg/util/node).
const nodeLostReason = "NodeLost"

// ForPods prints core/v1 Pods and PodLists: NAME READY STATUS RESTARTS AGE,
// wide IP NODE NOMINATED NODE READINESS GATES.
func ForPods() rest.TableConvertor {
	status := corev1.PodStatus{}.SwaggerDoc()
	spec := corev1.PodSpec{}.SwaggerDoc()
	c := newTableConvertor(
		[]metav1.TableColumnDefinition{
			nameColumn(),
			column("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
			column("Status", "string", "The aggregate status of the containers in this pod."),
			column("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
			ageColumn(),
			wide(column("IP", "string", status["podIP"])),
			wide(column("Node", "string", spec["nodeName"])),
			wide(column("Nominated Node", "string", status["nominatedNodeName"])),
			wide(column("Readiness Gates", "string", spec["readinessGates"])),
		},
		podCells,
	)
	c.conditions = podRowConditions
	return c
}

func podCells(pod *corev1.Pod, now time.Time) []any {
	s := summarizePod(pod)
	restarts := strconv.Itoa(s.restarts)
	if s.restarts != 0 && !s.lastRestart.IsZero() {
		restarts = fmt.Sprintf("%d (%s ago)", s.restarts, since(s.lastRestart, now))
	}
	// Upstream prints the internal type, whose conversion from v1 fills
	// podIPs from podIP when only the latter is set.
	ip := pod.Status.PodIP
	if len(pod.Status.PodIPs) > 0 {
		ip = pod.Status.PodIPs[0].IP
	}
	return []any{
		pod.Name,
		fmt.Sprintf("%d/%d", s.ready, s.total),
		s.reason,
		restarts,
		since(pod.CreationTimestamp, now),
		orNone(ip),
		orNone(pod.Spec.NodeName),
		orNone(pod.Status.NominatedNodeName),
		readinessGates(pod),
	}
}

// podRowConditions marks finished pods, which kubectl uses to tell them apart.
func podRowConditions(pod *corev1.Pod) []metav1.TableRowCondition {
	switch pod.Status.Phase {
	case corev1.PodSucceeded:
		return []metav1.TableRowCondition{{Type: metav1.RowCompleted, Status: metav1.ConditionTrue, Reason: string(corev1.PodSucceeded), Message: "The pod has completed successfully."}}
	case corev1.PodFailed:
		return []metav1.TableRowCondition{{Type: metav1.RowCompleted, Status: metav1.ConditionTrue, Reason: string(corev1.PodFailed), Message: "The pod failed."}}
	}
	return nil
}

type podSummary struct {
	ready, total int
	reason       string
	restarts     int
	lastRestart  metav1.Time
}

// restartTally sums restart counts and remembers the latest time a container
// last terminated.
type restartTally struct {
	count int
	last  metav1.Time
}

func (t *restartTally) add(status corev1.ContainerStatus) {
	t.count += int(status.RestartCount)
	if terminated := status.LastTerminationState.Terminated; terminated != nil && t.last.Before(&terminated.FinishedAt) {
		t.last = terminated.FinishedAt
	}
}

// summarizePod follows upstream printPod's STATUS rules: the most specific
// reason wins, from pod phase, through init containers, to the first
// regular container that is waiting or terminated, then deletion.
func summarizePod(pod *corev1.Pod) podSummary {
	s := podSummary{total: len(pod.Spec.Containers), reason: string(pod.Status.Phase)}
	if pod.Status.Reason != "" {
		s.reason = pod.Status.Reason
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Reason == corev1.PodReasonSchedulingGated {
			s.reason = corev1.PodReasonSchedulingGated
		}
	}

	sidecars := map[string]bool{}
	for _, c := range pod.Spec.InitContainers {
		if isSidecar(c) {
			sidecars[c.Name] = true
			s.total++
		}
	}

	// Init containers run in order; the first one not finished explains the
	// status. Restarts of all init containers seen count while initializing.
	var all, sidecarOnly restartTally
	initializing := false
	for i, status := range pod.Status.InitContainerStatuses {
		all.add(status)
		if sidecars[status.Name] {
			sidecarOnly.add(status)
		}
		if terminated := status.State.Terminated; terminated != nil && terminated.ExitCode == 0 {
			continue
		}
		if sidecars[status.Name] && status.Started != nil && *status.Started {
			if status.Ready {
				s.ready++
			}
			continue
		}
		initializing = true
		switch terminated, waiting := status.State.Terminated, status.State.Waiting; {
		case terminated != nil:
			s.reason = "Init:" + terminationReason(terminated)
		case waiting != nil && waiting.Reason != "" && waiting.Reason != "PodInitializing":
			s.reason = "Init:" + waiting.Reason
		default:
			s.reason = fmt.Sprintf("Init:%d/%d", i, len(pod.Spec.InitContainers))
		}
		break
	}
	s.restarts, s.lastRestart = all.count, all.last

	if !initializing || hasConditionTrue(pod.Status.Conditions, corev1.PodInitialized) {
		// Once running, only sidecar init containers' restarts still matter.
		tally := sidecarOnly
		hasRunning := false
		// Walk backwards so that the first container's reason is the one left.
		for i := len(pod.Status.ContainerStatuses) - 1; i >= 0; i-- {
			status := pod.Status.ContainerStatuses[i]
			tally.add(status)
			switch waiting, terminated := status.State.Waiting, status.State.Terminated; {
			case waiting != nil && waiting.Reason != "":
				s.reason = waiting.Reason
			case terminated != nil:
				s.reason = terminationReason(terminated)
			case status.Ready && status.State.Running != nil:
				hasRunning = true
				s.ready++
			}
		}
		s.restarts, s.lastRestart = tally.count, tally.last
		// A container still running keeps a "Completed" pod Running.
		if s.reason == "Completed" && hasRunning {
			if anyConditionTrue(pod.Status.Conditions, corev1.PodReady) {
				s.reason = "Running"
			} else {
				s.reason = "NotReady"
			}
		}
	}

	if pod.DeletionTimestamp != nil {
		switch {
		case pod.Status.Reason == nodeLostReason:
			s.reason = "Unknown"
		case pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed:
			s.reason = "Terminating"
		}
	}
	return s
}

// isSidecar reports a restartable init container (restartPolicy: Always),
// which runs alongside the regular containers and counts towards READY.
func isSidecar(c corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

func terminationReason(t *corev1.ContainerStateTerminated) string {
	switch {
	case t.Reason != "":
		return t.Reason
	case t.Signal != 0:
		return fmt.Sprintf("Signal:%d", t.Signal)
	default:
		return fmt.Sprintf("ExitCode:%d", t.ExitCode)
	}
}

// hasConditionTrue looks only at the first condition of the type, as upstream
// does for PodInitialized and readiness gates.
func hasConditionTrue(conditions []corev1.PodCondition, typ corev1.PodConditionType) bool {
	for _, c := range conditions {
		if c.Type == typ {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// anyConditionTrue looks at every condition of the type, as upstream does for
// PodReady.
func anyConditionTrue(conditions []corev1.PodCondition, typ corev1.PodConditionType) bool {
	for _, c := range conditions {
		if c.Type == typ && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func readinessGates(pod *corev1.Pod) string {
	if len(pod.Spec.ReadinessGates) == 0 {
		return "<none>"
	}
	passed := 0
	for _, gate := range pod.Spec.ReadinessGates {
		if hasConditionTrue(pod.Status.Conditions, gate.ConditionType) {
			passed++
		}
	}
	return fmt.Sprintf("%d/%d", passed, len(pod.Spec.ReadinessGates))
}
