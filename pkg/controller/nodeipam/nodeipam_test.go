package nodeipam

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcplane/svcplane/pkg/controller"
)

func TestNextFreeSkipsUsedAndSubnetZero(t *testing.T) {
	cluster := netip.MustParsePrefix("10.244.0.0/16")
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	cases := []struct {
		used []netip.Prefix
		want string
	}{
		{nil, "10.244.1.0/24"},
		{[]netip.Prefix{p("10.244.1.0/24"), p("10.244.2.0/24")}, "10.244.3.0/24"},
		{[]netip.Prefix{p("10.244.2.0/24")}, "10.244.1.0/24"},
		{[]netip.Prefix{p("10.244.0.0/23")}, "10.244.2.0/24"},
	}
	for _, tc := range cases {
		got, ok := NextFree(cluster, 24, tc.used)
		if !ok || got.String() != tc.want {
			t.Errorf("NextFree(used %v) = %v, %v; want %s", tc.used, got, ok, tc.want)
		}
	}
	if _, ok := NextFree(p("10.244.0.0/23"), 24, []netip.Prefix{p("10.244.0.0/23")}); ok {
		t.Error("a full cluster CIDR gave a subnet")
	}
}

func TestNextFreeCutsIPv6ClusterCIDRIntoSlash64s(t *testing.T) {
	cluster := netip.MustParsePrefix("fd00:244::/56")
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	cases := []struct {
		used []netip.Prefix
		want string
	}{
		{nil, "fd00:244:0:1::/64"},
		{[]netip.Prefix{p("fd00:244:0:1::/64"), p("10.244.2.0/24")}, "fd00:244:0:2::/64"},
		{[]netip.Prefix{p("fd00:244:0:1::/64"), p("fd00:244:0:2::/63")}, "fd00:244:0:4::/64"},
	}
	for _, tc := range cases {
		got, ok := NextFree(cluster, 64, tc.used)
		if !ok || got.String() != tc.want {
			t.Errorf("NextFree(used %v) = %v, %v; want %s", tc.used, got, ok, tc.want)
		}
	}
	// Subnet 0 comes last, then nothing.
	var used []netip.Prefix
	for i := 1; i < 256; i++ {
		got, _ := NextFree(cluster, 64, used)
		used = append(used, got)
	}
	if got, ok := NextFree(cluster, 64, used); !ok || got.String() != "fd00:244::/64" {
		t.Errorf("256th /64 of a /56 = %v, %v; want subnet 0 fd00:244::/64", got, ok)
	}
	if _, ok := NextFree(cluster, 64, append(used, p("fd00:244::/64"))); ok {
		t.Error("a full IPv6 cluster CIDR gave a subnet")
	}
}

func TestClusterCIDRFlagTakesOneRangeOrOnePerFamily(t *testing.T) {
	cases := []struct {
		flag    string
		want    string // the pools, or the start of the error
		wantErr bool
	}{
		{flag: "10.244.0.0/16", want: "[10.244.0.0/16:24]"},
		{flag: "10.244.0.0/16,fd00:244::/56", want: "[10.244.0.0/16:24 fd00:244::/56:64]"},
		// Either order, as kube-controller-manager: the first family is the primary.
		{flag: "fd00:244::/56,10.244.0.0/16", want: "[fd00:244::/56:64 10.244.0.0/16:24]"},
		{flag: "fd00:244::/56", want: "[fd00:244::/56:64]"},
		{flag: " 10.244.1.7/16 ", want: "[10.244.0.0/16:24]"},
		{flag: "10.244.0.0/16,10.245.0.0/16", wantErr: true, want: `--cluster-cidr "10.244.0.0/16,10.245.0.0/16": two CIDRs must be one IPv4 and one IPv6`},
		{flag: "10.244.0.0/16,fd00:244::/56,fd01::/56", wantErr: true, want: "--cluster-cidr"},
		{flag: "10.244.0.0", wantErr: true, want: `--cluster-cidr "10.244.0.0": "10.244.0.0" is not a CIDR`},
		{flag: "", wantErr: true, want: "--cluster-cidr"},
		{flag: "10.244.0.0/25", wantErr: true, want: "--node-cidr-mask-size 24 must be between"},
		{flag: "10.244.0.0/16,fd00:244::/72", wantErr: true, want: "--node-cidr-mask-size-ipv6 64 must be between"},
		{flag: "10.244.0.0/16,fd00::/32", wantErr: true, want: "--node-cidr-mask-size-ipv6 64 cuts the cluster CIDR fd00::/32 into more than 2^16"},
	}
	for _, tc := range cases {
		var got string
		cidrs, err := ParseClusterCIDRs(tc.flag)
		var pools []pool
		if err == nil {
			pools, err = newPools(cidrs, 24, 64)
		}
		if err != nil {
			got = err.Error()
		} else {
			var parts []string
			for _, p := range pools {
				parts = append(parts, fmt.Sprintf("%s:%d", p.cidr, p.mask))
			}
			got = "[" + strings.Join(parts, " ") + "]"
		}
		if (err != nil) != tc.wantErr || !strings.HasPrefix(got, tc.want) {
			t.Errorf("--cluster-cidr %q: got %q (error %v), want %q", tc.flag, got, err != nil, tc.want)
		}
	}
}

