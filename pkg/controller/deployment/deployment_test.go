package deployment

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/svcplane/svcplane/pkg/controller"
)

func rollingDeployment(replicas int32, surge, unavailable intstr.IntOrString) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "d-uid"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unavailable}},
		},
	}
}

// TestFenceposts pins upstream's ResolveFenceposts: surge rounds up, unavailable rounds down,
// and both resolving to 0 means one Pod may be unavailable.
func TestFenceposts(t *testing.T) {
	pct := intstr.FromString
	n := intstr.FromInt32
	for _, tc := range []struct {
		replicas                   int32
		surge, unavailable         intstr.IntOrString
		wantSurge, wantUnavailable int32
	}{
		{4, pct("25%"), pct("25%"), 1, 1},
		{5, pct("25%"), pct("25%"), 2, 1},
		{10, pct("25%"), pct("25%"), 3, 2},
		{1, pct("25%"), pct("25%"), 1, 0},
		{3, n(0), pct("10%"), 0, 1},
		{3, n(2), n(5), 2, 3}, // maxUnavailable is capped at the replica count
	} {
		d := rollingDeployment(tc.replicas, tc.surge, tc.unavailable)
		if s, u := maxSurge(d), maxUnavailable(d); s != tc.wantSurge || u != tc.wantUnavailable {
			t.Errorf("replicas %d surge %s unavailable %s: got %d/%d, want %d/%d", tc.replicas, tc.surge.String(),
				tc.unavailable.String(), s, u, tc.wantSurge, tc.wantUnavailable)
		}
	}
	recreate := rollingDeployment(3, n(1), n(1))
	recreate.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	if maxSurge(recreate) != 0 || maxUnavailable(recreate) != 0 {
		t.Error("Recreate has no fenceposts")
	}
}

func testRS(name string, replicas, available int32, created time.Duration, annotations map[string]string) *appsv1.ReplicaSet {
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: annotations,
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(created))},
		Spec:   appsv1.ReplicaSetSpec{Replicas: &replicas},
		Status: appsv1.ReplicaSetStatus{Replicas: replicas, AvailableReplicas: available, ReadyReplicas: available},
	}
}

func TestNewRSReplicasStaysWithinSurge(t *testing.T) {
	d := rollingDeployment(10, intstr.FromString("25%"), intstr.FromString("25%"))
	old, newRS := testRS("old", 10, 10, 0, nil), testRS("new", 0, 0, time.Hour, nil)
	if got := newRSReplicas(d, []*appsv1.ReplicaSet{old, newRS}, newRS); got != 3 {
		t.Errorf("first step: new ReplicaSet may grow to %d, want 3 (the surge)", got)
	}
	old, newRS = testRS("old", 8, 8, 0, nil), testRS("new", 3, 0, time.Hour, nil)
	if got := newRSReplicas(d, []*appsv1.ReplicaSet{old, newRS}, newRS); got != 5 {
		t.Errorf("after old scaled to 8: new may grow to %d, want 5", got)
	}
	old, newRS = testRS("old", 0, 0, 0, nil), testRS("new", 9, 9, time.Hour, nil)
	if got := newRSReplicas(d, []*appsv1.ReplicaSet{old, newRS}, newRS); got != 10 {
		t.Errorf("last step: %d, want the replica count 10, not more", got)
	}
}

