package e2e

// An IPv6-only cluster end to end: `svcplane sandbox up --ip-family ipv6` (topology plan.go:
// node N at fd00:250::(10+N), pods fd00:244:0:N::/64, Services fd00:96::/112 with kube-dns at
// fd00:96::a, LoadBalancer addresses fd00:251::/120, on-link for ext). The namespaces keep
// their IPv4 addresses only for the host's forwarder; nothing in the cluster has one.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcplane/svcplane/pkg/agent/announce"
	"github.com/svcplane/svcplane/pkg/sandbox"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// TestIPv6OnlyClusterServesPodsServicesDNSAndLoadBalancers: a Pod finds a Service by name
// through the cluster DNS its resolv.conf names and reaches it; the outside client reaches
// the Service's LoadBalancer address, answered by one node over NDP, and its NodePort on
// every node.
func TestIPv6OnlyClusterServesPodsServicesDNSAndLoadBalancers(t *testing.T) {
	if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
		t.Skipf("the kernel has no IPv6: %v", err)
	}
	for _, mode := range []string{"nftables", "userspace"} {
		t.Run(mode, func(t *testing.T) {
			testIPv6Only(t, upSandbox(t, sandbox.UpOptions{Nodes: 2, ProxyMode: mode, IPFamily: sandbox.FamilyIPv6}))
		})
	}
}

