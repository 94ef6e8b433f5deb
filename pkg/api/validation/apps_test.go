package validation

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// validDeployment is a Deployment as defaulting leaves it.
func validDeployment() *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(3)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: validTemplate(),
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromString("25%")), MaxSurge: ptr.To(intstr.FromString("25%")),
				},
			},
			RevisionHistoryLimit:    ptr.To(int32(10)),
			ProgressDeadlineSeconds: ptr.To(int32(600)),
		},
	}
}

func validTemplate() corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyAlways,
			DNSPolicy:     corev1.DNSClusterFirst,
			Containers: []corev1.Container{{
				Name: "web", Image: "registry.example/web:1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			}},
		},
	}
}

// The cases cite the upstream function (k8s.io/kubernetes pkg/apis/apps/validation, or
// pkg/apis/core/validation for the template) whose rule they pin.
func TestValidateDeployment(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*appsv1.Deployment)
		want   []wantErr
	}{
		{"valid", func(*appsv1.Deployment) {}, nil},
		{"ValidateDeploymentSpec: replicas must not be negative", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To(int32(-1)) },
			[]wantErr{invalid("spec.replicas", "must be greater than or equal to 0")}},
		{"ValidateDeploymentSpec: selector is required", func(d *appsv1.Deployment) { d.Spec.Selector = nil },
			// As upstream: a nil selector converts to "nothing", which matches no template labels either.
			[]wantErr{required("spec.selector"), invalid("spec.template.metadata.labels", "`selector` does not match template `labels`")}},
		{"ValidateDeploymentSpec: an empty selector is refused", func(d *appsv1.Deployment) { d.Spec.Selector = &metav1.LabelSelector{} },
			[]wantErr{invalid("spec.selector", "empty selector is invalid for deployment")}},
		{"ValidatePodTemplateSpecForReplicaSet: selector must match the template's labels", func(d *appsv1.Deployment) {
			d.Spec.Selector.MatchLabels = map[string]string{"app": "other"}
		}, []wantErr{invalid("spec.template.metadata.labels", `{"app":"web"}: `+"`selector` does not match template `labels`")}},
		{"ValidateLabelSelector: a bad operator", func(d *appsv1.Deployment) {
			d.Spec.Selector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}
		}, []wantErr{invalid("spec.selector.matchExpressions[0].operator", "not a valid selector operator"), invalid("spec.selector", "invalid label selector")}},
		{"ValidateDeploymentSpec: minReadySeconds must not be negative", func(d *appsv1.Deployment) { d.Spec.MinReadySeconds = -1 },
			[]wantErr{invalid("spec.minReadySeconds", "must be greater than or equal to 0")}},
		{"ValidateDeploymentSpec: revisionHistoryLimit must not be negative", func(d *appsv1.Deployment) { d.Spec.RevisionHistoryLimit = ptr.To(int32(-1)) },
			[]wantErr{invalid("spec.revisionHistoryLimit", "must be greater than or equal to 0")}},
		{"ValidateDeploymentSpec: revisionHistoryLimit 0 keeps no history and is fine", func(d *appsv1.Deployment) { d.Spec.RevisionHistoryLimit = ptr.To(int32(0)) }, nil},
		{"ValidateDeploymentSpec: progressDeadlineSeconds must exceed minReadySeconds", func(d *appsv1.Deployment) {
			d.Spec.MinReadySeconds = 600
		}, []wantErr{invalid("spec.progressDeadlineSeconds", "600: must be greater than minReadySeconds")}},
		{"ValidateDeploymentStrategy: unknown type", func(d *appsv1.Deployment) { d.Spec.Strategy.Type = "BlueGreen" },
			[]wantErr{unsupported("spec.strategy", `"Recreate", "RollingUpdate"`)}},
		{"ValidateDeploymentStrategy: rollingUpdate only with RollingUpdate", func(d *appsv1.Deployment) {
			d.Spec.Strategy.Type = appsv1.RecreateDeploymentStrategyType
		}, []wantErr{forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")}},
		{"ValidateDeploymentStrategy: RollingUpdate needs its parameters", func(d *appsv1.Deployment) { d.Spec.Strategy.RollingUpdate = nil },
			[]wantErr{required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil")}},
		{"ValidateRollingUpdateDeployment: not both 0", func(d *appsv1.Deployment) {
			d.Spec.Strategy.RollingUpdate.MaxSurge = ptr.To(intstr.FromInt32(0))
			d.Spec.Strategy.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromString("0%"))
		}, []wantErr{invalid("spec.strategy.rollingUpdate.maxUnavailable", "may not be 0 when `maxSurge` is 0")}},
		{"ValidateRollingUpdateDeployment: maxUnavailable at most 100%", func(d *appsv1.Deployment) {
			d.Spec.Strategy.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromString("101%"))
		}, []wantErr{invalid("spec.strategy.rollingUpdate.maxUnavailable", "must not be greater than 100%")}},
		{"ValidateRollingUpdateDeployment: maxSurge may exceed 100%", func(d *appsv1.Deployment) {
			d.Spec.Strategy.RollingUpdate.MaxSurge = ptr.To(intstr.FromString("200%"))
		}, nil},
		{"ValidatePositiveIntOrPercent: not a percentage", func(d *appsv1.Deployment) {
			d.Spec.Strategy.RollingUpdate.MaxSurge = ptr.To(intstr.FromString("lots"))
		}, []wantErr{invalid("spec.strategy.rollingUpdate.maxSurge", `"lots": a valid percent string must be a numeric string followed by an ending '%'`)}},
		{"ValidatePositiveIntOrPercent: negative", func(d *appsv1.Deployment) {
			d.Spec.Strategy.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromInt32(-1))
		}, []wantErr{invalid("spec.strategy.rollingUpdate.maxUnavailable", "must be greater than or equal to 0")}},
		{"ValidatePodTemplateSpecForReplicaSet: restartPolicy must be Always", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
		}, []wantErr{unsupported("spec.template.spec.restartPolicy", `"OnFailure": supported values: "Always"`)}},
		{"ValidatePodTemplateSpecForReplicaSet: no activeDeadlineSeconds", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.ActiveDeadlineSeconds = ptr.To(int64(30))
		}, []wantErr{forbidden("spec.template.spec.activeDeadlineSeconds", "activeDeadlineSeconds in ReplicaSet is not Supported")}},
		{"ValidatePodSpec: containers are required", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers = nil },
			[]wantErr{required("spec.template.spec.containers")}},
		{"validateContainers: names are unique DNS labels", func(d *appsv1.Deployment) {
			c := d.Spec.Template.Spec.Containers[0]
			c.Ports = nil
			bad := c
			bad.Name = "Web_1"
			d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, c, bad, corev1.Container{Image: "x"})
		}, []wantErr{duplicate("spec.template.spec.containers[1].name", `"web"`),
			invalid("spec.template.spec.containers[2].name", "a lowercase RFC 1123 label"),
			required("spec.template.spec.containers[3].name")}},
		{"validateContainers: a name shared with an init container is a duplicate", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.InitContainers = []corev1.Container{{Name: "web", Image: "init"}}
		}, []wantErr{duplicate("spec.template.spec.containers[0].name")}},
		{"validateContainers: image is required", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "" },
			[]wantErr{required("spec.template.spec.containers[0].image")}},
		{"validateContainerPorts: port rules", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{
				{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
				{Name: "http", ContainerPort: 70000, HostPort: -1, Protocol: "ICMP"},
				{Name: "Not_A_Name", Protocol: ""},
			}
		}, []wantErr{
			duplicate("spec.template.spec.containers[0].ports[1].name"),
			invalid("spec.template.spec.containers[0].ports[1].containerPort", "must be between 1 and 65535, inclusive"),
			invalid("spec.template.spec.containers[0].ports[1].hostPort"),
			unsupported("spec.template.spec.containers[0].ports[1].protocol", `"ICMP": supported values: "SCTP", "TCP", "UDP"`),
			invalid("spec.template.spec.containers[0].ports[2].name"),
			required("spec.template.spec.containers[0].ports[2].containerPort"),
			required("spec.template.spec.containers[0].ports[2].protocol"),
		}},
		{"ValidatePodTemplateSpec: template labels are reported without metadata in the path", func(d *appsv1.Deployment) {
			d.Spec.Template.Labels["bad key!"] = "x"
		}, []wantErr{invalid("spec.template.labels", "name part must consist of")}},
		{"validateDNSPolicy: unknown policy", func(d *appsv1.Deployment) { d.Spec.Template.Spec.DNSPolicy = "Everywhere" },
			[]wantErr{unsupported("spec.template.spec.dnsPolicy")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := validDeployment()
			tc.mutate(d)
			expectErrors(t, ValidateDeployment(d), tc.want)
		})
	}
}