// runController runs the allocator with --cluster-cidr clusterCIDR against a fake API holding
// nodes, until the test ends.
func runController(t *testing.T, clusterCIDR string, nodes ...*corev1.Node) kubernetes.Interface {
	t.Helper()
	old := ClusterCIDR
	ClusterCIDR = clusterCIDR
	t.Cleanup(func() { ClusterCIDR = old })
	var objs []runtime.Object
	for _, n := range nodes {
		objs = append(objs, n)
	}
	client := fake.NewClientset(objs...)
	factory := informers.NewSharedInformerFactory(client, 0)
	run, err := New(controller.Context{Client: client, Informers: factory})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	factory.Start(ctx.Done())
	go run(ctx)
	return client
}

func waitNode(t *testing.T, client kubernetes.Interface, name string, cond func(*corev1.Node) bool) *corev1.Node {
	t.Helper()
	var last *corev1.Node
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		n, err := client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			last = n
			if cond(n) {
				return n
			}
		}
	}
	t.Fatalf("node %s: condition not met; last spec %+v", name, last.Spec)
	return nil
}

func TestDualStackNodesGetOnePodCIDRPerFamilyPrimaryFirst(t *testing.T) {
	node := func(name string, cidrs ...string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if len(cidrs) > 0 {
			n.Spec.PodCIDR, n.Spec.PodCIDRs = cidrs[0], cidrs
		}
		return n
	}
	client := runController(t, "10.244.0.0/16,fd00:244::/56",
		node("taken", "10.244.1.0/24", "fd00:244:0:1::/64"),
		// Registered while the cluster was IPv4-only: upstream never changes podCIDRs once set.
		node("old-v4", "10.244.2.0/24"),
		node("new"))
	n := waitNode(t, client, "new", func(n *corev1.Node) bool { return n.Spec.PodCIDR != "" })
	if n.Spec.PodCIDR != "10.244.3.0/24" || fmt.Sprint(n.Spec.PodCIDRs) != "[10.244.3.0/24 fd00:244:0:2::/64]" {
		t.Errorf("new node got podCIDR %s, podCIDRs %v; want 10.244.3.0/24 and [10.244.3.0/24 fd00:244:0:2::/64]", n.Spec.PodCIDR, n.Spec.PodCIDRs)
	}
	// Another Node after it: a later update of "old-v4" must not have been made either.
	if _, err := client.CoreV1().Nodes().Create(context.Background(), node("newer"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n = waitNode(t, client, "newer", func(n *corev1.Node) bool { return n.Spec.PodCIDR != "" })
	if fmt.Sprint(n.Spec.PodCIDRs) != "[10.244.4.0/24 fd00:244:0:3::/64]" {
		t.Errorf("second new node got %v", n.Spec.PodCIDRs)
	}
	old, _ := client.CoreV1().Nodes().Get(context.Background(), "old-v4", metav1.GetOptions{})
	if fmt.Sprint(old.Spec.PodCIDRs) != "[10.244.2.0/24]" {
		t.Errorf("a Node with an IPv4 pod CIDR was changed to %v; upstream leaves set podCIDRs alone", old.Spec.PodCIDRs)
	}
}

func TestIPv6FirstClusterCIDRMakesIPv6ThePrimaryPodCIDR(t *testing.T) {
	client := runController(t, "fd00:244::/56,10.244.0.0/16", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}})
	n := waitNode(t, client, "n", func(n *corev1.Node) bool { return n.Spec.PodCIDR != "" })
	if n.Spec.PodCIDR != "fd00:244:0:1::/64" || fmt.Sprint(n.Spec.PodCIDRs) != "[fd00:244:0:1::/64 10.244.1.0/24]" {
		t.Errorf("got podCIDR %s, podCIDRs %v", n.Spec.PodCIDR, n.Spec.PodCIDRs)
	}
}

func TestIPv4OnlyClusterKeepsOneIPv4PodCIDR(t *testing.T) {
	client := runController(t, "10.244.0.0/16", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}})
	n := waitNode(t, client, "n", func(n *corev1.Node) bool { return n.Spec.PodCIDR != "" })
	if n.Spec.PodCIDR != "10.244.1.0/24" || fmt.Sprint(n.Spec.PodCIDRs) != "[10.244.1.0/24]" {
		t.Errorf("got podCIDR %s, podCIDRs %v", n.Spec.PodCIDR, n.Spec.PodCIDRs)
	}
}
