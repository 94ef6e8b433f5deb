package validation

// Deployments and ReplicaSets, as upstream's pkg/apis/apps/validation checks them, plus the part
// of pkg/apis/core/validation's pod template rules that a workload's template needs (containers,
// names, images, ports, restart and DNS policy). Volumes, probes, resources and security
// contexts are not checked yet.

import (
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ValidateDeployment checks a new Deployment's spec (upstream ValidateDeploymentSpec).
func ValidateDeployment(d *appsv1.Deployment) field.ErrorList {
	return deploymentSpec(&d.Spec, field.NewPath("spec"))
}

// ValidateDeploymentUpdate checks an updated Deployment: the spec rules again, and, as upstream's
// strategy does for every group version but extensions/v1beta1, an unchanged selector.
func ValidateDeploymentUpdate(d, old *appsv1.Deployment) field.ErrorList {
	errs := deploymentSpec(&d.Spec, field.NewPath("spec"))
	return append(errs, apimachineryvalidation.ValidateImmutableField(d.Spec.Selector, old.Spec.Selector, field.NewPath("spec", "selector"))...)
}

// ValidateDeploymentStatusUpdate checks a write of deployments/status (upstream
// ValidateDeploymentStatusUpdate).
func ValidateDeploymentStatusUpdate(d, old *appsv1.Deployment) field.ErrorList {
	path := field.NewPath("status")
	s := &d.Status
	errs := nonNegative(path, []namedCount{
		{"observedGeneration", s.ObservedGeneration}, {"replicas", int64(s.Replicas)},
		{"updatedReplicas", int64(s.UpdatedReplicas)}, {"readyReplicas", int64(s.ReadyReplicas)},
		{"availableReplicas", int64(s.AvailableReplicas)}, {"unavailableReplicas", int64(s.UnavailableReplicas)},
	})
	if s.TerminatingReplicas != nil {
		errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(*s.TerminatingReplicas), path.Child("terminatingReplicas"))...)
	}
	if s.CollisionCount != nil {
		errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(*s.CollisionCount), path.Child("collisionCount"))...)
	}
	errs = append(errs, notAboveReplicas(path, s.Replicas, []namedCount{
		{"updatedReplicas", int64(s.UpdatedReplicas)}, {"readyReplicas", int64(s.ReadyReplicas)}, {"availableReplicas", int64(s.AvailableReplicas)},
	})...)
	if s.AvailableReplicas > s.ReadyReplicas {
		errs = append(errs, field.Invalid(path.Child("availableReplicas"), s.AvailableReplicas, "cannot be greater than readyReplicas"))
	}
	if collisionCountDecremented(s.CollisionCount, old.Status.CollisionCount) {
		errs = append(errs, field.Invalid(path.Child("collisionCount"), appsDeref(s.CollisionCount), "cannot be decremented"))
	}
	return errs
}

// ValidateReplicaSet checks a new ReplicaSet's spec (upstream ValidateReplicaSetSpec).
func ValidateReplicaSet(rs *appsv1.ReplicaSet) field.ErrorList {
	return replicaSetSpec(&rs.Spec, field.NewPath("spec"))
}

// ValidateReplicaSetUpdate checks an updated ReplicaSet; the selector is immutable in apps/v1.
func ValidateReplicaSetUpdate(rs, old *appsv1.ReplicaSet) field.ErrorList {
	errs := replicaSetSpec(&rs.Spec, field.NewPath("spec"))
	return append(errs, apimachineryvalidation.ValidateImmutableField(rs.Spec.Selector, old.Spec.Selector, field.NewPath("spec", "selector"))...)
}

