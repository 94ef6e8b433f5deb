package endpoints

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func pod(name, ip string, ready bool, ports ...corev1.ContainerPort) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Ports: ports}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}},
	}
}

func service(ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc", Namespace: "ns"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "x"}, Ports: ports}}
}

// render shows subsets as "ports: ready | notReady" lines for compact expectations.
func render(subsets []corev1.EndpointSubset) string {
	var lines []string
	for _, s := range subsets {
		var ports, ready, notReady []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s=%d", p.Name, p.Port))
		}
		for _, a := range s.Addresses {
			ready = append(ready, a.IP)
		}
		for _, a := range s.NotReadyAddresses {
			notReady = append(notReady, a.IP)
		}
		lines = append(lines, fmt.Sprintf("%s: %s | %s", strings.Join(ports, ","), strings.Join(ready, ","), strings.Join(notReady, ",")))
	}
	return strings.Join(lines, "\n")
}

func TestDesiredSubsets(t *testing.T) {
	http := corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}
	web := func(port int32) corev1.ContainerPort {
		return corev1.ContainerPort{Name: "http", ContainerPort: port, Protocol: corev1.ProtocolTCP}
	}
	deleting := pod("gone", "10.0.0.9", true, web(8080))
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	noIP := pod("pending", "", false, web(8080))
	noIP.Status.PodIPs = nil
	headless := service()
	headless.Spec.ClusterIP = corev1.ClusterIPNone
	publish := service(http)
	publish.Spec.PublishNotReadyAddresses = true

	for _, tc := range []struct {
		name    string
		service *corev1.Service
		pods    []*corev1.Pod
		want    string
	}{{
		name:    "a named targetPort resolves per Pod into one subset per number",
		service: service(http),
		pods:    []*corev1.Pod{pod("a", "10.0.0.2", true, web(8080)), pod("b", "10.0.0.1", true, web(8080)), pod("c", "10.0.0.3", true, web(9090))},
		want:    "http=8080: 10.0.0.1,10.0.0.2 | \nhttp=9090: 10.0.0.3 | ",
	}, {
		name:    "not-ready Pods go to notReadyAddresses; a Pod without the port is left out",
		service: service(http),
		pods:    []*corev1.Pod{pod("a", "10.0.0.1", true, web(8080)), pod("b", "10.0.0.2", false, web(8080)), pod("c", "10.0.0.3", true)},
		want:    "http=8080: 10.0.0.1 | 10.0.0.2",
	}, {
		name:    "terminating Pods and Pods without an IP are left out",
		service: service(http),
		pods:    []*corev1.Pod{deleting, noIP, pod("a", "10.0.0.1", true, web(8080))},
		want:    "http=8080: 10.0.0.1 | ",
	}, {
		name:    "publishNotReadyAddresses lists every Pod as ready, terminating ones too",
		service: publish,
		pods:    []*corev1.Pod{deleting, pod("b", "10.0.0.2", false, web(8080))},
		want:    "http=8080: 10.0.0.2,10.0.0.9 | ",
	}, {
		name:    "a headless Service without ports still lists addresses",
		service: headless,
		pods:    []*corev1.Pod{pod("a", "10.0.0.1", true), pod("b", "10.0.0.2", false)},
		want:    ": 10.0.0.1 | 10.0.0.2",
	}, {
		name:    "an IPv6 Service takes the Pod's IPv6 address",
		service: func() *corev1.Service { s := service(http); s.Spec.ClusterIP = "fd00::10"; return s }(),
		pods: []*corev1.Pod{func() *corev1.Pod {
			p := pod("a", "10.0.0.1", true, web(8080))
			p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: "fd00::1"})
			return p
		}()},
		want: "http=8080: fd00::1 | ",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := render(desiredSubsets(tc.service, tc.pods)); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func addresses(prefix string, n int) []corev1.EndpointAddress {
	out := make([]corev1.EndpointAddress, n)
	for i := range out {
		out[i].IP = fmt.Sprintf("%s.%d", prefix, i)
	}
	return out
}

func TestTruncateKeepsReadyFirstAndEverySubset(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		ready, notReady         [2]int // per subset
		wantReady, wantNotReady [2]int
		wantTruncated           bool
	}{
		{"under the limit nothing changes", [2]int{400, 400}, [2]int{100, 100}, [2]int{400, 400}, [2]int{100, 100}, false},
		{"not-ready addresses are dropped first", [2]int{400, 400}, [2]int{300, 100}, [2]int{400, 400}, [2]int{150, 50}, true},
		{"past the limit in ready addresses, each subset keeps its share", [2]int{900, 300}, [2]int{10, 10}, [2]int{750, 250}, [2]int{0, 0}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			subsets := []corev1.EndpointSubset{
				{Addresses: addresses("10.1", tc.ready[0]), NotReadyAddresses: addresses("10.2", tc.notReady[0])},
				{Addresses: addresses("10.3", tc.ready[1]), NotReadyAddresses: addresses("10.4", tc.notReady[1])},
			}
			got, truncated := truncate(subsets, maxAddresses)
			gotReady := [2]int{len(got[0].Addresses), len(got[1].Addresses)}
			gotNotReady := [2]int{len(got[0].NotReadyAddresses), len(got[1].NotReadyAddresses)}
			if truncated != tc.wantTruncated || gotReady != tc.wantReady || gotNotReady != tc.wantNotReady {
				t.Errorf("truncate = ready %v notReady %v truncated %v, want %v %v %v",
					gotReady, gotNotReady, truncated, tc.wantReady, tc.wantNotReady, tc.wantTruncated)
			}
		})
	}
}

func TestUpToDateIgnoresTriggerTime(t *testing.T) {
	svc := service(corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP})
	subsets := desiredSubsets(svc, []*corev1.Pod{pod("a", "10.0.0.1", true)})
	current := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Labels: endpointsLabels(svc),
			Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: "2026-01-01T00:00:00Z"}},
		Subsets: subsets,
	}
	if !upToDate(current, desiredSubsets(svc, []*corev1.Pod{pod("a", "10.0.0.1", true)}), endpointsLabels(svc), false) {
		t.Error("identical content with another trigger time counts as a change")
	}
	if upToDate(current, subsets, endpointsLabels(svc), true) {
		t.Error("a missing over-capacity annotation does not count as a change")
	}
}
