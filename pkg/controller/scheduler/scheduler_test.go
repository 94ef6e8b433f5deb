package scheduler

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcplane/svcplane/pkg/controller"
)

func node(name string, ready bool, labels map[string]string) *corev1.Node {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status}}}}
}

func pod(name, nodeName string, selector map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.PodSpec{NodeName: nodeName, NodeSelector: selector}}
}

func TestPodsGoToTheLeastLoadedMatchingReadyNode(t *testing.T) {
	client := fake.NewSimpleClientset(
		node("node1", true, map[string]string{"disk": "ssd"}),
		node("node2", true, nil),
		node("node3", false, nil),
		pod("busy-1", "node2", nil), pod("busy-2", "node2", nil),
		pod("a", "", nil), pod("b", "", nil), pod("c", "", nil),
		pod("ssd", "", map[string]string{"disk": "ssd"}),
		pod("nowhere", "", map[string]string{"disk": "tape"}),
	)
	factory := informers.NewSharedInformerFactory(client, 0)
	run, err := New(controller.Context{Client: client, Informers: factory})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	factory.Start(ctx.Done())
	go run(ctx)

	want := map[string]string{"ssd": "node1", "nowhere": ""}
	deadline := time.Now().Add(10 * time.Second)
	for {
		load := map[string]int{}
		got := map[string]string{}
		for _, name := range []string{"a", "b", "c", "ssd", "nowhere", "busy-1", "busy-2"} {
			p, _ := client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			got[name] = p.Spec.NodeName
			if p.Spec.NodeName != "" {
				load[p.Spec.NodeName]++
			}
		}
		// node2 starts with 2 Pods, so a, b and c fill node1 up to a tie first (ties go to the
		// first name); whether ssd comes before or after decides if c ends on node2.
		done := got["a"] != "" && got["b"] != "" && got["c"] != "" && got["ssd"] != ""
		if done {
			if got["ssd"] != want["ssd"] || got["nowhere"] != "" || load["node3"] != 0 || load["node1"]+load["node2"] != 6 || load["node1"] < 3 {
				t.Fatalf("placement %v, load %v", got, load)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all scheduled: %v", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