// ValidateReplicaSetStatusUpdate checks a write of replicasets/status (upstream
// ValidateReplicaSetStatus).
func ValidateReplicaSetStatusUpdate(rs, _ *appsv1.ReplicaSet) field.ErrorList {
	path := field.NewPath("status")
	s := &rs.Status
	errs := nonNegative(path, []namedCount{
		{"replicas", int64(s.Replicas)}, {"fullyLabeledReplicas", int64(s.FullyLabeledReplicas)},
		{"readyReplicas", int64(s.ReadyReplicas)}, {"availableReplicas", int64(s.AvailableReplicas)},
		{"observedGeneration", s.ObservedGeneration},
	})
	if s.TerminatingReplicas != nil {
		errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(*s.TerminatingReplicas), path.Child("terminatingReplicas"))...)
	}
	errs = append(errs, notAboveReplicas(path, s.Replicas, []namedCount{
		{"fullyLabeledReplicas", int64(s.FullyLabeledReplicas)}, {"readyReplicas", int64(s.ReadyReplicas)}, {"availableReplicas", int64(s.AvailableReplicas)},
	})...)
	if s.AvailableReplicas > s.ReadyReplicas {
		errs = append(errs, field.Invalid(path.Child("availableReplicas"), s.AvailableReplicas, "cannot be greater than readyReplicas"))
	}
	return errs
}

func deploymentSpec(spec *appsv1.DeploymentSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(appsDeref(spec.Replicas)), path.Child("replicas"))...)
	errs = append(errs, workloadSelectorAndTemplate(spec.Selector, &spec.Template, path)...)
	errs = append(errs, deploymentStrategy(&spec.Strategy, path.Child("strategy"))...)
	errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(spec.MinReadySeconds), path.Child("minReadySeconds"))...)
	if spec.RevisionHistoryLimit != nil {
		errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(*spec.RevisionHistoryLimit), path.Child("revisionHistoryLimit"))...)
	}
	if spec.ProgressDeadlineSeconds != nil {
		deadline := path.Child("progressDeadlineSeconds")
		errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(*spec.ProgressDeadlineSeconds), deadline)...)
		// A deadline a Pod cannot even become available within could never be met.
		if *spec.ProgressDeadlineSeconds <= spec.MinReadySeconds {
			errs = append(errs, field.Invalid(deadline, spec.ProgressDeadlineSeconds, "must be greater than minReadySeconds"))
		}
	}
	return errs
}

func replicaSetSpec(spec *appsv1.ReplicaSetSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(appsDeref(spec.Replicas)), path.Child("replicas"))...)
	errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(spec.MinReadySeconds), path.Child("minReadySeconds"))...)
	return append(errs, workloadSelectorAndTemplate(spec.Selector, &spec.Template, path)...)
}

// workloadSelectorAndTemplate holds the selector and template rules Deployments and
// ReplicaSets share. An empty selector would claim every Pod in the namespace, so it is refused;
// upstream's message says "deployment" for ReplicaSets too, and so does ours.
func workloadSelectorAndTemplate(selector *metav1.LabelSelector, template *corev1.PodTemplateSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	selPath := path.Child("selector")
	if selector == nil {
		errs = append(errs, field.Required(selPath, ""))
	} else {
		errs = append(errs, metav1validation.ValidateLabelSelector(selector, metav1validation.LabelSelectorValidationOptions{}, selPath)...)
		if len(selector.MatchLabels)+len(selector.MatchExpressions) == 0 {
			errs = append(errs, field.Invalid(selPath, selector, "empty selector is invalid for deployment"))
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return append(errs, field.Invalid(selPath, selector, "invalid label selector"))
	}
	return append(errs, workloadTemplate(template, sel, path.Child("template"))...)
}

// workloadTemplate is upstream ValidatePodTemplateSpecForReplicaSet.
func workloadTemplate(template *corev1.PodTemplateSpec, selector labels.Selector, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if !selector.Empty() && !selector.Matches(labels.Set(template.Labels)) {
		errs = append(errs, field.Invalid(path.Child("metadata", "labels"), template.Labels, "`selector` does not match template `labels`"))
	}
	errs = append(errs, podTemplateSpec(template, path)...)
	// A controller replaces Pods that exit, so their own restart policy must agree.
	if template.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		errs = append(errs, field.NotSupported(path.Child("spec", "restartPolicy"), template.Spec.RestartPolicy, []string{string(corev1.RestartPolicyAlways)}))
	}
	if template.Spec.ActiveDeadlineSeconds != nil {
		errs = append(errs, field.Forbidden(path.Child("spec", "activeDeadlineSeconds"), "activeDeadlineSeconds in ReplicaSet is not Supported"))
	}
	return errs
}