func TestValidateDeploymentUpdate(t *testing.T) {
	old := validDeployment()
	d := validDeployment()
	d.Spec.Replicas = ptr.To(int32(5))
	d.Spec.Template.Spec.Containers[0].Image = "registry.example/web:2"
	expectErrors(t, ValidateDeploymentUpdate(d, old), nil)

	// The strategy's apps/v1 rule: the selector is immutable.
	d.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web", "tier": "front"}}
	d.Spec.Template.Labels["tier"] = "front"
	expectErrors(t, ValidateDeploymentUpdate(d, old), []wantErr{invalid("spec.selector", "field is immutable")})
}

func TestValidateDeploymentStatusUpdate(t *testing.T) {
	old := validDeployment()
	old.Status.CollisionCount = ptr.To(int32(2))
	for _, tc := range []struct {
		name   string
		status appsv1.DeploymentStatus
		want   []wantErr
	}{
		{"valid", appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, ReadyReplicas: 3, AvailableReplicas: 2, CollisionCount: ptr.To(int32(2))}, nil},
		{"ValidateDeploymentStatus: counts not negative", appsv1.DeploymentStatus{ObservedGeneration: -1, UnavailableReplicas: -1, CollisionCount: ptr.To(int32(3))},
			[]wantErr{invalid("status.observedGeneration"), invalid("status.unavailableReplicas")}},
		{"ValidateDeploymentStatus: no more than status.replicas", appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2, CollisionCount: ptr.To(int32(2))},
			[]wantErr{invalid("status.updatedReplicas", "cannot be greater than status.replicas"), invalid("status.readyReplicas"), invalid("status.availableReplicas")}},
		{"ValidateDeploymentStatus: available no more than ready", appsv1.DeploymentStatus{Replicas: 3, ReadyReplicas: 1, AvailableReplicas: 2, CollisionCount: ptr.To(int32(2))},
			[]wantErr{invalid("status.availableReplicas", "cannot be greater than readyReplicas")}},
		{"ValidateDeploymentStatusUpdate: collisionCount never decreases", appsv1.DeploymentStatus{CollisionCount: ptr.To(int32(1))},
			[]wantErr{invalid("status.collisionCount", "cannot be decremented")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := validDeployment()
			d.Status = tc.status
			expectErrors(t, ValidateDeploymentStatusUpdate(d, old), tc.want)
		})
	}
}

