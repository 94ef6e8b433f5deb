package replicaset

import (
	"math"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// podDeletionCostAnnotation lets users pick which Pods go first on scale-down (upstream
// controller.kubernetes.io/pod-deletion-cost, on by default since 1.22).
const podDeletionCostAnnotation = "controller.kubernetes.io/pod-deletion-cost"

// podsToDelete picks the n least valuable of pods, in upstream's order (ActivePodsWithRanks):
// a Pod that costs the least to lose goes first. related are the Pods of this ReplicaSet and its
// siblings (same Deployment), whose spread over nodes decides which node is crowded.
func podsToDelete(pods, related []*corev1.Pod, n int, now time.Time) []*corev1.Pod {
	if n >= len(pods) {
		return pods
	}
	onNode := map[string]int{}
	for _, p := range related {
		if isActive(p) {
			onNode[p.Spec.NodeName]++
		}
	}
	ranked := &rankedPods{pods: append([]*corev1.Pod(nil), pods...), rank: make([]int, len(pods)), now: now}
	for i, p := range ranked.pods {
		ranked.rank[i] = onNode[p.Spec.NodeName]
	}
	sort.Sort(ranked)
	return ranked.pods[:n]
}

type rankedPods struct {
	pods []*corev1.Pod
	rank []int // active related Pods on the same node
	now  time.Time
}

func (r *rankedPods) Len() int { return len(r.pods) }

func (r *rankedPods) Swap(i, j int) {
	r.pods[i], r.pods[j] = r.pods[j], r.pods[i]
	r.rank[i], r.rank[j] = r.rank[j], r.rank[i]
}

// phaseOrder: a Pod that never started is cheapest to lose, a running one dearest.
var phaseOrder = map[corev1.PodPhase]int{corev1.PodPending: 0, corev1.PodUnknown: 1, corev1.PodRunning: 2}

// Less reports whether Pod i should be deleted before Pod j. Each rule only decides when the
// rules before it tie.
func (r *rankedPods) Less(i, j int) bool {
	a, b := r.pods[i], r.pods[j]
	if (a.Spec.NodeName == "") != (b.Spec.NodeName == "") {
		return a.Spec.NodeName == ""
	}
	if phaseOrder[a.Status.Phase] != phaseOrder[b.Status.Phase] {
		return phaseOrder[a.Status.Phase] < phaseOrder[b.Status.Phase]
	}
	if isReady(a) != isReady(b) {
		return !isReady(a)
	}
	if ca, cb := deletionCost(a), deletionCost(b); ca != cb {
		return ca < cb
	}
	// Deleting from a crowded node spreads the survivors.
	if r.rank[i] != r.rank[j] {
		return r.rank[i] > r.rank[j]
	}
	if isReady(a) && isReady(b) {
		ta, tb := readySince(a), readySince(b)
		if !ta.Equal(tb) {
			return r.newerFirst(a, b, ta, tb)
		}
	}
	if ra, rb := maxRestarts(a), maxRestarts(b); ra != rb {
		return ra > rb
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return r.newerFirst(a, b, a.CreationTimestamp.Time, b.CreationTimestamp.Time)
	}
	return false
}

// newerFirst orders by age on a log2 scale (upstream LogarithmicScaleDown): Pods of about the same
// age count as equal and are picked between at random (by UID), so that scaling down repeatedly
// does not always spare the same old Pods. A zero time counts as newest.
func (r *rankedPods) newerFirst(a, b *corev1.Pod, ta, tb time.Time) bool {
	if ta.IsZero() || tb.IsZero() {
		return ta.IsZero()
	}
	if d := ageBucket(r.now, ta) - ageBucket(r.now, tb); d != 0 {
		return d < 0
	}
	return a.UID < b.UID
}

func ageBucket(now, t time.Time) int64 {
	age := now.Sub(t)
	if age <= 0 {
		return -1
	}
	return int64(math.Log2(float64(age)))
}

// deletionCost reads the annotation; a missing or malformed value counts as 0, as upstream's
// controller does (the API server rejects malformed values on write anyway).
func deletionCost(pod *corev1.Pod) int64 {
	v, ok := pod.Annotations[podDeletionCostAnnotation]
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return 0
	}
	return n
}

func readySince(pod *corev1.Pod) time.Time {
	if c := readyCondition(pod); c != nil && c.Status == corev1.ConditionTrue {
		return c.LastTransitionTime.Time
	}
	return time.Time{}
}

func maxRestarts(pod *corev1.Pod) int32 {
	var n int32
	for _, s := range pod.Status.ContainerStatuses {
		n = max(n, s.RestartCount)
	}
	return n
}

func readyCondition(pod *corev1.Pod) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == corev1.PodReady {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

func isReady(pod *corev1.Pod) bool {
	c := readyCondition(pod)
	return c != nil && c.Status == corev1.ConditionTrue
}

// isActive: a Pod that has finished or is being deleted no longer counts towards replicas.
func isActive(pod *corev1.Pod) bool {
	return pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed && pod.DeletionTimestamp == nil
}

// isAvailable is ready for at least minReadySeconds; the second result is how long until a
// ready Pod becomes available (0 when it already is or is not ready).
func isAvailable(pod *corev1.Pod, minReadySeconds int32, now time.Time) (bool, time.Duration) {
	since := readySince(pod)
	if !isReady(pod) {
		return false, 0
	}
	wait := time.Duration(minReadySeconds) * time.Second
	if minReadySeconds == 0 || (!since.IsZero() && since.Add(wait).Before(now)) {
		return true, 0
	}
	if since.IsZero() {
		return false, wait
	}
	return false, since.Add(wait).Sub(now)
}
