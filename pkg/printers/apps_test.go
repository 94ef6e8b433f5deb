package printers

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func podTemplate(containers ...corev1.Container) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: containers}}
}

func int32Ptr(i int32) *int32 { return &i }

var (
	appContainer   = corev1.Container{Name: "app", Image: "registry.example/app:1.2"}
	proxyContainer = corev1.Container{Name: "proxy", Image: "envoy:v1.34"}
	webSelector    = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
)

func TestDeploymentCells(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec appsv1.DeploymentSpec
		// READY UP-TO-DATE AVAILABLE from this status.
		status appsv1.DeploymentStatus
		want   []any
	}{
		{
			name:   "ready is ready over desired replicas",
			spec:   appsv1.DeploymentSpec{Replicas: int32Ptr(3), Selector: webSelector, Template: podTemplate(appContainer, proxyContainer)},
			status: appsv1.DeploymentStatus{Replicas: 3, ReadyReplicas: 2, UpdatedReplicas: 3, AvailableReplicas: 2},
			want:   []any{"web", "2/3", int64(3), int64(2), "15m", "app,proxy", "registry.example/app:1.2,envoy:v1.34", "app=web"},
		},
		{
			name: "selector with expressions renders as a label query",
			spec: appsv1.DeploymentSpec{Replicas: int32Ptr(1), Template: podTemplate(appContainer), Selector: &metav1.LabelSelector{
				MatchLabels:      map[string]string{"app": "web"},
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"front", "edge"}}},
			}},
			want: []any{"web", "0/1", int64(0), int64(0), "15m", "app", "registry.example/app:1.2", "app=web,tier in (edge,front)"},
		},
		{
			name: "missing selector prints empty",
			spec: appsv1.DeploymentSpec{Replicas: int32Ptr(0), Template: podTemplate(appContainer)},
			want: []any{"web", "0/0", int64(0), int64(0), "15m", "app", "registry.example/app:1.2", ""},
		},
		{
			name: "invalid selector prints invalid",
			spec: appsv1.DeploymentSpec{Replicas: int32Ptr(1), Template: podTemplate(appContainer), Selector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: "Near"}},
			}},
			want: []any{"web", "0/1", int64(0), int64(0), "15m", "app", "registry.example/app:1.2", "<invalid>"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &appsv1.Deployment{ObjectMeta: objectMeta("web", 15*time.Minute), Spec: tc.spec, Status: tc.status}
			assertCells(t, deploymentCells(d, testNow), tc.want)
		})
	}
}

func TestReplicaSetCells(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spec   appsv1.ReplicaSetSpec
		status appsv1.ReplicaSetStatus
		want   []any
	}{
		{
			name:   "desired, current and ready are integers",
			spec:   appsv1.ReplicaSetSpec{Replicas: int32Ptr(3), Selector: webSelector, Template: podTemplate(appContainer, proxyContainer)},
			status: appsv1.ReplicaSetStatus{Replicas: 3, ReadyReplicas: 1},
			want:   []any{"web-5d8f", int64(3), int64(3), int64(1), "15m", "app,proxy", "registry.example/app:1.2,envoy:v1.34", "app=web"},
		},
		{
			name: "empty selector prints none",
			spec: appsv1.ReplicaSetSpec{Replicas: int32Ptr(0), Selector: &metav1.LabelSelector{}},
			want: []any{"web-5d8f", int64(0), int64(0), int64(0), "15m", "", "", "<none>"},
		},
		{
			name: "unset replicas print as zero",
			spec: appsv1.ReplicaSetSpec{Selector: webSelector},
			want: []any{"web-5d8f", int64(0), int64(0), int64(0), "15m", "", "", "app=web"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := &appsv1.ReplicaSet{ObjectMeta: objectMeta("web-5d8f", 15*time.Minute), Spec: tc.spec, Status: tc.status}
			assertCells(t, replicaSetCells(rs, testNow), tc.want)
		})
	}
}