func testIPv6Only(t *testing.T, c *agentCluster) {
	ctx := context.Background()
	in6 := func(prefix netip.Prefix, ip string) bool {
		a, err := netip.ParseAddr(ip)
		return err == nil && prefix.Contains(a)
	}

	t.Run("nodes have only IPv6 addresses and pod CIDRs", func(t *testing.T) {
		for n := 1; n <= 2; n++ {
			node, err := c.client.CoreV1().Nodes().Get(ctx, topology.NodeMember(n), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{topology.PodCIDRV6(n).String()}; !slices.Equal(node.Spec.PodCIDRs, want) {
				t.Errorf("node%d podCIDRs %v, want %v", n, node.Spec.PodCIDRs, want)
			}
			var internal []string
			for _, a := range node.Status.Addresses {
				if a.Type == corev1.NodeInternalIP {
					internal = append(internal, a.Address)
				}
			}
			if want := []string{topology.NodeAddrV6(n).String()}; !slices.Equal(internal, want) {
				t.Errorf("node%d InternalIPs %v, want %v", n, internal, want)
			}
		}
	})

	t.Run("the kubernetes and kube-dns Services are IPv6, the API server's endpoint too", func(t *testing.T) {
		for name, want := range map[string]string{"default/kubernetes": "fd00:96::1", "kube-system/kube-dns": topology.ClusterDNSAddrV6.String()} {
			ns, n, _ := strings.Cut(name, "/")
			// The server publishes both just after it becomes ready.
			waitDS(t, 10*time.Second, name+" at ["+want+"], IPv6 only", func() string {
				svc, err := c.client.CoreV1().Services(ns).Get(ctx, n, metav1.GetOptions{})
				if err != nil {
					return err.Error()
				}
				if !slices.Equal(svc.Spec.ClusterIPs, []string{want}) || !slices.Equal(svc.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv6Protocol}) {
					return fmt.Sprintf("clusterIPs %v, ipFamilies %v", svc.Spec.ClusterIPs, svc.Spec.IPFamilies)
				}
				return ""
			})
		}
		list, err := c.client.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=kubernetes"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range list.Items {
			for _, ep := range s.Endpoints {
				got = append(got, string(s.AddressType)+" "+strings.Join(ep.Addresses, ","))
			}
		}
		if want := []string{"IPv6 " + topology.ControlPlaneAddrV6.String()}; !slices.Equal(got, want) {
			t.Errorf("kubernetes EndpointSlices list %v, want %v", got, want)
		}
	})

	// Two backends, one per node, and a LoadBalancer Service with the defaults.
	for _, name := range []string{"web-1", "web-2"} {
		node := "node" + name[len(name)-1:]
		c.create(t, testServerPod(name, func(p *corev1.Pod) { p.Spec.NodeName = node }))
	}
	svc := c.createService(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	})
	if !slices.Equal(svc.Spec.IPFamilies, []corev1.IPFamily{corev1.IPv6Protocol}) || !in6(topology.ServiceCIDRV6, svc.Spec.ClusterIP) {
		t.Fatalf("Service with the defaults: ipFamilies %v, clusterIP %s; want IPv6 from %s", svc.Spec.IPFamilies, svc.Spec.ClusterIP, topology.ServiceCIDRV6)
	}
	for _, name := range []string{"web-1", "web-2"} {
		p := c.waitPod(t, name, "ready", isReady)
		if len(p.Status.PodIPs) != 1 || !in6(topology.ClusterCIDRV6, p.Status.PodIP) {
			t.Errorf("pod %s: podIPs %v, want one address of %s", name, p.Status.PodIPs, topology.ClusterCIDRV6)
		}
	}

	t.Run("a Pod resolves the Service by its short name and reaches it", func(t *testing.T) {
		// node1's proxy programs the Service a moment after it is created; the Pod's
		// requests are to test its resolv.conf and the DNS, not that race.
		url := "http://[" + svc.Spec.ClusterIP + "]/hostname"
		node1 := topology.NamespaceName(c.name, "node1")
		waitDS(t, 20*time.Second, "node1's proxy serving "+url, func() string {
			out, err := topology.Command(ctx, node1, "curl", "-s", "-g", "-m", "2", url).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "web-") {
				return fmt.Sprintf("curl: %v: %q", err, out)
			}
			return ""
		})
		script := `grep ^nameserver /etc/resolv.conf; echo "$WEB_SERVICE_HOST"; for i in 1 2 3 4; do curl -s -m 5 http://web/hostname; echo; done; sleep 3600`
		c.create(t, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "client"},
			Spec: corev1.PodSpec{NodeName: "node1",
				Containers: []corev1.Container{{Name: "c", Image: "debian", Command: []string{"/bin/sh", "-c", script}}}},
		})
		client := c.waitPod(t, "client", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
		out := c.podLog(t, 1, client, 40*time.Second, "resolv.conf's nameserver, $WEB_SERVICE_HOST and four /hostname answers", lineCount(6))
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 6 {
			t.Fatalf("client output, want 6 lines:\n%s", out)
		}
		if want := "nameserver " + topology.ClusterDNSAddrV6.String(); lines[0] != want {
			t.Errorf("the Pod's resolv.conf says %q, want %q", lines[0], want)
		}
		if lines[1] != svc.Spec.ClusterIP {
			t.Errorf("$WEB_SERVICE_HOST is %q, want the ClusterIP %s", lines[1], svc.Spec.ClusterIP)
		}
		for _, l := range lines[2:] {
			if !strings.HasPrefix(l, "web-") {
				t.Errorf("http://web/hostname from the Pod answered %q, want a web Pod", l)
			}
		}
	})

	t.Run("the outside client reaches the LoadBalancer address through one node's NDP answer", func(t *testing.T) {
		var lb string
		waitDS(t, 20*time.Second, "an IPv6 LoadBalancer address", func() string {
			s, err := c.client.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return err.Error()
			}
			if ing := s.Status.LoadBalancer.Ingress; len(ing) == 1 && in6(topology.LoadBalancerPoolV6, ing[0].IP) {
				lb = ing[0].IP
				return ""
			}
			return fmt.Sprintf("status.loadBalancer %+v", s.Status.LoadBalancer)
		})
		ext := topology.NamespaceName(c.name, topology.MemberExternal)
		url := "http://[" + lb + "]/hostname"
		waitDS(t, 20*time.Second, "ext reaching "+url, func() string {
			out, err := topology.Command(ctx, ext, "curl", "-s", "-g", "-m", "2", url).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "web-") {
				return fmt.Sprintf("curl: %v: %q", err, out)
			}
			return ""
		})
		var answers []string
		err := topology.Do(ext, func() error {
			macs, err := announce.QueryNDP(ctx, topology.UplinkName, topology.ExternalAddrV6, netip.MustParseAddr(lb), 300*time.Millisecond)
			for _, m := range macs {
				answers = append(answers, m.String())
			}
			return err
		})
		if err != nil || len(answers) != 1 {
			t.Errorf("Neighbor Solicitation for %s from ext: answers %v (%v), want exactly one node", lb, answers, err)
		}
	})

	t.Run("the NodePort answers on every node's IPv6 address", func(t *testing.T) {
		ext := topology.NamespaceName(c.name, topology.MemberExternal)
		for n := 1; n <= 2; n++ {
			url := fmt.Sprintf("http://[%s]:%d/hostname", topology.NodeAddrV6(n), svc.Spec.Ports[0].NodePort)
			waitDS(t, 20*time.Second, "ext reaching "+url, func() string {
				out, err := topology.Command(ctx, ext, "curl", "-s", "-g", "-m", "2", url).CombinedOutput()
				if err != nil || !strings.HasPrefix(string(out), "web-") {
					return fmt.Sprintf("curl: %v: %q", err, out)
				}
				return ""
			})
		}
	})
}
