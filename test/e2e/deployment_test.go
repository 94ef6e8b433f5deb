package e2e

// Deployments and ReplicaSets through the real server, as a user drives them with kubectl. The
// server runs alone here (no nodes: the scheduler binds nothing and no agent starts the Pods), so
// the tests play the agent's part by writing pods/status (phase Running, a podIP, the Ready
// condition) with markWorkloadPodsReady. Unbound Pods are deleted at once by the API server, so
// the terminating-Pod paths are not exercised here; deployment_traffic_test.go runs real Pods
// behind a Service in the sandbox.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/svcplane/svcplane/test/testserver"
)

const deploymentManifest = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  labels: {app: %[1]s}
spec:
  replicas: %[2]d
  strategy: {type: %[3]s}
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      containers:
      - name: web
        image: registry.example/web:1
        args: ["--version=1"]
        ports: [{containerPort: 8080}]
`

func createWorkloadDeployment(t *testing.T, s *testserver.Server, name string, replicas int, strategy string) {
	t.Helper()
	out, stderr, err := s.KubectlWithInput(t, fmt.Sprintf(deploymentManifest, name, replicas, strategy), "create", "-f", "-")
	if err != nil {
		t.Fatalf("kubectl create: %v\n%s", err, stderr)
	}
	mustContain(t, "kubectl create", out, "deployment.apps/"+name+" created")
}

// waitWorkload polls check until it returns "" (done) or the timeout passes; check's last
// answer says what was still missing.
func waitWorkload(t *testing.T, timeout time.Duration, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	missing := ""
	for time.Now().Before(deadline) {
		if missing = check(); missing == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not reached within %s: %s", what, timeout, missing)
}

func workloadPods(t *testing.T, s *testserver.Server, app string) []corev1.Pod {
	t.Helper()
	list, err := s.Client.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func workloadReplicaSets(t *testing.T, s *testserver.Server, app string) []appsv1.ReplicaSet {
	t.Helper()
	list, err := s.Client.AppsV1().ReplicaSets("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func fetchDeployment(t *testing.T, s *testserver.Server, name string) *appsv1.Deployment {
	t.Helper()
	d, err := s.Client.AppsV1().Deployments("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func workloadPodReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// markWorkloadPodsReady plays the node agent: up to n (all when n < 0) of the not-yet-ready Pods that
// keep(pod) accepts become Running and Ready with an IP. It returns how many it marked.
func markWorkloadPodsReady(t *testing.T, s *testserver.Server, app string, n int, keep func(*corev1.Pod) bool) int {
	t.Helper()
	marked := 0
	for _, pod := range workloadPods(t, s, app) {
		if n >= 0 && marked >= n {
			break
		}
		if workloadPodReady(&pod) || pod.DeletionTimestamp != nil || (keep != nil && !keep(&pod)) {
			continue
		}
		pod.Status.Phase = corev1.PodRunning
		pod.Status.PodIP = fmt.Sprintf("10.244.0.%d", 10+len(pod.Name)%200)
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		if _, err := s.Client.CoreV1().Pods("default").UpdateStatus(context.Background(), &pod, metav1.UpdateOptions{}); err != nil {
			if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
				continue
			}
			t.Fatalf("marking pod %s ready: %v", pod.Name, err)
		}
		marked++
	}
	return marked
}

// rolledOut waits for the Deployment to report every replica updated and available, marking
// Pods ready as they appear.
func waitRolledOut(t *testing.T, s *testserver.Server, name string, replicas int32) {
	t.Helper()
	waitWorkload(t, 60*time.Second, "rollout of "+name, func() string {
		markWorkloadPodsReady(t, s, name, -1, nil)
		d := fetchDeployment(t, s, name)
		st := d.Status
		if st.ObservedGeneration >= d.Generation && st.UpdatedReplicas == replicas && st.Replicas == replicas &&
			st.AvailableReplicas == replicas && len(workloadPods(t, s, name)) == int(replicas) {
			return ""
		}
		return fmt.Sprintf("status %+v, %d pods", st, len(workloadPods(t, s, name)))
	})
}

func templateHashOf(rs *appsv1.ReplicaSet) string {
	return rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
}

// currentReplicaSet is the ReplicaSet running the Deployment's current template.
func currentReplicaSet(t *testing.T, s *testserver.Server, name string) *appsv1.ReplicaSet {
	t.Helper()
	d := fetchDeployment(t, s, name)
	for _, rs := range workloadReplicaSets(t, s, name) {
		if rs.Annotations["deployment.kubernetes.io/revision"] == d.Annotations["deployment.kubernetes.io/revision"] {
			return &rs
		}
	}
	return nil
}

// workloadPodWatch follows a Deployment's Pods and remembers the lowest count of ready Pods and the
// highest count of Pods it has seen, and whether Pods of two templates ever coexisted.
type workloadPodWatch struct {
	mu          sync.Mutex
	pods        map[string]*corev1.Pod
	minReady    int
	maxTotal    int
	mixedHashes bool
	stop        func()
}

func watchWorkloadPods(t *testing.T, s *testserver.Server, app string) *workloadPodWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	list, err := s.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Client.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{LabelSelector: "app=" + app, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	pw := &workloadPodWatch{pods: map[string]*corev1.Pod{}, minReady: 1 << 30, stop: cancel}
	for i := range list.Items {
		pw.pods[list.Items[i].Name] = &list.Items[i]
	}
	pw.record()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			pw.mu.Lock()
			if ev.Type == watch.Deleted || pod.DeletionTimestamp != nil {
				delete(pw.pods, pod.Name)
			} else {
				pw.pods[pod.Name] = pod
			}
			pw.mu.Unlock()
			pw.record()
		}
	}()
	pw.stop = func() { cancel(); w.Stop(); <-done }
	t.Cleanup(pw.stop)
	return pw
}

func (pw *workloadPodWatch) record() {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	ready := 0
	hashes := map[string]bool{}
	for _, pod := range pw.pods {
		if workloadPodReady(pod) {
			ready++
		}
		hashes[pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]] = true
	}
	pw.minReady = min(pw.minReady, ready)
	pw.maxTotal = max(pw.maxTotal, len(pw.pods))
	pw.mixedHashes = pw.mixedHashes || len(hashes) > 1
}

func (pw *workloadPodWatch) snapshot() (minReady, maxTotal int, mixed bool) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.minReady, pw.maxTotal, pw.mixedHashes
}

// TestDeploymentTutorial is the flow every Service tutorial walks through: create a 3-replica
// Deployment, scale it, roll out a new version step by step, watch `kubectl rollout status`,
// look at the history, undo, and delete it with everything it made.
func TestDeploymentTutorial(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	createWorkloadDeployment(t, s, "web", 3, "RollingUpdate")

	waitWorkload(t, 30*time.Second, "one ReplicaSet with 3 Pods", func() string {
		rss, pods := workloadReplicaSets(t, s, "web"), workloadPods(t, s, "web")
		if len(rss) != 1 || len(pods) != 3 {
			return fmt.Sprintf("%d ReplicaSets, %d Pods", len(rss), len(pods))
		}
		return ""
	})
	rs := workloadReplicaSets(t, s, "web")[0]
	hash := templateHashOf(&rs)
	if rs.Name != "web-"+hash || rs.Spec.Selector.MatchLabels[appsv1.DefaultDeploymentUniqueLabelKey] != hash ||
		rs.Spec.Template.Labels[appsv1.DefaultDeploymentUniqueLabelKey] != hash {
		t.Errorf("ReplicaSet %s: name, selector and template must carry pod-template-hash %q", rs.Name, hash)
	}
	if rs.Annotations["deployment.kubernetes.io/revision"] != "1" || rs.Annotations["deployment.kubernetes.io/desired-replicas"] != "3" ||
		rs.Annotations["deployment.kubernetes.io/max-replicas"] != "4" {
		t.Errorf("ReplicaSet annotations = %v, want revision 1, desired-replicas 3, max-replicas 4", rs.Annotations)
	}
	for _, pod := range workloadPods(t, s, "web") {
		ref := metav1.GetControllerOf(&pod)
		if !strings.HasPrefix(pod.Name, rs.Name+"-") || ref == nil || ref.UID != rs.UID || ref.Kind != "ReplicaSet" {
			t.Errorf("pod %s: want generated from %s and controlled by it, ref %+v", pod.Name, rs.Name, ref)
		}
	}

	waitWorkload(t, 30*time.Second, "rollout status before Pods are ready", func() string {
		out, _, _ := s.Kubectl(t, "rollout", "status", "deploy/web", "--watch=false")
		if !strings.Contains(out, `Waiting for deployment "web" rollout to finish: 0 of 3 updated replicas are available...`) {
			return out
		}
		return ""
	})
	waitRolledOut(t, s, "web", 3)
	d := fetchDeployment(t, s, "web")
	checkDeploymentCondition(t, d, appsv1.DeploymentAvailable, corev1.ConditionTrue, "MinimumReplicasAvailable", "Deployment has minimum availability.")
	checkDeploymentCondition(t, d, appsv1.DeploymentProgressing, corev1.ConditionTrue, "NewReplicaSetAvailable", fmt.Sprintf("ReplicaSet %q has successfully progressed.", rs.Name))
	out, stderr, err := s.Kubectl(t, "rollout", "status", "deploy/web", "--timeout=30s")
	if err != nil {
		t.Fatalf("kubectl rollout status: %v\n%s", err, stderr)
	}
	mustContain(t, "rollout status", out, `deployment "web" successfully rolled out`)

	out, _, err = s.Kubectl(t, "describe", "deploy/web")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "kubectl describe", out, "NewReplicaSet:", rs.Name, "ScalingReplicaSet", "Scaled up replica set "+rs.Name+" from 0 to 3")

	t.Run("kubectl scale through the scale subresource", func(t *testing.T) {
		resources, err := s.Client.Discovery().ServerResourcesForGroupVersion("apps/v1")
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, r := range resources.APIResources {
			if r.Name == "deployments/scale" || r.Name == "replicasets/scale" {
				found++
				if r.Group != "autoscaling" || r.Version != "v1" || r.Kind != "Scale" || !r.Namespaced {
					t.Errorf("discovery of %s: %s/%s %s, want autoscaling/v1 Scale", r.Name, r.Group, r.Version, r.Kind)
				}
			}
		}
		if found != 2 {
			t.Errorf("discovery lists %d scale subresources, want deployments/scale and replicasets/scale", found)
		}
		scale, err := s.Client.AppsV1().Deployments("default").GetScale(context.Background(), "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if scale.Spec.Replicas != 3 || scale.Status.Replicas != 3 || scale.Status.Selector != "app=web" {
			t.Errorf("scale = %+v, want spec/status replicas 3 and selector app=web", scale)
		}
		for _, n := range []int32{5, 1} {
			out, stderr, err := s.Kubectl(t, "scale", "deploy/web", fmt.Sprintf("--replicas=%d", n))
			if err != nil {
				t.Fatalf("kubectl scale: %v\n%s", err, stderr)
			}
			mustContain(t, "kubectl scale", out, "deployment.apps/web scaled")
			waitRolledOut(t, s, "web", n)
			if rss := workloadReplicaSets(t, s, "web"); len(rss) != 1 {
				t.Errorf("scaling made %d ReplicaSets, want the one", len(rss))
			}
		}
		// A stale resourceVersion conflicts; a negative count is refused as upstream words it.
		scale.Spec.Replicas = 4
		if _, err := s.Client.AppsV1().Deployments("default").UpdateScale(context.Background(), "web", scale, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
			t.Errorf("update of a stale Scale: got %v, want a conflict", err)
		}
		scale = &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: autoscalingv1.ScaleSpec{Replicas: -1}}
		_, err = s.Client.AppsV1().Deployments("default").UpdateScale(context.Background(), "web", scale, metav1.UpdateOptions{})
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.replicas: Invalid value: -1: must be greater than or equal to 0") {
			t.Errorf("negative scale: got %v", err)
		}
		if _, stderr, err := s.Kubectl(t, "scale", "deploy/web", "--replicas=4"); err != nil {
			t.Fatalf("kubectl scale: %v\n%s", err, stderr)
		}
		waitRolledOut(t, s, "web", 4)
	})

	t.Run("rolling update waits for ready Pods and keeps availability", func(t *testing.T) {
		// 4 replicas at the default 25%: one Pod over and one under the count at most.
		const replicas, maxSurge, maxUnavailable = 4, 1, 1
		watcher := watchWorkloadPods(t, s, "web")
		oldRS := currentReplicaSet(t, s, "web")
		out, stderr, err := s.Kubectl(t, "set", "image", "deploy/web", "web=registry.example/web:2")
		if err != nil {
			t.Fatalf("kubectl set image: %v\n%s", err, stderr)
		}
		mustContain(t, "set image", out, "deployment.apps/web image updated")
		waitWorkload(t, 30*time.Second, "the first surge Pod", func() string {
			d := fetchDeployment(t, s, "web")
			if d.Status.UpdatedReplicas == 0 || d.Status.ObservedGeneration < d.Generation {
				return fmt.Sprintf("status %+v", d.Status)
			}
			return ""
		})
		out, _, _ = s.Kubectl(t, "rollout", "status", "deploy/web", "--watch=false")
		mustContain(t, "rollout status mid-rollout", out, `Waiting for deployment "web" rollout to finish:`, "new replicas have been updated...")
		// Without ready Pods the rollout must not go further than the fenceposts allow.
		time.Sleep(2 * time.Second)
		if old, err := s.Client.AppsV1().ReplicaSets("default").Get(context.Background(), oldRS.Name, metav1.GetOptions{}); err != nil ||
			*old.Spec.Replicas < replicas-maxUnavailable {
			t.Fatalf("old ReplicaSet scaled below %d before any new Pod was ready: %v %v", replicas-maxUnavailable, old.Spec.Replicas, err)
		}
		d := fetchDeployment(t, s, "web")
		checkDeploymentCondition(t, d, appsv1.DeploymentProgressing, corev1.ConditionTrue, "ReplicaSetUpdated", "")
		if d.Annotations["deployment.kubernetes.io/revision"] != "2" {
			t.Errorf("Deployment revision = %q, want 2", d.Annotations["deployment.kubernetes.io/revision"])
		}
		newRS := currentReplicaSet(t, s, "web")
		steps := 0
		for ; steps < 20; steps++ {
			d := fetchDeployment(t, s, "web")
			if d.Status.UpdatedReplicas == replicas && d.Status.Replicas == replicas && d.Status.AvailableReplicas == replicas {
				break
			}
			// One new Pod at a time becomes ready; the controller takes the next step.
			waitWorkload(t, 30*time.Second, "a new Pod to mark ready", func() string {
				if markWorkloadPodsReady(t, s, "web", 1, func(p *corev1.Pod) bool {
					return p.Labels[appsv1.DefaultDeploymentUniqueLabelKey] == templateHashOf(newRS)
				}) == 1 {
					return ""
				}
				d := fetchDeployment(t, s, "web")
				if d.Status.UpdatedReplicas == replicas && d.Status.Replicas == replicas && d.Status.AvailableReplicas == replicas {
					return ""
				}
				return "no unready new Pod yet"
			})
			time.Sleep(300 * time.Millisecond)
		}
		waitRolledOut(t, s, "web", replicas)
		if steps < 2 {
			t.Errorf("rollout finished in %d steps; it should have needed one per new Pod", steps)
		}
		minReady, maxTotal, _ := watcher.snapshot()
		if minReady < replicas-maxUnavailable {
			t.Errorf("ready Pods dropped to %d during the rollout, want at least %d", minReady, replicas-maxUnavailable)
		}
		if maxTotal > replicas+maxSurge {
			t.Errorf("%d Pods existed at once during the rollout, want at most %d", maxTotal, replicas+maxSurge)
		}
		old, err := s.Client.AppsV1().ReplicaSets("default").Get(context.Background(), oldRS.Name, metav1.GetOptions{})
		if err != nil || *old.Spec.Replicas != 0 {
			t.Errorf("old ReplicaSet after the rollout: %v, %v; want it kept at 0 replicas", err, old.Spec.Replicas)
		}
		out, _, err = s.Kubectl(t, "rollout", "history", "deploy/web")
		if err != nil {
			t.Fatal(err)
		}
		mustContain(t, "rollout history", out, "REVISION", "1 ", "2 ")
	})

	t.Run("kubectl rollout undo reuses the old ReplicaSet with a new revision", func(t *testing.T) {
		first := ""
		for _, rs := range workloadReplicaSets(t, s, "web") {
			if rs.Annotations["deployment.kubernetes.io/revision"] == "1" {
				first = rs.Name
			}
		}
		if first == "" {
			t.Fatal("no ReplicaSet with revision 1")
		}
		out, stderr, err := s.Kubectl(t, "rollout", "undo", "deploy/web")
		if err != nil {
			t.Fatalf("kubectl rollout undo: %v\n%s", err, stderr)
		}
		mustContain(t, "rollout undo", out, "deployment.apps/web rolled back")
		waitRolledOut(t, s, "web", 4)
		rs, err := s.Client.AppsV1().ReplicaSets("default").Get(context.Background(), first, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rs.Annotations["deployment.kubernetes.io/revision"] != "3" || rs.Annotations["deployment.kubernetes.io/revision-history"] != "1" || *rs.Spec.Replicas != 4 {
			t.Errorf("rolled-back ReplicaSet: replicas %d, annotations %v; want 4, revision 3, revision-history 1", *rs.Spec.Replicas, rs.Annotations)
		}
		if rss := workloadReplicaSets(t, s, "web"); len(rss) != 2 {
			t.Errorf("undo made %d ReplicaSets, want the two there were", len(rss))
		}
		if got := fetchDeployment(t, s, "web").Annotations["deployment.kubernetes.io/revision"]; got != "3" {
			t.Errorf("Deployment revision = %q, want 3", got)
		}
		for _, pod := range workloadPods(t, s, "web") {
			if pod.Spec.Containers[0].Image != "registry.example/web:1" {
				t.Errorf("pod %s runs %s after undo", pod.Name, pod.Spec.Containers[0].Image)
			}
		}
		out, _, _ = s.Kubectl(t, "rollout", "history", "deploy/web")
		mustContain(t, "rollout history after undo", out, "2 ", "3 ")
	})

	t.Run("revisionHistoryLimit deletes the oldest scaled-down ReplicaSets", func(t *testing.T) {
		if _, stderr, err := s.Kubectl(t, "patch", "deploy/web", "--type=merge", "-p", `{"spec":{"revisionHistoryLimit":1}}`); err != nil {
			t.Fatalf("kubectl patch: %v\n%s", err, stderr)
		}
		for v := 3; v <= 4; v++ {
			if _, stderr, err := s.Kubectl(t, "set", "image", "deploy/web", fmt.Sprintf("web=registry.example/web:%d", v)); err != nil {
				t.Fatalf("kubectl set image: %v\n%s", err, stderr)
			}
			waitRolledOut(t, s, "web", 4)
		}
		waitWorkload(t, 30*time.Second, "old ReplicaSets cleaned up", func() string {
			rss := workloadReplicaSets(t, s, "web")
			if len(rss) != 2 {
				return fmt.Sprintf("%d ReplicaSets", len(rss))
			}
			return ""
		})
	})

	t.Run("deleting the Deployment deletes its ReplicaSets and Pods", func(t *testing.T) {
		if _, stderr, err := s.Kubectl(t, "delete", "deploy/web"); err != nil {
			t.Fatalf("kubectl delete: %v\n%s", err, stderr)
		}
		waitWorkload(t, 60*time.Second, "cascading deletion", func() string {
			rss, pods := workloadReplicaSets(t, s, "web"), workloadPods(t, s, "web")
			if len(rss)+len(pods) > 0 {
				return fmt.Sprintf("%d ReplicaSets and %d Pods left", len(rss), len(pods))
			}
			return ""
		})
	})
}

func checkDeploymentCondition(t *testing.T, d *appsv1.Deployment, ct appsv1.DeploymentConditionType, status corev1.ConditionStatus, reason, message string) {
	t.Helper()
	for _, c := range d.Status.Conditions {
		if c.Type != ct {
			continue
		}
		if c.Status != status || c.Reason != reason || (message != "" && c.Message != message) {
			t.Errorf("condition %s = %s/%s %q, want %s/%s %q", ct, c.Status, c.Reason, c.Message, status, reason, message)
		}
		return
	}
	t.Errorf("no %s condition in %+v", ct, d.Status.Conditions)
}

// TestDeploymentRecreate: with strategy Recreate no new Pod exists while an old one does.
func TestDeploymentRecreate(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	createWorkloadDeployment(t, s, "batch", 3, "Recreate")
	waitRolledOut(t, s, "batch", 3)
	watcher := watchWorkloadPods(t, s, "batch")
	if _, stderr, err := s.Kubectl(t, "set", "image", "deploy/batch", "web=registry.example/web:2"); err != nil {
		t.Fatalf("kubectl set image: %v\n%s", err, stderr)
	}
	waitRolledOut(t, s, "batch", 3)
	if _, _, mixed := watcher.snapshot(); mixed {
		t.Error("old and new Pods existed at the same time")
	}
	if rss := workloadReplicaSets(t, s, "batch"); len(rss) != 2 {
		t.Errorf("%d ReplicaSets, want the old one (at 0) and the new one", len(rss))
	}
}

// TestDeploymentPauseResume: a paused Deployment takes template changes without rolling them
// out; resuming rolls them out.
func TestDeploymentPauseResume(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	createWorkloadDeployment(t, s, "paused", 2, "RollingUpdate")
	waitRolledOut(t, s, "paused", 2)
	out, stderr, err := s.Kubectl(t, "rollout", "pause", "deploy/paused")
	if err != nil {
		t.Fatalf("kubectl rollout pause: %v\n%s", err, stderr)
	}
	mustContain(t, "rollout pause", out, "deployment.apps/paused paused")
	if _, stderr, err := s.Kubectl(t, "set", "image", "deploy/paused", "web=registry.example/web:2"); err != nil {
		t.Fatalf("kubectl set image: %v\n%s", err, stderr)
	}
	waitWorkload(t, 30*time.Second, "paused condition", func() string {
		d := fetchDeployment(t, s, "paused")
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentProgressing && c.Reason == "DeploymentPaused" && d.Status.ObservedGeneration >= d.Generation {
				return ""
			}
		}
		return fmt.Sprintf("%+v", d.Status)
	})
	checkDeploymentCondition(t, fetchDeployment(t, s, "paused"), appsv1.DeploymentProgressing, corev1.ConditionUnknown, "DeploymentPaused", "Deployment is paused")
	// Scaling still works while paused.
	if _, stderr, err := s.Kubectl(t, "scale", "deploy/paused", "--replicas=3"); err != nil {
		t.Fatalf("kubectl scale: %v\n%s", err, stderr)
	}
	waitWorkload(t, 30*time.Second, "scaled while paused", func() string {
		markWorkloadPodsReady(t, s, "paused", -1, nil)
		if pods := workloadPods(t, s, "paused"); len(pods) != 3 {
			return fmt.Sprintf("%d pods", len(pods))
		}
		return ""
	})
	if rss := workloadReplicaSets(t, s, "paused"); len(rss) != 1 {
		t.Fatalf("paused Deployment rolled out: %d ReplicaSets", len(rss))
	}
	out, stderr, err = s.Kubectl(t, "rollout", "resume", "deploy/paused")
	if err != nil {
		t.Fatalf("kubectl rollout resume: %v\n%s", err, stderr)
	}
	mustContain(t, "rollout resume", out, "deployment.apps/paused resumed")
	waitRolledOut(t, s, "paused", 3)
	if rss := workloadReplicaSets(t, s, "paused"); len(rss) != 2 {
		t.Errorf("after resume: %d ReplicaSets, want 2", len(rss))
	}
	for _, pod := range workloadPods(t, s, "paused") {
		if pod.Spec.Containers[0].Image != "registry.example/web:2" {
			t.Errorf("pod %s runs %s after resume", pod.Name, pod.Spec.Containers[0].Image)
		}
	}
}

const replicaSetManifest = `
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: frontend
spec:
  replicas: 2
  selector:
    matchLabels: {app: frontend}
  template:
    metadata:
      labels: {app: frontend}
    spec:
      containers:
      - name: web
        image: registry.example/web:1
