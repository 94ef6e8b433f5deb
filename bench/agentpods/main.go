// Command agentpods measures the node agent: the time from creating a Pod of the built-in test
// server to its Ready condition (one Pod at a time, median and p90), then starts many Pods at
// once and waits until all are Ready. bench/agent-pods.sh runs it against a sandbox and adds
// the node's memory.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the sandbox")
	sequential := flag.Int("sequential", 20, "Pods started one after another for the start-latency figure")
	bulk := flag.Int("bulk", 100, "Pods started together for the memory figure (left running)")
	flag.Parse()
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	must(err)
	cfg.QPS, cfg.Burst = 200, 400
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()

	var took []time.Duration
	for i := 0; i < *sequential; i++ {
		name := fmt.Sprintf("lat-%d", i)
		d, err := startAndWait(ctx, client, name)
		must(err)
		took = append(took, d)
		must(client.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{}))
	}
	slices.Sort(took)
	fmt.Printf("pod start (create → Ready), %d pods one at a time: median %v, p90 %v, min %v, max %v\n",
		len(took), took[len(took)/2].Round(time.Millisecond), took[len(took)*9/10].Round(time.Millisecond),
		took[0].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))

	start := time.Now()
	w, err := client.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{LabelSelector: "bench=bulk"})
	must(err)
	for i := 0; i < *bulk; i++ {
		_, err := client.CoreV1().Pods("default").Create(ctx, testServerPod(fmt.Sprintf("bulk-%d", i), "bulk"), metav1.CreateOptions{})
		must(err)
	}
	ready := map[string]bool{}
	for ev := range w.ResultChan() {
		if p, ok := ev.Object.(*corev1.Pod); ok && isReady(p) {
			ready[p.Name] = true
		}
		if len(ready) == *bulk {
			break
		}
	}
	w.Stop()
	fmt.Printf("%d pods created together: all Ready after %v\n", *bulk, time.Since(start).Round(time.Millisecond))
}

func startAndWait(ctx context.Context, client kubernetes.Interface, name string) (time.Duration, error) {
	w, err := client.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		return 0, err
	}
	defer w.Stop()
	start := time.Now()
	if _, err := client.CoreV1().Pods("default").Create(ctx, testServerPod(name, "latency"), metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev := <-w.ResultChan():
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted && isReady(p) {
				return time.Since(start), nil
			}
		case <-timeout:
			return 0, fmt.Errorf("pod %s not Ready after 60s", name)
		}
	}
}

func testServerPod(name, role string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench": role}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "srv", Image: "svcplane/testserver",
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
		}}},
	}
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentpods:", err)
		os.Exit(1)
	}
}
