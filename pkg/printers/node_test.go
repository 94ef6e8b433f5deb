package printers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNodeCells(t *testing.T) {
	ready := func(s corev1.ConditionStatus) []corev1.NodeCondition {
		return []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse}, {Type: corev1.NodeReady, Status: s}}
	}
	info := corev1.NodeSystemInfo{KubeletVersion: "v1.37.2", OSImage: "Debian GNU/Linux 13", KernelVersion: "6.12.0", ContainerRuntimeVersion: "containerd://2.1.0"}
	for _, tc := range []struct {
		name string
		node corev1.Node
		want []any
	}{
		{
			name: "ready node with a role",
			node: corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: "node-1", CreationTimestamp: ago(72 * time.Hour), Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}},
				Status: corev1.NodeStatus{Conditions: ready(corev1.ConditionTrue), NodeInfo: info, Addresses: []corev1.NodeAddress{
					{Type: corev1.NodeHostName, Address: "node-1"}, {Type: corev1.NodeInternalIP, Address: "192.168.1.10"}, {Type: corev1.NodeInternalIP, Address: "fd00::10"}, {Type: corev1.NodeExternalIP, Address: "203.0.113.10"},
				}},
			},
			want: []any{"node-1", "Ready", "control-plane", "3d", "v1.37.2", "192.168.1.10", "203.0.113.10", "Debian GNU/Linux 13", "6.12.0", "containerd://2.1.0"},
		},
		{
			name: "not ready node without roles or addresses",
			node: corev1.Node{ObjectMeta: objectMeta("node-2", time.Hour), Status: corev1.NodeStatus{Conditions: ready(corev1.ConditionFalse), NodeInfo: info}},
			want: []any{"node-2", "NotReady", "<none>", "60m", "v1.37.2", "<none>", "<none>", "Debian GNU/Linux 13", "6.12.0", "containerd://2.1.0"},
		},
		{
			name: "node without a Ready condition is Unknown and unreported info is unknown",
			node: corev1.Node{ObjectMeta: objectMeta("node-3", time.Hour)},
			want: []any{"node-3", "Unknown", "<none>", "60m", "", "<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"},
		},
		{
			name: "Ready condition with status Unknown is NotReady",
			node: corev1.Node{ObjectMeta: objectMeta("node-4", time.Hour), Status: corev1.NodeStatus{Conditions: ready(corev1.ConditionUnknown), NodeInfo: info}},
			want: []any{"node-4", "NotReady", "<none>", "60m", "v1.37.2", "<none>", "<none>", "Debian GNU/Linux 13", "6.12.0", "containerd://2.1.0"},
		},
		{
			name: "cordoned node adds SchedulingDisabled",
			node: corev1.Node{ObjectMeta: objectMeta("node-5", time.Hour), Spec: corev1.NodeSpec{Unschedulable: true}, Status: corev1.NodeStatus{Conditions: ready(corev1.ConditionTrue), NodeInfo: info}},
			want: []any{"node-5", "Ready,SchedulingDisabled", "<none>", "60m", "v1.37.2", "<none>", "<none>", "Debian GNU/Linux 13", "6.12.0", "containerd://2.1.0"},
		},
		{
			name: "roles come from role label keys and the legacy role label, sorted and unique",
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-6", CreationTimestamp: ago(time.Hour), Labels: map[string]string{
				"node-role.kubernetes.io/worker":        "",
				"node-role.kubernetes.io/ingress":       "true",
				"node-role.kubernetes.io/":              "",
				"kubernetes.io/role":                    "worker",
				"node.kubernetes.io/instance-type":      "m5.large",
				"node-role.kubernetes.io/control-plane": "",
			}}, Status: corev1.NodeStatus{Conditions: ready(corev1.ConditionTrue), NodeInfo: info}},
			want: []any{"node-6", "Ready", "control-plane,ingress,worker", "60m", "v1.37.2", "<none>", "<none>", "Debian GNU/Linux 13", "6.12.0", "containerd://2.1.0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertCells(t, nodeCells(&tc.node, testNow), tc.want)
		})
	}
}

func TestNamespaceCells(t *testing.T) {
	for _, tc := range []struct {
		name  string
		phase corev1.NamespacePhase
		want  []any
	}{
		{"active namespace shows Active", corev1.NamespaceActive, []any{"default", "Active", "<unknown>"}},
		{"deleted namespace shows Terminating", corev1.NamespaceTerminating, []any{"default", "Terminating", "<unknown>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Status: corev1.NamespaceStatus{Phase: tc.phase}}
			table, err := ForNamespaces().ConvertToTable(t.Context(), ns, nil)
			if err != nil {
				t.Fatal(err)
			}
			assertCells(t, table.Rows[0].Cells, tc.want)
		})
	}
}