`

// TestReplicaSetOwnsPodsBySelector: a ReplicaSet adopts a matching orphan instead of creating a
// Pod, releases a Pod relabelled out of its selector and replaces it, and scales down the least
// valuable Pods first.
func TestReplicaSetOwnsPodsBySelector(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	orphan := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "orphan", Labels: map[string]string{"app": "frontend"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1"}}},
	}
	if _, err := s.Client.CoreV1().Pods("default").Create(ctx, orphan, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := s.KubectlWithInput(t, replicaSetManifest, "create", "-f", "-"); err != nil {
		t.Fatalf("kubectl create: %v\n%s", err, stderr)
	}
	rs, err := s.Client.AppsV1().ReplicaSets("default").Get(ctx, "frontend", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ownedBy := func(pod *corev1.Pod) bool {
		ref := metav1.GetControllerOf(pod)
		return ref != nil && ref.UID == rs.UID
	}
	waitWorkload(t, 30*time.Second, "orphan adopted and one Pod created", func() string {
		pods := workloadPods(t, s, "frontend")
		owned := 0
		for i := range pods {
			if ownedBy(&pods[i]) {
				owned++
			}
		}
		if len(pods) != 2 || owned != 2 {
			return fmt.Sprintf("%d pods, %d owned", len(pods), owned)
		}
		return ""
	})

	// Relabelling takes a Pod out of the ReplicaSet: it is released and replaced.
	if _, err := s.Client.CoreV1().Pods("default").Patch(ctx, "orphan", types.MergePatchType, []byte(`{"metadata":{"labels":{"app":"elsewhere"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitWorkload(t, 30*time.Second, "relabelled Pod released and replaced", func() string {
		pod, err := s.Client.CoreV1().Pods("default").Get(ctx, "orphan", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if metav1.GetControllerOf(pod) != nil {
			return "still has a controller reference"
		}
		if n := len(workloadPods(t, s, "frontend")); n != 2 {
			return fmt.Sprintf("%d frontend pods", n)
		}
		return ""
	})

	t.Run("scale-down deletes not-ready and cheap Pods first", func(t *testing.T) {
		if _, stderr, err := s.Kubectl(t, "scale", "rs/frontend", "--replicas=3"); err != nil {
			t.Fatalf("kubectl scale rs: %v\n%s", err, stderr)
		}
		waitWorkload(t, 30*time.Second, "3 pods", func() string {
			if n := len(workloadPods(t, s, "frontend")); n != 3 {
				return fmt.Sprintf("%d pods", n)
			}
			return ""
		})
		markWorkloadPodsReady(t, s, "frontend", 2, nil)
		var keep string
		for _, pod := range workloadPods(t, s, "frontend") {
			if workloadPodReady(&pod) && keep == "" {
				keep = pod.Name
				patch := `{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"100"}}}`
				if _, err := s.Client.CoreV1().Pods("default").Patch(ctx, pod.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
					t.Fatal(err)
				}
			}
		}
		waitWorkload(t, 30*time.Second, "status sees 2 ready", func() string {
			rs, _ := s.Client.AppsV1().ReplicaSets("default").Get(ctx, "frontend", metav1.GetOptions{})
			if rs.Status.ReadyReplicas != 2 || rs.Status.AvailableReplicas != 2 || rs.Status.Replicas != 3 || rs.Status.FullyLabeledReplicas != 3 {
				return fmt.Sprintf("%+v", rs.Status)
			}
			return ""
		})
		if _, stderr, err := s.Kubectl(t, "scale", "rs/frontend", "--replicas=1"); err != nil {
			t.Fatalf("kubectl scale rs: %v\n%s", err, stderr)
		}
		waitWorkload(t, 30*time.Second, "one Pod left", func() string {
			pods := workloadPods(t, s, "frontend")
			if len(pods) != 1 {
				return fmt.Sprintf("%d pods", len(pods))
			}
			if pods[0].Name != keep {
				t.Fatalf("kept %s, want %s (ready, highest deletion cost)", pods[0].Name, keep)
			}
			return ""
		})
	})

	t.Run("validation", func(t *testing.T) {
		bad := strings.Replace(replicaSetManifest, "matchLabels: {app: frontend}", "matchLabels: {app: other}", 1)
		bad = strings.Replace(bad, "name: frontend", "name: bad", 1)
		_, stderr, err := s.KubectlWithInput(t, bad, "create", "-f", "-")
		if err == nil {
			t.Fatal("a ReplicaSet whose selector misses its template was accepted")
		}
		mustContain(t, "kubectl create", stderr, "spec.template.metadata.labels: Invalid value:", "`selector` does not match template `labels`")
		_, stderr, err = s.Kubectl(t, "patch", "rs/frontend", "--type=merge", "-p", `{"spec":{"selector":{"matchLabels":{"tier":"x"}},"template":{"metadata":{"labels":{"tier":"x"}}}}}`)
		if err == nil {
			t.Fatal("selector change accepted")
		}
		mustContain(t, "selector update", stderr, "spec.selector: Invalid value:", "field is immutable")
	})
}

// TestDeploymentProgressDeadline: a rollout whose Pods never become ready is reported as stuck
// once progressDeadlineSeconds pass, and `kubectl rollout status` fails as upstream's does.
func TestDeploymentProgressDeadline(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	manifest := strings.Replace(fmt.Sprintf(deploymentManifest, "stuck", 2, "RollingUpdate"),
		"  replicas: 2\n", "  replicas: 2\n  progressDeadlineSeconds: 3\n", 1)
	if _, stderr, err := s.KubectlWithInput(t, manifest, "create", "-f", "-"); err != nil {
		t.Fatalf("kubectl create: %v\n%s", err, stderr)
	}
	waitWorkload(t, 30*time.Second, "ProgressDeadlineExceeded", func() string {
		d := fetchDeployment(t, s, "stuck")
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
				return ""
			}
		}
		return fmt.Sprintf("%+v", d.Status.Conditions)
	})
	d := fetchDeployment(t, s, "stuck")
	rs := currentReplicaSet(t, s, "stuck")
	checkDeploymentCondition(t, d, appsv1.DeploymentProgressing, corev1.ConditionFalse, "ProgressDeadlineExceeded", fmt.Sprintf("ReplicaSet %q has timed out progressing.", rs.Name))
	checkDeploymentCondition(t, d, appsv1.DeploymentAvailable, corev1.ConditionFalse, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
	_, stderr, err := s.Kubectl(t, "rollout", "status", "deploy/stuck", "--timeout=10s")
	if err == nil {
		t.Fatal("kubectl rollout status succeeded for a stuck rollout")
	}
	mustContain(t, "rollout status", stderr, `deployment "stuck" exceeded its progress deadline`)
	// Pods becoming ready later still complete the rollout.
	waitRolledOut(t, s, "stuck", 2)
	checkDeploymentCondition(t, fetchDeployment(t, s, "stuck"), appsv1.DeploymentProgressing, corev1.ConditionTrue, "NewReplicaSetAvailable", "")
}
