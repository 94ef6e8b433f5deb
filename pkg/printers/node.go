package printers

import (
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/registry/rest"
)

const (
	// nodeRoleLabelPrefix marks a role by key: node-role.kubernetes.io/<role>.
	nodeRoleLabelPrefix = "node-role.kubernetes.io/"
	// legacyNodeRoleLabel marks a role by value; upstream still honours it.
	legacyNodeRoleLabel = "kubernetes.io/role"
)

// ForNodes prints core/v1 Nodes and NodeLists: NAME STATUS ROLES AGE VERSION,
// wide INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME.
func ForNodes() rest.TableConvertor {
	info := corev1.NodeSystemInfo{}.SwaggerDoc()
	addresses := corev1.NodeStatus{}.SwaggerDoc()["addresses"]
	return newTableConvertor(
		[]metav1.TableColumnDefinition{
			nameColumn(),
			column("Status", "string", "The status of the node"),
			column("Roles", "string", "The roles of the node"),
			ageColumn(),
			column("Version", "string", info["kubeletVersion"]),
			wide(column("Internal-IP", "string", addresses)),
			wide(column("External-IP", "string", addresses)),
			wide(column("OS-Image", "string", info["osImage"])),
			wide(column("Kernel-Version", "string", info["kernelVersion"])),
			wide(column("Container-Runtime", "string", info["containerRuntimeVersion"])),
		},
		nodeCells,
	)
}

func nodeCells(node *corev1.Node, now time.Time) []any {
	info := node.Status.NodeInfo
	return []any{
		node.Name,
		nodeStatus(node),
		orNone(strings.Join(nodeRoles(node), ",")),
		since(node.CreationTimestamp, now),
		info.KubeletVersion,
		nodeAddress(node, corev1.NodeInternalIP),
		nodeAddress(node, corev1.NodeExternalIP),
		orUnknown(info.OSImage),
		orUnknown(info.KernelVersion),
		orUnknown(info.ContainerRuntimeVersion),
	}
}

// nodeStatus reports only the Ready condition (the last one listed, if
// repeated), then SchedulingDisabled for a cordoned node.
func nodeStatus(node *corev1.Node) string {
	status := "Unknown"
	for _, c := range node.Status.Conditions {
		if c.Type != corev1.NodeReady {
			continue
		}
		if c.Status == corev1.ConditionTrue {
			status = "Ready"
		} else {
			status = "NotReady"
		}
	}
	if node.Spec.Unschedulable {
		status += ",SchedulingDisabled"
	}
	return status
}

func nodeRoles(node *corev1.Node) []string {
	roles := sets.New[string]()
	for key, value := range node.Labels {
		switch {
		case strings.HasPrefix(key, nodeRoleLabelPrefix):
			if role := strings.TrimPrefix(key, nodeRoleLabelPrefix); role != "" {
				roles.Insert(role)
			}
		case key == legacyNodeRoleLabel && value != "":
			roles.Insert(value)
		}
	}
	return sets.List(roles)
}

// nodeAddress returns the first address of the type.
func nodeAddress(node *corev1.Node, typ corev1.NodeAddressType) string {
	for _, a := range node.Status.Addresses {
		if a.Type == typ {
			return a.Address
		}
	}
	return "<none>"
}

func orUnknown(s string) string {
	if s == "" {
		return "<unknown>"
	}
	return s
}

// ForNamespaces prints core/v1 Namespaces and NamespaceLists:
// NAME STATUS AGE.
func ForNamespaces() rest.TableConvertor {
	return newTableConvertor(
		[]metav1.TableColumnDefinition{
			nameColumn(),
			column("Status", "string", "The status of the namespace"),
			ageColumn(),
		},
		func(ns *corev1.Namespace, now time.Time) []any {
			return []any{ns.Name, string(ns.Status.Phase), since(ns.CreationTimestamp, now)}
		},
	)
}
