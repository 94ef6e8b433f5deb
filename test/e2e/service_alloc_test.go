package e2e

// Ranges used here: the default Service CIDR 10.96.0.0/12 (kubernetes Service 10.96.0.1,
// contested static IPs 10.96.0.100-10.96.0.119) and node ports 30000-32767 (contested
// 30010-30029). Ports a test asks for by number lie in the static band (30000-30085), which
// dynamic allocation does not touch while the upper band has room: a port in the upper band
// could already have been handed out at random by an earlier subtest. Allocation keys are read straight from the server's embedded etcd.

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	kptr "k8s.io/utils/ptr"

	"github.com/svcplane/svcplane/test/testserver"
)

func clusterIPService(name, ip string) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if ip != "" {
		svc.Spec.ClusterIP = ip
	}
	return svc
}

func nodePortService(name string, nodePort int32) *corev1.Service {
	svc := clusterIPService(name, "")
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc.Spec.Ports[0].NodePort = nodePort
	return svc
}

// invalidCause returns the field and message of a 422, or fails.
func invalidCause(t *testing.T, err error) (string, string) {
	t.Helper()
	if !apierrors.IsInvalid(err) {
		t.Fatalf("want 422 Invalid, got %v", err)
	}
	causes := err.(apierrors.APIStatus).Status().Details.Causes
	if len(causes) != 1 {
		t.Fatalf("want one cause, got %v", causes)
	}
	return causes[0].Field, causes[0].Message
}

