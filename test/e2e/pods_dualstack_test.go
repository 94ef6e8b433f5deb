package e2e

// Dual-stack Pods end to end: `svcplane sandbox up --ip-family dual` (topology plan.go: node N
// at 10.250.0.(10+N) and fd00:250::(10+N), pods 10.244.N.0/24 and fd00:244:0:N::/64, Services
// 10.96.0.0/12 and fd00:96::/112, kube-dns at 10.96.0.10). The backends are a Deployment of
// test servers on node2, reached from a client Pod on node1 through a RequireDualStack
// Service's IPv6 ClusterIP; a headless Service's AAAA records come from the cluster DNS.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcplane/svcplane/pkg/sandbox"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// upDualStack brings up a dual-stack sandbox of two nodes with agents in proxyMode.
func upDualStack(t *testing.T, proxyMode string) *agentCluster {
	t.Helper()
	if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
		t.Skipf("the kernel has no IPv6: %v", err)
	}
	return upSandbox(t, sandbox.UpOptions{Nodes: 2, ProxyMode: proxyMode, IPFamily: sandbox.FamilyDual})
}

func TestDualStackPodsServeIPv6ServicesAcrossNodes(t *testing.T) {
	for _, mode := range []string{"nftables", "userspace"} {
		t.Run(mode, func(t *testing.T) { testDualStackPods(t, mode) })
	}
}