// podTemplateSpec is the part of upstream ValidatePodTemplateSpec svcplane checks. Upstream
// reports template labels and annotations at template.labels and template.annotations (without
// "metadata"); the paths here follow it.
func podTemplateSpec(template *corev1.PodTemplateSpec, path *field.Path) field.ErrorList {
	errs := metav1validation.ValidateLabels(template.Labels, path.Child("labels"))
	errs = append(errs, apimachineryvalidation.ValidateAnnotations(template.Annotations, path.Child("annotations"))...)
	return append(errs, podSpecBasics(&template.Spec, path.Child("spec"))...)
}

var (
	podRestartPolicies    = []string{string(corev1.RestartPolicyAlways), string(corev1.RestartPolicyOnFailure), string(corev1.RestartPolicyNever)}
	podDNSPolicies        = []string{string(corev1.DNSClusterFirstWithHostNet), string(corev1.DNSClusterFirst), string(corev1.DNSDefault), string(corev1.DNSNone)}
	containerPortProtocol = sets.New(corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP)
)

func podSpecBasics(spec *corev1.PodSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	// Container names share one namespace across init and regular containers (upstream
	// validateInitContainers / validateContainers), so a duplicate is reported where it appears.
	names := sets.New[string]()
	for i := range spec.InitContainers {
		errs = append(errs, containerBasics(&spec.InitContainers[i], names, path.Child("initContainers").Index(i))...)
	}
	if len(spec.Containers) == 0 {
		errs = append(errs, field.Required(path.Child("containers"), ""))
	}
	for i := range spec.Containers {
		errs = append(errs, containerBasics(&spec.Containers[i], names, path.Child("containers").Index(i))...)
	}
	switch p := string(spec.RestartPolicy); {
	case p == "":
		errs = append(errs, field.Required(path.Child("restartPolicy"), ""))
	case !sets.New(podRestartPolicies...).Has(p):
		errs = append(errs, field.NotSupported(path.Child("restartPolicy"), spec.RestartPolicy, podRestartPolicies))
	}
	switch p := string(spec.DNSPolicy); {
	case p == "":
		errs = append(errs, field.Required(path.Child("dnsPolicy"), ""))
	case !sets.New(podDNSPolicies...).Has(p):
		errs = append(errs, field.NotSupported(path.Child("dnsPolicy"), spec.DNSPolicy, podDNSPolicies))
	}
	return errs
}

func containerBasics(c *corev1.Container, names sets.Set[string], path *field.Path) field.ErrorList {
	var errs field.ErrorList
	namePath := path.Child("name")
	switch {
	case c.Name == "":
		errs = append(errs, field.Required(namePath, ""))
	default:
		errs = append(errs, dnsLabel(c.Name, namePath)...)
		if names.Has(c.Name) {
			errs = append(errs, field.Duplicate(namePath, c.Name))
		}
		names.Insert(c.Name)
	}
	if c.Image == "" {
		errs = append(errs, field.Required(path.Child("image"), ""))
	} else if c.Image != strings.TrimSpace(c.Image) {
		errs = append(errs, field.Invalid(path.Child("image"), c.Image, "must not have leading or trailing whitespace"))
	}
	return append(errs, containerPorts(c.Ports, path.Child("ports"))...)
}

// containerPorts is upstream validateContainerPorts.
func containerPorts(ports []corev1.ContainerPort, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	names := sets.New[string]()
	for i, port := range ports {
		p := path.Index(i)
		if port.Name != "" {
			if msgs := utilvalidation.IsValidPortName(port.Name); len(msgs) > 0 {
				errs = append(errs, invalidEach(p.Child("name"), port.Name, msgs)...)
			} else if names.Has(port.Name) {
				errs = append(errs, field.Duplicate(p.Child("name"), port.Name))
			} else {
				names.Insert(port.Name)
			}
		}
		if port.ContainerPort == 0 {
			errs = append(errs, field.Required(p.Child("containerPort"), ""))
		} else {
			errs = append(errs, invalidEach(p.Child("containerPort"), port.ContainerPort, utilvalidation.IsValidPortNum(int(port.ContainerPort)))...)
		}
		if port.HostPort != 0 {
			errs = append(errs, invalidEach(p.Child("hostPort"), port.HostPort, utilvalidation.IsValidPortNum(int(port.HostPort)))...)
		}
		if port.Protocol == "" {
			errs = append(errs, field.Required(p.Child("protocol"), ""))
		} else if !containerPortProtocol.Has(port.Protocol) {
			errs = append(errs, field.NotSupported(p.Child("protocol"), port.Protocol, sets.List(containerPortProtocol)))
		}
	}
	return errs
}

