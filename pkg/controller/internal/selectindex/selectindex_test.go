package selectindex

import (
	"slices"
	"sort"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	esutil "k8s.io/endpointslice/util"
)

func TestSelectedAndSelecting(t *testing.T) {
	factory := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
	podInformer := factory.Core().V1().Pods().Informer()
	svcInformer := factory.Core().V1().Services().Informer()
	pods, err := ForPods(podInformer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ForPods(podInformer); err != nil {
		t.Fatalf("a second controller asking for the same index: %v", err)
	}
	services, err := ForServices(svcInformer)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web-1", Labels: map[string]string{"app": "web", "tier": "front"}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web-2", Labels: map[string]string{"app": "web"}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "web-3", Labels: map[string]string{"app": "web"}}},
	} {
		_ = podInformer.GetIndexer().Add(p)
	}
	for _, s := range []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "front"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web", "tier": "front"}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "manual"}},
	} {
		_ = svcInformer.GetIndexer().Add(s)
	}

	names := func(list []*corev1.Pod) []string {
		var out []string
		for _, p := range list {
			out = append(out, p.Name)
		}
		sort.Strings(out)
		return out
	}
	if got, _ := pods.Selected("a", map[string]string{"app": "web"}); len(got) != 2 {
		t.Errorf("app=web in a selected %v, want web-1 and web-2", names(got))
	}
	if got, _ := pods.Selected("a", map[string]string{"app": "web", "tier": "front"}); len(got) != 1 {
		t.Errorf("app=web,tier=front selected %v, want web-1", names(got))
	}
	if got, _ := pods.Selected("a", nil); len(got) != 0 {
		t.Errorf("an empty selector selected %v, want nothing", names(got))
	}

	got, _ := services.ForPodChange(&esutil.PodProjectionKey{Namespace: "a", Labels: labels.Set{"app": "web", "tier": "front"}})
	if want := []string{"a/front", "a/web"}; !slices.Equal(sorted(got.UnsortedList()), want) {
		t.Errorf("Services of web-1 = %v, want %v", sorted(got.UnsortedList()), want)
	}
	// Losing tier=front matters only to the Service that selected on it.
	got, _ = services.ForPodChange(&esutil.PodProjectionKey{Namespace: "a", Labels: labels.Set{"app": "web"},
		OldLabels: labels.Set{"app": "web", "tier": "front"}})
	if want := []string{"a/front"}; !slices.Equal(sorted(got.UnsortedList()), want) {
		t.Errorf("Services to sync after a label change = %v, want %v", sorted(got.UnsortedList()), want)
	}
}

func sorted(s []string) []string { sort.Strings(s); return s }
