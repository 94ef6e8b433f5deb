package printers

import (
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/registry/rest"
)

// ForDeployments prints apps/v1 Deployments and DeploymentLists:
// NAME READY UP-TO-DATE AVAILABLE AGE, wide CONTAINERS IMAGES SELECTOR.
func ForDeployments() rest.TableConvertor {
	status := appsv1.DeploymentStatus{}.SwaggerDoc()
	// Upstream declares UP-TO-DATE and AVAILABLE as "string" columns yet
	// fills them with integers; kubectl prints either the same way.
	return newTableConvertor(
		[]metav1.TableColumnDefinition{
			nameColumn(),
			column("Ready", "string", "Number of the pod with ready state"),
			column("Up-to-date", "string", status["updatedReplicas"]),
			column("Available", "string", status["availableReplicas"]),
			ageColumn(),
			wide(containersColumn()),
			wide(imagesColumn()),
			wide(column("Selector", "string", appsv1.DeploymentSpec{}.SwaggerDoc()["selector"])),
		},
		deploymentCells,
	)
}

func deploymentCells(d *appsv1.Deployment, now time.Time) []any {
	// Unlike ReplicaSets, upstream renders this selector with
	// LabelSelectorAsSelector, so an empty one prints as "".
	selector := "<invalid>"
	if s, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err == nil {
		selector = s.String()
	}
	names, images := containerCells(d.Spec.Template.Spec.Containers)
	return []any{
		d.Name,
		fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, replicas(d.Spec.Replicas)),
		int64(d.Status.UpdatedReplicas),
		int64(d.Status.AvailableReplicas),
		since(d.CreationTimestamp, now),
		names,
		images,
		selector,
	}
}

// ForReplicaSets prints apps/v1 ReplicaSets and ReplicaSetLists:
// NAME DESIRED CURRENT READY AGE, wide CONTAINERS IMAGES SELECTOR.
func ForReplicaSets() rest.TableConvertor {
	spec := appsv1.ReplicaSetSpec{}.SwaggerDoc()
	status := appsv1.ReplicaSetStatus{}.SwaggerDoc()
	return newTableConvertor(
		[]metav1.TableColumnDefinition{
			nameColumn(),
			column("Desired", "integer", spec["replicas"]),
			column("Current", "integer", status["replicas"]),
			column("Ready", "integer", status["readyReplicas"]),
			ageColumn(),
			wide(containersColumn()),
			wide(imagesColumn()),
			wide(column("Selector", "string", spec["selector"])),
		},
		replicaSetCells,
	)
}

func replicaSetCells(rs *appsv1.ReplicaSet, now time.Time) []any {
	names, images := containerCells(rs.Spec.Template.Spec.Containers)
	return []any{
		rs.Name,
		int64(replicas(rs.Spec.Replicas)),
		int64(rs.Status.Replicas),
		int64(rs.Status.ReadyReplicas),
		since(rs.CreationTimestamp, now),
		names,
		images,
		metav1.FormatLabelSelector(rs.Spec.Selector),
	}
}

// replicas reads spec.replicas as upstream's internal type sees it: the v1
// conversion turns an unset pointer into 0. API defaulting normally sets it to
// 1 when the object is created.
func replicas(r *int32) int32 {
	if r == nil {
		return 0
	}
	return *r
}

func containersColumn() metav1.TableColumnDefinition {
	return column("Containers", "string", "Names of each container in the template.")
}

func imagesColumn() metav1.TableColumnDefinition {
	return column("Images", "string", "Images referenced by each container in the template.")
}

// containerCells lists the template's container names and images, each
// comma-separated in container order.
func containerCells(containers []corev1.Container) (names, images string) {
	n := make([]string, len(containers))
	i := make([]string, len(containers))
	for k, c := range containers {
		n[k], i[k] = c.Name, c.Image
	}
	return strings.Join(n, ","), strings.Join(i, ",")
}
