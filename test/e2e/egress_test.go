package e2e

// Addresses (ARCHITECTURE.md, "Test topology"): node1 10.250.0.11, its Pods in 10.244.1.0/24,
// the outside client ext at 10.250.0.200, which has no route to the pod CIDRs.

import (
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcplane/svcplane/pkg/sandbox"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// TestPodReachesAHostOutsideTheClusterAsItsNode: ext cannot route to Pods, so a Pod's request
// to it gets an answer only because the agent masquerades it behind node1's address.
func TestPodReachesAHostOutsideTheClusterAsItsNode(t *testing.T) {
	c := upSandbox(t, sandbox.UpOptions{Nodes: 1, ProxyMode: "nftables"})
	ln, err := topology.Listen(topology.NamespaceName(c.name, topology.MemberExternal), "tcp", topology.ExternalAddr.String()+":8081")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(r.RemoteAddr)) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	pod, err := c.client.CoreV1().Pods("default").Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "debian", Command: []string{"/bin/sh", "-c",
			"curl -s -m 5 http://" + topology.ExternalAddr.String() + ":8081/; echo; sleep 3600"}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := c.podLog(t, 1, pod, 40*time.Second, "ext's answer", lineCount(1))
	if want := topology.NodeAddr(1).String() + ":"; !strings.HasPrefix(out, want) {
		t.Errorf("ext saw the Pod's request come from %q, want node1's address %s<port>", strings.TrimSpace(out), want)
	}
}