func TestValidateReplicaSet(t *testing.T) {
	valid := func() *appsv1.ReplicaSet {
		return &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
			Spec: appsv1.ReplicaSetSpec{
				Replicas: ptr.To(int32(2)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Template: validTemplate(),
			},
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*appsv1.ReplicaSet)
		want   []wantErr
	}{
		{"valid", func(*appsv1.ReplicaSet) {}, nil},
		{"ValidateReplicaSetSpec: replicas and minReadySeconds not negative", func(rs *appsv1.ReplicaSet) {
			rs.Spec.Replicas = ptr.To(int32(-2))
			rs.Spec.MinReadySeconds = -1
		}, []wantErr{invalid("spec.replicas"), invalid("spec.minReadySeconds")}},
		// Upstream says "deployment" for ReplicaSets too; clients match on the text.
		{"ValidateReplicaSetSpec: empty selector", func(rs *appsv1.ReplicaSet) { rs.Spec.Selector = &metav1.LabelSelector{} },
			[]wantErr{invalid("spec.selector", "empty selector is invalid for deployment")}},
		{"ValidatePodTemplateSpecForReplicaSet: selector must match", func(rs *appsv1.ReplicaSet) { rs.Spec.Template.Labels = nil },
			[]wantErr{invalid("spec.template.metadata.labels", "`selector` does not match template `labels`")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := valid()
			tc.mutate(rs)
			expectErrors(t, ValidateReplicaSet(rs), tc.want)
		})
	}
	old, rs := valid(), valid()
	rs.Spec.Selector.MatchLabels = map[string]string{"app": "web", "x": "y"}
	rs.Spec.Template.Labels["x"] = "y"
	expectErrors(t, ValidateReplicaSetUpdate(rs, old), []wantErr{invalid("spec.selector", "field is immutable")})

	rs = valid()
	rs.Status = appsv1.ReplicaSetStatus{Replicas: 1, FullyLabeledReplicas: 2, ReadyReplicas: 1, AvailableReplicas: 1}
	expectErrors(t, ValidateReplicaSetStatusUpdate(rs, old), []wantErr{invalid("status.fullyLabeledReplicas", "cannot be greater than status.replicas")})
}