// deploymentStrategy is upstream ValidateDeploymentStrategy.
func deploymentStrategy(strategy *appsv1.DeploymentStrategy, path *field.Path) field.ErrorList {
	switch strategy.Type {
	case appsv1.RecreateDeploymentStrategyType:
		if strategy.RollingUpdate != nil {
			return field.ErrorList{field.Forbidden(path.Child("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'")}
		}
	case appsv1.RollingUpdateDeploymentStrategyType:
		if strategy.RollingUpdate == nil {
			return field.ErrorList{field.Required(path.Child("rollingUpdate"), "this should be defaulted and never be nil")}
		}
		return rollingUpdate(strategy.RollingUpdate, path.Child("rollingUpdate"))
	default:
		return field.ErrorList{field.NotSupported(path, strategy,
			[]string{string(appsv1.RecreateDeploymentStrategyType), string(appsv1.RollingUpdateDeploymentStrategyType)})}
	}
	return nil
}

// rollingUpdate is upstream ValidateRollingUpdateDeployment. Only maxUnavailable is capped at
// 100%: surging by more than the replica count is allowed.
func rollingUpdate(ru *appsv1.RollingUpdateDeployment, path *field.Path) field.ErrorList {
	unavailable, surge := appsDeref(ru.MaxUnavailable), appsDeref(ru.MaxSurge)
	errs := intOrPercent(unavailable, path.Child("maxUnavailable"))
	errs = append(errs, intOrPercent(surge, path.Child("maxSurge"))...)
	if intOrPercentValue(unavailable) == 0 && intOrPercentValue(surge) == 0 {
		errs = append(errs, field.Invalid(path.Child("maxUnavailable"), ru.MaxUnavailable, "may not be 0 when `maxSurge` is 0"))
	}
	if v, isPercent := percentValue(unavailable); isPercent && v > 100 {
		errs = append(errs, field.Invalid(path.Child("maxUnavailable"), unavailable, "must not be greater than 100%"))
	}
	return errs
}

// intOrPercent is upstream ValidatePositiveIntOrPercent: a non-negative integer or "N%".
func intOrPercent(v intstr.IntOrString, path *field.Path) field.ErrorList {
	switch v.Type {
	case intstr.String:
		return invalidEach(path, v, utilvalidation.IsValidPercent(v.StrVal))
	case intstr.Int:
		return apimachineryvalidation.ValidateNonnegativeField(int64(v.IntValue()), path)
	}
	return field.ErrorList{field.Invalid(path, v, "must be an integer or percentage (e.g '5%%')")}
}

func percentValue(v intstr.IntOrString) (int, bool) {
	if v.Type != intstr.String || len(utilvalidation.IsValidPercent(v.StrVal)) > 0 {
		return 0, false
	}
	n, _ := strconv.Atoi(strings.TrimSuffix(v.StrVal, "%"))
	return n, true
}

// intOrPercentValue compares "0%" and 0 alike, as the both-zero rule needs.
func intOrPercentValue(v intstr.IntOrString) int {
	if n, ok := percentValue(v); ok {
		return n
	}
	return v.IntValue()
}

// namedCount is one status counter, in the order upstream reports them.
type namedCount struct {
	name  string
	value int64
}

func nonNegative(path *field.Path, counts []namedCount) field.ErrorList {
	var errs field.ErrorList
	for _, c := range counts {
		errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(c.value, path.Child(c.name))...)
	}
	return errs
}

func notAboveReplicas(path *field.Path, replicas int32, counts []namedCount) field.ErrorList {
	var errs field.ErrorList
	for _, c := range counts {
		if c.value > int64(replicas) {
			errs = append(errs, field.Invalid(path.Child(c.name), int32(c.value), "cannot be greater than status.replicas"))
		}
	}
	return errs
}

func collisionCountDecremented(now, before *int32) bool {
	if now == nil && before != nil {
		return true
	}
	return now != nil && before != nil && *now < *before
}

// appsDeref reads an optional field that defaulting has normally filled.
func appsDeref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