// etcdKeys counts the allocation keys under prefix in the server's embedded etcd.
func etcdKeys(t *testing.T, s *testserver.Server, prefix string) map[string]string {
	t.Helper()
	client, err := clientv3.New(clientv3.Config{
		Endpoints: []string{"unix://" + filepath.Join(s.DataDir, "etcd", "c.sock")}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	resp, err := client.Get(context.Background(), "/registry/svcplane/"+prefix+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

func TestServiceAllocationAsAUserSeesIt(t *testing.T) {
	// Endpoints may not name loopback addresses, so the server advertises a TEST-NET address.
	s := testserver.Start(t, testserver.Options{Args: []string{"--advertise-address", "192.0.2.10"}})
	ctx := context.Background()
	services := s.Client.CoreV1().Services("default")

	t.Run("the kubernetes Service points at the API server", func(t *testing.T) {
		var svc *corev1.Service
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
			var err error
			svc, err = services.Get(ctx, "kubernetes", metav1.GetOptions{})
			return err == nil, nil
		})
		if err != nil {
			t.Fatal("no kubernetes Service")
		}
		if svc.Spec.ClusterIP != "10.96.0.1" || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort.IntValue() != s.Port ||
			svc.Spec.Ports[0].Name != "https" || *svc.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack {
			t.Errorf("kubernetes Service spec = %+v", svc.Spec)
		}
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
			ep, err := s.Client.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
			if err != nil || len(ep.Subsets) != 1 {
				return false, nil
			}
			slice, err := s.Client.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
			if err != nil || len(slice.Endpoints) != 1 {
				return false, nil
			}
			return ep.Subsets[0].Addresses[0].IP == "192.0.2.10" && int(ep.Subsets[0].Ports[0].Port) == s.Port &&
				ep.Labels["endpointslice.kubernetes.io/skip-mirror"] == "true" &&
				slice.Labels["kubernetes.io/service-name"] == "kubernetes" && slice.Endpoints[0].Addresses[0] == "192.0.2.10" &&
				int(*slice.Ports[0].Port) == s.Port, nil
		})
		if err != nil {
			t.Error("the kubernetes Endpoints and EndpointSlice never named 192.0.2.10 and the server's port")
		}
	})

	t.Run("a Service without a clusterIP gets a free one from the upper range", func(t *testing.T) {
		svc, err := services.Create(ctx, clusterIPService("auto", ""), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ip := netip.MustParseAddr(svc.Spec.ClusterIP)
		if !netip.MustParsePrefix("10.96.0.0/12").Contains(ip) || ip.Compare(netip.MustParseAddr("10.96.1.0")) < 0 {
			t.Errorf("clusterIP %s: want one in 10.96.0.0/12 above the static band", ip)
		}
		if len(svc.Spec.ClusterIPs) != 1 || svc.Spec.ClusterIPs[0] != svc.Spec.ClusterIP ||
			len(svc.Spec.IPFamilies) != 1 || svc.Spec.IPFamilies[0] != corev1.IPv4Protocol {
			t.Errorf("clusterIPs %v ipFamilies %v", svc.Spec.ClusterIPs, svc.Spec.IPFamilies)
		}
	})

	t.Run("a requested free IP is granted, a taken one refused", func(t *testing.T) {
		if _, err := services.Create(ctx, clusterIPService("static", "10.96.0.50"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := services.Create(ctx, clusterIPService("static-again", "10.96.0.50"), metav1.CreateOptions{})
		field, msg := invalidCause(t, err)
		if field != "spec.clusterIPs" || !strings.HasSuffix(msg, "failed to allocate IP 10.96.0.50: provided IP is already allocated") {
			t.Errorf("got %s: %s", field, msg)
		}
	})

	t.Run("an IP outside the range is refused with the range", func(t *testing.T) {
		_, err := services.Create(ctx, clusterIPService("outside", "192.168.0.10"), metav1.CreateOptions{})
		field, msg := invalidCause(t, err)
		want := "failed to allocate IP 192.168.0.10: the provided IP (192.168.0.10) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
		if field != "spec.clusterIPs" || !strings.HasSuffix(msg, want) {
			t.Errorf("got %s: %s", field, msg)
		}
		// The network and broadcast addresses are not in the valid range either.
		for _, ip := range []string{"10.96.0.0", "10.111.255.255"} {
			if _, err := services.Create(ctx, clusterIPService("edge", ip), metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
				t.Errorf("clusterIP %s: %v, want 422", ip, err)
			}
		}
	})

	t.Run("a dry run allocates nothing", func(t *testing.T) {
		dry, err := services.Create(ctx, clusterIPService("dry", "10.96.0.60"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil || dry.Spec.ClusterIP != "10.96.0.60" {
			t.Fatalf("dry run: %v %v", dry, err)
		}
		if _, err := services.Create(ctx, clusterIPService("wet", "10.96.0.60"), metav1.CreateOptions{}); err != nil {
			t.Fatalf("the IP a dry run named was taken: %v", err)
		}
	})

	t.Run("NodePort Services get node ports; taken or out-of-range ones are refused", func(t *testing.T) {
		svc, err := services.Create(ctx, nodePortService("np", 0), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		np := svc.Spec.Ports[0].NodePort
		if np < 30000 || np > 32767 {
			t.Fatalf("nodePort %d", np)
		}
		_, err = services.Create(ctx, nodePortService("np-again", np), metav1.CreateOptions{})
		field, msg := invalidCause(t, err)
		if field != "spec.ports[0].nodePort" || !strings.HasSuffix(msg, "provided port is already allocated") {
			t.Errorf("got %s: %s", field, msg)
		}
		_, err = services.Create(ctx, nodePortService("np-outside", 40000), metav1.CreateOptions{})
		field, msg = invalidCause(t, err)
		if field != "spec.ports[0].nodePort" || !strings.HasSuffix(msg, "provided port is not in the valid range. The range of valid ports is 30000-32767") {
			t.Errorf("got %s: %s", field, msg)
		}
	})

	t.Run("LoadBalancers: health-check node port for Local, none without node ports", func(t *testing.T) {
		lb := clusterIPService("lb-local", "")
		lb.Spec.Type = corev1.ServiceTypeLoadBalancer
		lb.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		got, err := services.Create(ctx, lb, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Spec.HealthCheckNodePort < 30000 || got.Spec.Ports[0].NodePort < 30000 || got.Spec.HealthCheckNodePort == got.Spec.Ports[0].NodePort {
			t.Errorf("healthCheckNodePort %d nodePort %d", got.Spec.HealthCheckNodePort, got.Spec.Ports[0].NodePort)
		}
		lb = clusterIPService("lb-no-nodeports", "")
		lb.Spec.Type = corev1.ServiceTypeLoadBalancer
		lb.Spec.AllocateLoadBalancerNodePorts = kptr.To(false)
		if got, err = services.Create(ctx, lb, metav1.CreateOptions{}); err != nil {
			t.Errorf("allocateLoadBalancerNodePorts=false: %v", err)
		} else if got.Spec.Ports[0].NodePort != 0 {
			t.Errorf("allocateLoadBalancerNodePorts=false: nodePort %d, want none", got.Spec.Ports[0].NodePort)
		}
	})

	t.Run("type changes allocate and release as upstream", func(t *testing.T) {
		svc, err := services.Create(ctx, nodePortService("changer", 30050), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ip := svc.Spec.ClusterIP
		// NodePort → ClusterIP releases the node port.
		svc.Spec.Type = corev1.ServiceTypeClusterIP
		if svc, err = services.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if svc.Spec.Ports[0].NodePort != 0 {
			t.Errorf("nodePort %d kept after NodePort → ClusterIP", svc.Spec.Ports[0].NodePort)
		}
		if _, err := services.Create(ctx, nodePortService("port-reuser", 30050), metav1.CreateOptions{}); err != nil {
			t.Errorf("node port 30050 not released: %v", err)
		}
		// ClusterIP → ExternalName releases the IP.
		svc.Spec.Type = corev1.ServiceTypeExternalName
		svc.Spec.ExternalName = "example.com"
		if svc, err = services.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if svc.Spec.ClusterIP != "" || len(svc.Spec.ClusterIPs) != 0 {
			t.Errorf("ExternalName kept clusterIPs %v", svc.Spec.ClusterIPs)
		}
		if _, err := services.Create(ctx, clusterIPService("ip-reuser", ip), metav1.CreateOptions{}); err != nil {
			t.Errorf("IP %s not released: %v", ip, err)
		}
		// ExternalName → ClusterIP allocates a new one.
		svc.Spec.Type = corev1.ServiceTypeClusterIP
		svc.Spec.ExternalName = ""
		if svc, err = services.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == ip {
			t.Errorf("ExternalName → ClusterIP got clusterIP %q", svc.Spec.ClusterIP)
		}
	})

	t.Run("re-applying a manifest without the allocated values keeps them", func(t *testing.T) {
		svc, err := services.Create(ctx, nodePortService("reapply", 0), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		again := nodePortService("reapply", 0)
		again.ResourceVersion = svc.ResourceVersion
		got, err := services.Update(ctx, again, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Spec.ClusterIP != svc.Spec.ClusterIP || got.Spec.Ports[0].NodePort != svc.Spec.Ports[0].NodePort {
			t.Errorf("re-apply changed %s/%d to %s/%d", svc.Spec.ClusterIP, svc.Spec.Ports[0].NodePort, got.Spec.ClusterIP, got.Spec.Ports[0].NodePort)
		}
	})

	t.Run("deleting a Service frees its IP and ports", func(t *testing.T) {
		svc, err := services.Create(ctx, nodePortService("deleted", 30060), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := services.Delete(ctx, "deleted", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		reuse := nodePortService("deleted-reuse", 30060)
		reuse.Spec.ClusterIP = svc.Spec.ClusterIP
		if _, err := services.Create(ctx, reuse, metav1.CreateOptions{}); err != nil {
			t.Errorf("IP and port of a deleted Service not free: %v", err)
		}
	})
}

// TestConcurrentCreatesNeverShareAnIPOrPort creates 2,000 Services from 8 clients; a tenth ask
// for one of 20 contested IPs and another tenth for one of 20 contested node ports. Every IP and
// port ends up with at most one Service, and after deleting them all no allocation is left.
func TestConcurrentCreatesNeverShareAnIPOrPort(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	const total, writers = 2000, 8
	ns := "alloc-race"
	// The server creates the kubernetes Service (10.96.0.1) just after it turns ready; the
	// counts below include its allocation.
	eventually(t, 30*time.Second, "the kubernetes Service exists", func() error {
		_, err := s.Client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		return err
	})
	if _, err := s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	ips := map[string]string{}
	ports := map[int32]string{}
	var created []string
	refused := 0
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Its own client, as 8 separate users would have.
			client := kubernetes.NewForConfigOrDie(s.RestConfig)
			for i := w; i < total; i += writers {
				name := fmt.Sprintf("svc-%04d", i)
				var svc *corev1.Service
				switch i % 10 {
				case 3:
					svc = clusterIPService(name, fmt.Sprintf("10.96.0.%d", 100+(i/10)%20))
				case 7:
					svc = nodePortService(name, int32(30010+(i/10)%20))
				case 5:
					svc = nodePortService(name, 0)
				default:
					svc = clusterIPService(name, "")
				}
				got, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
				mu.Lock()
				if err != nil {
					if apierrors.IsInvalid(err) && (i%10 == 3 || i%10 == 7) && strings.Contains(err.Error(), "is already allocated") {
						refused++
					} else {
						t.Errorf("create %s: %v", name, err)
					}
					mu.Unlock()
					continue
				}
				created = append(created, name)
				if other, dup := ips[got.Spec.ClusterIP]; dup {
					t.Errorf("%s and %s both got %s", other, name, got.Spec.ClusterIP)
				}
				ips[got.Spec.ClusterIP] = name
				for _, p := range got.Spec.Ports {
					if p.NodePort == 0 {
						continue
					}
					if other, dup := ports[p.NodePort]; dup {
						t.Errorf("%s and %s both got node port %d", other, name, p.NodePort)
					}
					ports[p.NodePort] = name
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// 200 Services contest 20 IPs and 200 contest 20 ports: exactly 20 of each win.
	if want := total - 2*(200-20); len(created) != want || refused != 2*(200-20) {
		t.Errorf("%d created, %d refused; want %d and %d", len(created), refused, want, 2*(200-20))
	}
	allocated := etcdKeys(t, s, "serviceips")
	ips["10.96.0.1"] = "kubernetes"
	for ip, name := range ips {
		if allocated["/registry/svcplane/serviceips/"+ip] == "" {
			t.Errorf("%s has %s, which etcd does not record as allocated", name, ip)
		}
	}
	if len(allocated) != len(ips) {
		t.Errorf("%d IP allocations in etcd for %d Services (+ kubernetes)", len(allocated), len(created))
	}

	var dwg sync.WaitGroup
	for w := 0; w < writers; w++ {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			for i := w; i < len(created); i += writers {
				if err := s.Client.CoreV1().Services(ns).Delete(ctx, created[i], metav1.DeleteOptions{}); err != nil {
					t.Errorf("delete %s: %v", created[i], err)
				}
			}
		}()
	}
	dwg.Wait()
	left := etcdKeys(t, s, "serviceips")
	if len(left) != 1 || left["/registry/svcplane/serviceips/10.96.0.1"] == "" {
		t.Errorf("IP allocations left after deleting every Service but kubernetes: %v", left)
	}
	if left := etcdKeys(t, s, "servicenodeports"); len(left) != 0 {
		t.Errorf("node port allocations left after deleting every Service: %v", left)
	}
}

func TestAllocationsSurviveARestart(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	ctx := context.Background()
	services := s.Client.CoreV1().Services("default")
	before := map[string]bool{}
	var kept []*corev1.Service
	for i := 0; i < 20; i++ {
		svc, err := services.Create(ctx, nodePortService(fmt.Sprintf("before-%d", i), 0), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		before[svc.Spec.ClusterIP] = true
		kept = append(kept, svc)
	}
	s.Restart(t)
	services = s.Client.CoreV1().Services("default")
	for _, old := range kept {
		again := nodePortService(old.Name+"-copy", old.Spec.Ports[0].NodePort)
		if _, err := services.Create(ctx, again, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("node port %d of %s was free after a restart: %v", old.Spec.Ports[0].NodePort, old.Name, err)
		}
		again = clusterIPService(old.Name+"-copy", old.Spec.ClusterIP)
		if _, err := services.Create(ctx, again, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("IP %s of %s was free after a restart: %v", old.Spec.ClusterIP, old.Name, err)
		}
	}
	for i := 0; i < 50; i++ {
		svc, err := services.Create(ctx, clusterIPService(fmt.Sprintf("after-%d", i), ""), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if before[svc.Spec.ClusterIP] {
			t.Errorf("%s got %s, which %s already had", svc.Name, svc.Spec.ClusterIP, "a Service from before the restart")
		}
	}
}
