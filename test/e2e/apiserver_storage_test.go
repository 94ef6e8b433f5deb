package e2e

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/svcplane/svcplane/pkg/etcd"
	"github.com/svcplane/svcplane/test/testserver"
)

// TestRestartKeepsEveryObject stops the server (once gracefully, once by SIGKILL) and finds every
// object again with its resourceVersion; watches resume from a resourceVersion of before the restart.
func TestRestartKeepsEveryObject(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	manifests := []string{endpointsOwner}
	for _, rc := range servedResources() {
		manifests = append(manifests, rc.manifest)
	}
	if _, stderr, err := s.KubectlWithInput(t, joinYAML(manifests), "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, stderr)
	}
	before := snapshotResourceVersions(ctx, t, s)

	for _, crash := range []bool{false, true} {
		if crash {
			s.Kill(t)
		}
		s.Restart(t)
		after := snapshotResourceVersions(ctx, t, s)
		for key, rv := range before {
			if after[key] != rv {
				t.Errorf("after restart (crash=%v) %s has resourceVersion %q, want %q", crash, key, after[key], rv)
			}
		}
		if len(after) != len(before) {
			t.Errorf("after restart (crash=%v) %d objects, before %d", crash, len(after), len(before))
		}
	}

	// Resource versions keep growing across restarts, and a watch from a list's resourceVersion
	// sees exactly the changes after it. (A watch from before the restart gets 410 Expired, as
	// upstream: the watch cache starts at the current revision; clients relist.)
	svcs, err := s.Client.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Client.CoreV1().Services("default").Watch(ctx, metav1.ListOptions{ResourceVersion: svcs.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	svc, err := s.Client.CoreV1().Services("default").Get(ctx, "crud-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Labels = map[string]string{"after": "restart"}
	updated, err := s.Client.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if mustAtoi(t, updated.ResourceVersion) <= mustAtoi(t, svcs.ResourceVersion) {
		t.Errorf("resourceVersion went backwards across restarts: list at %s, then update at %s", svcs.ResourceVersion, updated.ResourceVersion)
	}
	select {
	case ev := <-w.ResultChan():
		if svc, ok := ev.Object.(*corev1.Service); ev.Type != watch.Modified || !ok || svc.Labels["after"] != "restart" {
			t.Errorf("watch after restart saw %s %v first, want the MODIFIED update", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch after restart saw nothing")
	}
}

func snapshotResourceVersions(ctx context.Context, t *testing.T, s *testserver.Server) map[string]string {
	t.Helper()
	rvs := map[string]string{}
	cs := s.Client
	add := func(kind string, items []metav1.Object) {
		for _, o := range items {
			rvs[kind+"/"+o.GetNamespace()+"/"+o.GetName()] = o.GetResourceVersion()
		}
	}
	svcs, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	add("service", metaList(svcs.Items))
	eps, _ := cs.CoreV1().Endpoints("default").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=crud-endpoints"})
	add("endpoints", metaList(eps.Items))
	pods, _ := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	add("pod", metaList(pods.Items))
	nodes, _ := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	add("node", metaList(nodes.Items))
	nss, _ := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	add("namespace", metaList(nss.Items))
	evs, _ := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=crud-event"})
	add("event", metaList(evs.Items))
	slices, _ := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=crud-slice"})
	add("slice", metaList(slices.Items))
	deps, _ := cs.AppsV1().Deployments("").List(ctx, metav1.ListOptions{})
	add("deployment", metaList(deps.Items))
	rss, _ := cs.AppsV1().ReplicaSets("").List(ctx, metav1.ListOptions{})
	add("replicaset", metaList(rss.Items))
	return rvs
}

func metaList[T any, PT interface {
	*T
	metav1.Object
}](items []T) []metav1.Object {
	out := make([]metav1.Object, len(items))
	for i := range items {
		out[i] = PT(&items[i])
	}
	return out
}

func mustAtoi(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q is not a number: %v", s, err)
	}
	return n
}

func joinYAML(docs []string) string {
	out := ""
	for _, d := range docs {
		out += d + "\n---\n"
	}
	return out
}

// TestExternalEtcdSharedByTwoServers runs two API servers on one etcd (--etcd-servers): what one
// writes, the other serves and watches.
func TestExternalEtcdSharedByTwoServers(t *testing.T) {
	dir, err := os.MkdirTemp("", "svcp-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := etcd.Start(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })

	a := testserver.Start(t, testserver.Options{Args: []string{"--etcd-servers", store.Endpoint}})
	b := testserver.Start(t, testserver.Options{Args: []string{"--etcd-servers", store.Endpoint}})
	if _, err := os.Stat(a.DataDir + "/etcd"); err == nil {
		t.Errorf("with --etcd-servers the server still started an embedded etcd in %s/etcd", a.DataDir)
	}

	w, err := b.Client.CoreV1().Services("default").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=shared"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "shared"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "x"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}
	if _, err := a.Client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		if ev.Type != watch.Added {
			t.Errorf("server b's watch saw %s, want ADDED", ev.Type)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server b never saw the Service created through server a")
	}
	if _, err := b.Client.CoreV1().Services("default").Get(ctx, "shared", metav1.GetOptions{}); err != nil {
		t.Errorf("server b cannot get what server a created: %v", err)
	}
}

// TestGarbageCollectorCascades: deleting an owner deletes its dependents (background), keeps them
// with --cascade=orphan, and foreground waits for them.
func TestGarbageCollectorCascades(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	mkOwner := func(name string) *appsv1.ReplicaSet {
		rs := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: appsv1.ReplicaSetSpec{
				Replicas: ptr(int32(0)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"rs": name}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"rs": name}},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
				},
			},
		}
		rs, err := s.Client.AppsV1().ReplicaSets("default").Create(ctx, rs, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The dependents are outside the ReplicaSet's selector and not controlled by it, so the
		// ReplicaSet controller (which would delete Pods beyond replicas: 0) leaves them alone.
		for i := 0; i < 2; i++ {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{
					Name:   name + "-" + strconv.Itoa(i),
					Labels: map[string]string{"dependent-of": name},
					OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet",
						Name: rs.Name, UID: rs.UID, Controller: ptr(false), BlockOwnerDeletion: ptr(true)}},
				},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
			}
			if _, err := s.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		return rs
	}
	podsOf := func(name string) int {
		pods, err := s.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "dependent-of=" + name})
		if err != nil {
			t.Fatal(err)
		}
		return len(pods.Items)
	}
	waitPods := func(name string, want int) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			return podsOf(name) == want, nil
		}); err != nil {
			t.Errorf("pods of %s: %d, want %d", name, podsOf(name), want)
		}
	}

	mkOwner("background")
	if _, stderr, err := s.Kubectl(t, "delete", "rs", "background"); err != nil {
		t.Fatalf("%v %s", err, stderr)
	}
	waitPods("background", 0)

	mkOwner("foreground")
	if _, stderr, err := s.Kubectl(t, "delete", "rs", "foreground", "--cascade=foreground"); err != nil {
		t.Fatalf("%v %s", err, stderr)
	}
	if n := podsOf("foreground"); n != 0 {
		t.Errorf("foreground delete returned while %d dependents remain", n)
	}

	mkOwner("orphan")
	if _, stderr, err := s.Kubectl(t, "delete", "rs", "orphan", "--cascade=orphan"); err != nil {
		t.Fatalf("%v %s", err, stderr)
	}
	time.Sleep(time.Second)
	waitPods("orphan", 2)
	pods, _ := s.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "dependent-of=orphan"})
	for _, p := range pods.Items {
		if len(p.OwnerReferences) != 0 {
			t.Errorf("orphaned pod %s still has owner references %v", p.Name, p.OwnerReferences)
		}
	}
}