// TestProportionalScaling: a size change mid-rollout is shared out by the ReplicaSets' sizes
// (upstream's proportional scaling), so the mix of old and new Pods stays as it was.
func TestProportionalScaling(t *testing.T) {
	d := rollingDeployment(20, intstr.FromString("25%"), intstr.FromString("25%"))
	scaledFor := map[string]string{desiredReplicasAnnotation: "10", maxReplicasAnnotation: "13"}
	old := testRS("web-old", 8, 8, 0, scaledFor)
	newRS := testRS("web-new", 5, 2, time.Hour, scaledFor)
	client := fake.NewSimpleClientset(old, newRS)
	dc := &Controller{client: client, events: &controller.Events{EventRecorder: record.NewFakeRecorder(100)}, now: time.Now}
	if err := dc.scale(context.Background(), d, newRS, []*appsv1.ReplicaSet{old}); err != nil {
		t.Fatal(err)
	}
	// 20 replicas + 5 surge = 25 allowed; 13 → 25 adds 12: 8·25/13 ≈ 15 and 5·25/13 ≈ 10.
	for name, want := range map[string]int32{"web-old": 15, "web-new": 10} {
		rs, err := client.AppsV1().ReplicaSets("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if *rs.Spec.Replicas != want || rs.Annotations[desiredReplicasAnnotation] != "20" || rs.Annotations[maxReplicasAnnotation] != "25" {
			t.Errorf("%s: %d replicas, annotations %v; want %d, desired 20, max 25", name, *rs.Spec.Replicas, rs.Annotations, want)
		}
	}
}

func TestTemplateHash(t *testing.T) {
	a := &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", "tier": "x"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}}}
	b := a.DeepCopy()
	if templateHash(a, nil) != templateHash(b, nil) {
		t.Error("equal templates hash differently")
	}
	if templateHash(a, nil) == templateHash(a, ptr.To(int32(1))) {
		t.Error("a collision count must change the hash")
	}
	b.Spec.Containers[0].Image = "web:2"
	if templateHash(a, nil) == templateHash(b, nil) {
		t.Error("different templates hash alike")
	}
	withHash := a.DeepCopy()
	withHash.Labels[podTemplateHashLabel] = templateHash(a, nil)
	if !sameTemplate(a, withHash) || sameTemplate(a, b) {
		t.Error("sameTemplate must ignore only the pod-template-hash label")
	}
}

// TestRevisionAnnotations: a rollback reuses a ReplicaSet; it gets the next revision and keeps
// the ones it had in revision-history, as `kubectl rollout history` expects.
func TestRevisionAnnotations(t *testing.T) {
	d := rollingDeployment(3, intstr.FromString("25%"), intstr.FromString("25%"))
	d.Annotations = map[string]string{"kubernetes.io/change-cause": "undo", lastAppliedAnnotation: "{}", revisionAnnotation: "2"}
	rs := testRS("web-1", 0, 0, 0, map[string]string{revisionAnnotation: "1"})
	if !setNewRSAnnotations(d, rs, "3", true) {
		t.Fatal("no change reported")
	}
	want := map[string]string{revisionAnnotation: "3", revisionHistoryAnnotation: "1", "kubernetes.io/change-cause": "undo"}
	for k, v := range want {
		if rs.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, rs.Annotations[k], v)
		}
	}
	if _, ok := rs.Annotations[lastAppliedAnnotation]; ok {
		t.Error("last-applied-configuration must stay on the Deployment")
	}
	fresh := testRS("web-2", 0, 0, 0, nil)
	setNewRSAnnotations(d, fresh, "4", false)
	if fresh.Annotations[revisionAnnotation] != "4" || fresh.Annotations[desiredReplicasAnnotation] != "3" || fresh.Annotations[maxReplicasAnnotation] != "4" {
		t.Errorf("new ReplicaSet annotations = %v", fresh.Annotations)
	}
}

func TestProgressingConditions(t *testing.T) {
	d := rollingDeployment(3, intstr.FromString("25%"), intstr.FromString("25%"))
	d.Spec.ProgressDeadlineSeconds = ptr.To(int32(60))
	d.Generation = 2
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 1, Conditions: []appsv1.DeploymentCondition{
		newCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, reasonRSUpdated, "x", start)}}
	stuck := d.Status
	if timedOut(d, &stuck, start.Add(59*time.Second)) || !timedOut(d, &stuck, start.Add(61*time.Second)) {
		t.Error("the deadline counts from the condition's lastUpdateTime")
	}
	done := appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}
	if !complete(d, &done) || !progressing(d, &done) {
		t.Error("all updated and available is complete, and progress")
	}
	d.Generation = 3
	if complete(d, &done) {
		t.Error("a status of an older generation is not complete")
	}
}
