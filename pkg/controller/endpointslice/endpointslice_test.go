package endpointslice

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/svcplane/svcplane/pkg/controller"
)

func TestValidateOptions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Options)
		ok     bool
	}{
		{"defaults", func(*Options) {}, true},
		{"slice size 1000 is the API's limit", func(o *Options) { o.MaxEndpointsPerSlice = 1000 }, true},
		{"slice size past the API's limit", func(o *Options) { o.MaxEndpointsPerSlice = 1001 }, false},
		{"no workers", func(o *Options) { o.Workers = 0 }, false},
		{"quiet period longer than the max delay", func(o *Options) { o.BatchBusyQuiet = 3 * o.BatchMaxDelay }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			tc.change(&o)
			if err := o.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func readyPod(name, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name), Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{NodeName: "node-1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

func writes(actions []k8stesting.Action) []string {
	var out []string
	for _, a := range actions {
		if a.GetVerb() == "create" || a.GetVerb() == "update" || a.GetVerb() == "delete" {
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return out
}

func TestSyncPacksSlicesAndThenWritesNothing(t *testing.T) {
	client := fake.NewClientset()
	// The fake does not implement generateName; the API server does.
	generated := 0
	client.PrependReactor("create", "endpointslices", func(action k8stesting.Action) (bool, runtime.Object, error) {
		slice := action.(k8stesting.CreateAction).GetObject().(*discoveryv1.EndpointSlice)
		if slice.Name == "" {
			generated++
			slice.Name = fmt.Sprintf("%s%d", slice.GenerateName, generated)
		}
		return false, nil, nil
	})
	factory := informers.NewSharedInformerFactory(client, 0)
	o := DefaultOptions()
	o.MaxEndpointsPerSlice = 2
	sc, err := build(controller.Context{Client: client, Informers: factory}, o)
	if err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "svc-uid"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, ClusterIP: "10.96.0.5",
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}
	_ = factory.Core().V1().Services().Informer().GetIndexer().Add(svc)
	_ = factory.Core().V1().Nodes().Informer().GetIndexer().Add(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}})
	for i, ip := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		_ = factory.Core().V1().Pods().Informer().GetIndexer().Add(readyPod(string(rune('a'+i)), ip))
	}
	foreign := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-manual", Namespace: "ns",
		Labels: map[string]string{discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "someone-else"}},
		AddressType: discoveryv1.AddressTypeIPv4}
	_ = factory.Discovery().V1().EndpointSlices().Informer().GetIndexer().Add(foreign)

	if err := sc.sync(context.Background(), "ns/web"); err != nil {
		t.Fatal(err)
	}
	if got := writes(client.Actions()); len(got) != 2 || got[0] != "create endpointslices" || got[1] != "create endpointslices" {
		t.Fatalf("first sync wrote %v, want two slice creates (3 endpoints, 2 a slice)", got)
	}
	// Feed our writes back as the informer would, then sync again as a resync does.
	list, _ := client.DiscoveryV1().EndpointSlices("ns").List(context.Background(), metav1.ListOptions{})
	for i := range list.Items {
		if list.Items[i].Labels[discoveryv1.LabelManagedBy] == ControllerName {
			_ = factory.Discovery().V1().EndpointSlices().Informer().GetIndexer().Add(&list.Items[i])
		}
	}
	client.ClearActions()
	if err := sc.sync(context.Background(), "ns/web"); err != nil {
		t.Fatal(err)
	}
	if got := writes(client.Actions()); len(got) != 0 {
		t.Errorf("a resync with nothing changed wrote %v", got)
	}
}
