package replicaset

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/svcplane/svcplane/pkg/controller"
)

var now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

type podOpt func(*corev1.Pod)

func testPod(name string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(name),
			CreationTimestamp: metav1.NewTime(now.Add(-time.Hour))},
		Spec:   corev1.PodSpec{NodeName: "node-1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func unassigned(p *corev1.Pod)        { p.Spec.NodeName = "" }
func phase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }
func onNode(n string) podOpt          { return func(p *corev1.Pod) { p.Spec.NodeName = n } }
func created(ago time.Duration) podOpt {
	return func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(now.Add(-ago)) }
}
func cost(v string) podOpt {
	return func(p *corev1.Pod) { p.Annotations = map[string]string{podDeletionCostAnnotation: v} }
}
func restarts(n int32) podOpt {
	return func(p *corev1.Pod) { p.Status.ContainerStatuses = []corev1.ContainerStatus{{RestartCount: n}} }
}
func readyFor(d time.Duration) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(now.Add(-d))}}
	}
}

// TestScaleDownOrder pins upstream's ActivePodsWithRanks rules one pair at a time: the first Pod
// of each pair must be deleted first, whichever order they are given in.
func TestScaleDownOrder(t *testing.T) {
	ready := readyFor(time.Hour)
	for _, tc := range []struct {
		rule          string
		first, second *corev1.Pod
		related       []*corev1.Pod
	}{
		{"unassigned before assigned", testPod("a", unassigned, ready), testPod("b", ready), nil},
		{"Pending before Unknown", testPod("a", phase(corev1.PodPending)), testPod("b", phase(corev1.PodUnknown)), nil},
		{"Unknown before Running", testPod("a", phase(corev1.PodUnknown)), testPod("b"), nil},
		{"not ready before ready", testPod("a"), testPod("b", ready), nil},
		{"lower deletion cost first", testPod("a", ready, cost("-5")), testPod("b", ready, created(time.Minute)), nil},
		{"more related Pods on the node first", testPod("a", ready, onNode("crowded")), testPod("b", ready, onNode("quiet")),
			[]*corev1.Pod{testPod("x", onNode("crowded")), testPod("y", onNode("crowded")), testPod("z", onNode("quiet"))}},
		{"ready for less time first", testPod("a", readyFor(time.Minute)), testPod("b", readyFor(10*time.Hour)), nil},
		{"more restarts first", testPod("a", ready, restarts(3)), testPod("b", ready, restarts(1)), nil},
		{"newer first", testPod("a", ready, created(time.Minute)), testPod("b", ready, created(24*time.Hour)), nil},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			for _, order := range [][]*corev1.Pod{{tc.first, tc.second}, {tc.second, tc.first}} {
				related := append([]*corev1.Pod{tc.first, tc.second}, tc.related...)
				got := podsToDelete(order, related, 1, now)
				if got[0].Name != tc.first.Name {
					t.Errorf("deleted %s first, want %s", got[0].Name, tc.first.Name)
				}
			}
		})
	}
}

func TestSlowStartBatch(t *testing.T) {
	var calls atomic.Int32
	// Batches 1, 2, 4: the 4th call fails, so the 4-batch is the last one sent.
	created, err := slowStartBatch(20, func() error {
		if calls.Add(1) == 4 {
			return errors.New("quota exceeded")
		}
		return nil
	})
	if err == nil || created != 6 || calls.Load() != 7 {
		t.Errorf("created %d with %d calls (err %v), want 6 created of 7 calls and an error", created, calls.Load(), err)
	}
	calls.Store(0)
	created, err = slowStartBatch(5, func() error { calls.Add(1); return nil })
	if err != nil || created != 5 || calls.Load() != 5 {
		t.Errorf("created %d with %d calls, want 5 and 5", created, calls.Load())
	}
}

func TestAvailabilityHonoursMinReadySeconds(t *testing.T) {
	pod := testPod("a", readyFor(5*time.Second))
	if ok, wait := isAvailable(pod, 10, now); ok || wait != 5*time.Second {
		t.Errorf("ready 5s of 10: available %v, wait %v; want false, 5s", ok, wait)
	}
	if ok, _ := isAvailable(pod, 3, now); !ok {
		t.Error("ready 5s of 3: want available")
	}
	if ok, _ := isAvailable(testPod("b"), 0, now); ok {
		t.Error("a Pod that is not ready is never available")
	}
}

// TestExpectationsPreventDoubleCreation: while the informer has not shown the Pods the
// controller created, another sync creates nothing more.
func TestExpectationsPreventDoubleCreation(t *testing.T) {
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "rs-uid"},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: ptr.To(int32(3)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}},
			},
		},
	}
	client := fake.NewSimpleClientset(rs)
	// The fake API does not generate names; number the Pods as the server would name them.
	var generated atomic.Int32
	client.PrependReactor("create", "pods", func(a clienttesting.Action) (bool, runtime.Object, error) {
		pod := a.(clienttesting.CreateAction).GetObject().(*corev1.Pod)
		if pod.Name == "" {
			pod.Name = fmt.Sprintf("%s%d", pod.GenerateName, generated.Add(1))
		}
		return false, nil, nil
	})
	factory := informers.NewSharedInformerFactory(client, 0)
	rc := &Controller{
		client:       client,
		rsLister:     factory.Apps().V1().ReplicaSets().Lister(),
		podLister:    factory.Core().V1().Pods().Lister(),
		expectations: newExpectations(),
		queue:        workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		events:       &controller.Events{EventRecorder: record.NewFakeRecorder(100)},
		now:          func() time.Time { return now },
	}
	if err := factory.Apps().V1().ReplicaSets().Informer().GetIndexer().Add(rs); err != nil {
		t.Fatal(err)
	}
	creates := func() int {
		n := 0
		for _, a := range client.Actions() {
			if a.GetVerb() == "create" && a.GetResource().Resource == "pods" {
				n++
			}
		}
		return n
	}
	ctx := context.Background()
	if err := rc.sync(ctx, "default/web"); err != nil {
		t.Fatal(err)
	}
	if got := creates(); got != 3 {
		t.Fatalf("first sync created %d Pods, want 3", got)
	}
	if err := rc.sync(ctx, "default/web"); err != nil {
		t.Fatal(err)
	}
	if got := creates(); got != 3 {
		t.Fatalf("a sync before the cache caught up created %d Pods in all, want still 3", got)
	}
	// The informer delivers the creations; the expectations are met and the cache is trusted.
	pods, err := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.GenerateName != "web-" || metav1.GetControllerOf(pod).UID != rs.UID {
			t.Errorf("pod %+v: want generateName web- and controlled by the ReplicaSet", pod.ObjectMeta)
		}
		_ = factory.Core().V1().Pods().Informer().GetIndexer().Add(pod)
		rc.addPod(pod)
	}
	if !rc.expectations.satisfied("default/web") {
		t.Error("expectations still pending after every creation was observed")
	}
	if err := rc.sync(ctx, "default/web"); err != nil {
		t.Fatal(err)
	}
	if got := creates(); got != 3 {
		t.Errorf("after the cache caught up: %d creations in all, want 3", got)
	}
}
