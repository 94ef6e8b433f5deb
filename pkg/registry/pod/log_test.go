package pod

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The rules and messages of upstream's ValidatePodLogOptions.
func TestLogOptionsAreValidatedAsUpstream(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts corev1.PodLogOptions
		want string // "" valid
	}{
		{"nothing", corev1.PodLogOptions{}, ""},
		{"tail 0", corev1.PodLogOptions{TailLines: ptr.To[int64](0)}, ""},
		{"negative tail", corev1.PodLogOptions{TailLines: ptr.To[int64](-1)}, "tailLines: Invalid value: -1: must be greater than or equal to 0"},
		{"limit 0", corev1.PodLogOptions{LimitBytes: ptr.To[int64](0)}, "limitBytes: Invalid value: 0: must be greater than 0"},
		{"since 0", corev1.PodLogOptions{SinceSeconds: ptr.To[int64](0)}, "sinceSeconds: Invalid value: 0: must be greater than 0"},
		{"both since", corev1.PodLogOptions{SinceSeconds: ptr.To[int64](5), SinceTime: &metav1.Time{}}, "at most one of `sinceTime` or `sinceSeconds` may be specified"},
	} {
		errs := validateLogOptions(&tc.opts)
		switch {
		case tc.want == "" && len(errs) > 0:
			t.Errorf("%s: %v, want valid", tc.name, errs)
		case tc.want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, errs, tc.want)
		}
	}
}

func TestTheOnlyContainerIsTheDefaultAndOthersAreNamed(t *testing.T) {
	one := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}}
	two := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}, {Name: "b"}}}}
	if c, err := logContainer(one, ""); c != "a" || err != nil {
		t.Errorf("one container, none named: %q %v", c, err)
	}
	if _, err := logContainer(two, ""); err == nil || !strings.Contains(err.Error(), "a container name must be specified for pod p, choose one of: [a b]") {
		t.Errorf("two containers, none named: %v", err)
	}
	if _, err := logContainer(two, "c"); err == nil || !strings.Contains(err.Error(), "container c is not valid for pod p") {
		t.Errorf("unknown container: %v", err)
	}
}
