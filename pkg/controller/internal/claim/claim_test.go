package claim

import (
	"context"
	"errors"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

var rsKind = appsv1.SchemeGroupVersion.WithKind("ReplicaSet")

func pod(name string, lbls map[string]string, controller *metav1.OwnerReference) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(name + "-uid"), Labels: lbls}}
	if controller != nil {
		p.OwnerReferences = []metav1.OwnerReference{*controller}
	}
	return p
}

func TestClaim(t *testing.T) {
	owner := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "rs-uid"}}
	ours := ControllerRef(owner, rsKind)
	theirs := ours
	theirs.UID, theirs.Name = "other-uid", "other"
	web := map[string]string{"app": "web"}
	pods := []*corev1.Pod{
		pod("owned", web, &ours),
		pod("orphan", web, nil),
		pod("relabelled", map[string]string{"app": "db"}, &ours),
		pod("someone-elses", web, &theirs),
		pod("stranger", map[string]string{"app": "db"}, nil),
	}
	client := fake.NewSimpleClientset(pods[0], pods[1], pods[2], pods[3], pods[4])
	rechecks := 0
	o := &Owner{
		Object: owner, Kind: rsKind, Selector: labels.SelectorFromSet(web),
		Recheck: func(context.Context) error { rechecks++; return nil },
		Patch: func(ctx context.Context, ns, name string, patch []byte) error {
			_, err := client.CoreV1().Pods(ns).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
			return err
		},
	}
	claimed, err := Claim(context.Background(), o, pods)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range claimed {
		names = append(names, p.Name)
	}
	if len(names) != 2 || names[0] != "owned" || names[1] != "orphan" {
		t.Errorf("claimed %v, want [owned orphan]", names)
	}
	if rechecks != 1 {
		t.Errorf("owner rechecked %d times, want once before adopting", rechecks)
	}
	get := func(name string) *corev1.Pod {
		p, err := client.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if ref := metav1.GetControllerOf(get("orphan")); ref == nil || ref.UID != owner.UID || !*ref.BlockOwnerDeletion {
		t.Errorf("orphan not adopted: %+v", ref)
	}
	if refs := get("relabelled").OwnerReferences; len(refs) != 0 {
		t.Errorf("relabelled pod not released: %+v", refs)
	}
	if ref := metav1.GetControllerOf(get("someone-elses")); ref == nil || ref.UID != "other-uid" {
		t.Errorf("another controller's pod was touched: %+v", ref)
	}

	// An owner that turns out to be gone adopts nothing.
	o = &Owner{Object: owner, Kind: rsKind, Selector: labels.SelectorFromSet(web),
		Recheck: func(context.Context) error { return errors.New("deleted") },
		Patch:   func(context.Context, string, string, []byte) error { t.Error("patched for a stale owner"); return nil }}
	if _, err := Claim(context.Background(), o, []*corev1.Pod{pod("orphan2", web, nil)}); err == nil {
		t.Error("want an error when the owner's recheck fails")
	}
}