func testDualStackPods(t *testing.T, mode string) {
	c := upDualStack(t, mode)
	ctx := context.Background()

	t.Run("nodes get a pod CIDR per family, IPv4 first", func(t *testing.T) {
		for n := 1; n <= 2; n++ {
			node, err := c.client.CoreV1().Nodes().Get(ctx, topology.NodeMember(n), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := []string{topology.PodCIDR(n).String(), topology.PodCIDRV6(n).String()}
			if node.Spec.PodCIDR != want[0] || !slices.Equal(node.Spec.PodCIDRs, want) {
				t.Errorf("node%d: podCIDR %s, podCIDRs %v; want %v", n, node.Spec.PodCIDR, node.Spec.PodCIDRs, want)
			}
		}
	})

	t.Run("nodes have an InternalIP per family, IPv4 first", func(t *testing.T) {
		for n := 1; n <= 2; n++ {
			want := []string{topology.NodeAddr(n).String(), topology.NodeAddrV6(n).String()}
			waitDS(t, 20*time.Second, fmt.Sprintf("node%d InternalIPs %v", n, want), func() string {
				node, err := c.client.CoreV1().Nodes().Get(ctx, topology.NodeMember(n), metav1.GetOptions{})
				if err != nil {
					return err.Error()
				}
				var got []string
				for _, a := range node.Status.Addresses {
					if a.Type == corev1.NodeInternalIP {
						got = append(got, a.Address)
					}
				}
				if !slices.Equal(got, want) {
					return fmt.Sprintf("addresses %v", node.Status.Addresses)
				}
				return ""
			})
		}
	})

	labels := map[string]string{"app": "web6"}
	replicas := int32(2)
	if _, err := c.client.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web6"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					// On node2, so the client on node1 crosses nodes over IPv6.
					NodeSelector: map[string]string{corev1.LabelHostname: "node2"},
					Containers: []corev1.Container{{
						Name: "testserver", Image: "svcplane/testserver",
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 1, FailureThreshold: 1,
						},
					}},
				},
			},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	require := corev1.IPFamilyPolicyRequireDualStack
	svc, err := c.client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web6"},
		Spec: corev1.ServiceSpec{Selector: labels, IPFamilyPolicy: &require,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.ClusterIPs) != 2 || !netip.MustParseAddr(svc.Spec.ClusterIPs[1]).Is6() {
		t.Fatalf("RequireDualStack Service got ClusterIPs %v; want IPv4 and IPv6", svc.Spec.ClusterIPs)
	}
	clusterIPv6 := svc.Spec.ClusterIPs[1]
	headless, err := c.client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web6-headless"},
		Spec: corev1.ServiceSpec{Selector: labels, ClusterIP: corev1.ClusterIPNone, IPFamilyPolicy: &require,
			Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(headless.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}) {
		t.Fatalf("headless RequireDualStack Service has families %v", headless.Spec.IPFamilies)
	}

	// Both Pods Ready, each with an address of either family.
	var podV6 []string
	waitDS(t, 60*time.Second, "two Ready web6 Pods", func() string {
		list, err := c.client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web6"})
		if err != nil {
			return err.Error()
		}
		podV6 = nil
		for i := range list.Items {
			if p := &list.Items[i]; isReady(p) && p.DeletionTimestamp == nil {
				podV6 = append(podV6, p.Status.PodIPs[len(p.Status.PodIPs)-1].IP)
			}
		}
		if len(podV6) != 2 {
			return fmt.Sprintf("%d of 2 Ready", len(podV6))
		}
		return ""
	})
	slices.Sort(podV6)

	t.Run("pods have an IPv4 and an IPv6 address, primary first, and their node's IPs as hostIPs", func(t *testing.T) {
		list, err := c.client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web6"})
		if err != nil {
			t.Fatal(err)
		}
		wantHost := []corev1.HostIP{{IP: topology.NodeAddr(2).String()}, {IP: topology.NodeAddrV6(2).String()}}
		for _, p := range list.Items {
			if p.Status.HostIP != wantHost[0].IP || !slices.Equal(p.Status.HostIPs, wantHost) {
				t.Errorf("pod %s: hostIP %s, hostIPs %v; want node2's %v", p.Name, p.Status.HostIP, p.Status.HostIPs, wantHost)
			}
			ips := p.Status.PodIPs
			if len(ips) != 2 || ips[0].IP != p.Status.PodIP ||
				!topology.PodCIDR(2).Contains(netip.MustParseAddr(ips[0].IP)) ||
				!topology.PodCIDRV6(2).Contains(netip.MustParseAddr(ips[1].IP)) {
				t.Errorf("pod %s: podIP %s, podIPs %v; want an address of %s then one of %s", p.Name, p.Status.PodIP, ips, topology.PodCIDR(2), topology.PodCIDRV6(2))
			}
		}
	})

	t.Run("the EndpointSlice controller makes an IPv6 slice of the Pods' IPv6 addresses", func(t *testing.T) {
		waitDS(t, 20*time.Second, "an IPv6 EndpointSlice listing "+strings.Join(podV6, ", "), func() string {
			slices6, err := c.client.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web6"})
			if err != nil {
				return err.Error()
			}
			var got []string
			for _, s := range slices6.Items {
				if s.AddressType != discoveryv1.AddressTypeIPv6 {
					continue
				}
				for _, ep := range s.Endpoints {
					got = append(got, ep.Addresses...)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, podV6) {
				return fmt.Sprintf("IPv6 slices list %v", got)
			}
			return ""
		})
	})

	t.Run("a client Pod on another node reaches the IPv6 ClusterIP and is seen by its IPv6 address", func(t *testing.T) {
		url := "http://[" + clusterIPv6 + "]:80"
		// node1's proxy programs the Service a moment after it is created; the client's
		// requests are to test the Pod's path, not that race.
		node1 := topology.NamespaceName(c.name, "node1")
		waitDS(t, 20*time.Second, "node1's proxy serving "+url, func() string {
			out, err := topology.Command(ctx, node1, "curl", "-s", "-g", "-m", "2", url+"/hostname").CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "web6-") {
				return fmt.Sprintf("curl: %v: %q", err, out)
			}
			return ""
		})
		// The first line is the downward API's status.hostIPs.
		script := fmt.Sprintf("echo \"$HOST_IPS\"; for i in 1 2 3 4 5 6; do curl -s -g -m 5 %s/hostname; echo; curl -s -g -m 5 %s/clientip; echo; done; sleep 3600", url, url)
		c.create(t, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "client6"},
			Spec: corev1.PodSpec{NodeSelector: map[string]string{corev1.LabelHostname: "node1"},
				Containers: []corev1.Container{{Name: "c", Image: "debian", Command: []string{"/bin/sh", "-c", script},
					Env: []corev1.EnvVar{{Name: "HOST_IPS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIPs"}}}}}}},
		})
		client := c.waitPod(t, "client6", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
		if len(client.Status.PodIPs) != 2 {
			t.Fatalf("client Pod has podIPs %v", client.Status.PodIPs)
		}
		clientV6 := client.Status.PodIPs[1].IP
		out := c.podLog(t, 1, client, 40*time.Second, "hostIPs and six /hostname and /clientip answers", lineCount(13))
		// A failed request leaves an empty line: keep them, so the pairs stay aligned.
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 13 {
			t.Fatalf("client output, want 13 lines:\n%s", out)
		}
		if want := topology.NodeAddr(1).String() + "," + topology.NodeAddrV6(1).String(); lines[0] != want {
			t.Errorf("$HOST_IPS (status.hostIPs) is %q, want %q", lines[0], want)
		}
		lines = lines[1:]
		// In nftables mode Pod-to-Service traffic inside the cluster CIDR is not masqueraded:
		// the backend sees the client Pod's own IPv6 address. The userspace proxy ends the
		// client's connection and opens its own from node1, over IPv6 too.
		wantClient := "[" + clientV6 + "]:"
		if mode == "userspace" {
			wantClient = "[" + topology.NodeAddrV6(1).String() + "]:"
		}
		backends := map[string]bool{}
		for i := 0; i < len(lines); i += 2 {
			if !strings.HasPrefix(lines[i], "web6-") {
				t.Errorf("/hostname through [%s]:80 answered %q, want a web6 Pod", clusterIPv6, lines[i])
			}
			backends[lines[i]] = true
			if !strings.HasPrefix(lines[i+1], wantClient) {
				t.Errorf("backend saw the client as %q, want %s<port>", lines[i+1], wantClient)
			}
		}
		t.Logf("backends answering: %v", backends)
	})

	t.Run("a NodePort answers from outside on a node's IPv6 node IP, not on its pod bridge", func(t *testing.T) {
		np, err := c.client.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web6-np"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: labels, IPFamilyPolicy: &require,
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		port := fmt.Sprint(np.Spec.Ports[0].NodePort)
		ext := topology.NamespaceName(c.name, topology.MemberExternal)
		url := "http://[" + topology.NodeAddrV6(2).String() + "]:" + port + "/hostname"
		waitDS(t, 20*time.Second, "ext reaching "+url, func() string {
			out, err := topology.Command(ctx, ext, "curl", "-s", "-g", "-m", "2", url).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "web6-") {
				return fmt.Sprintf("curl: %v: %q", err, out)
			}
			return ""
		})
		// node2's pod bridge address is a global IPv6 address of node2 too, reachable from
		// node1 (which routes node2's pod CIDR to it); NodePorts must not answer there, as
		// upstream's kube-proxy answers on the node's primary IPs only.
		gateway := "http://[" + topology.PodGatewayV6(2).String() + "]:" + port + "/hostname"
		node1 := topology.NamespaceName(c.name, "node1")
		if out, err := topology.Command(ctx, node1, "curl", "-s", "-g", "-m", "2", gateway).CombinedOutput(); err == nil {
			t.Errorf("the NodePort answered on node2's pod bridge, %s: %q", gateway, out)
		}
	})

	t.Run("the headless Service's AAAA records list the Pods' IPv6 addresses", func(t *testing.T) {
		name := "web6-headless.default.svc.cluster.local"
		ns := topology.NamespaceName(c.name, "node1")
		waitDS(t, 20*time.Second, "AAAA "+name+" = "+strings.Join(podV6, ", "), func() string {
			out, err := topology.Command(ctx, ns, "dig", "+short", "+time=2", "+tries=1", "@"+topology.ClusterDNSAddr.String(), name, "AAAA").CombinedOutput()
			if err != nil {
				return fmt.Sprintf("dig: %v: %s", err, out)
			}
			got := strings.Fields(string(out))
			slices.Sort(got)
			if !slices.Equal(got, podV6) {
				return fmt.Sprintf("dig answered %q", out)
			}
			return ""
		})
	})
}

// waitDS is epEventually with the awaited state named in the failure.
func waitDS(t *testing.T, timeout time.Duration, what string, check func() string) {
	t.Helper()
	epEventually(t, timeout, func() string {
		if msg := check(); msg != "" {
			return what + ": " + msg
		}
		return ""
	})
}
