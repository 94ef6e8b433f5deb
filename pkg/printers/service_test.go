package printers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestServiceCells(t *testing.T) {
	http := []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}
	for _, tc := range []struct {
		name   string
		spec   corev1.ServiceSpec
		status corev1.ServiceStatus
		want   []any
	}{
		{
			name: "ClusterIP without external IPs shows none",
			spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}, Ports: http, Selector: map[string]string{"app": "web"}},
			want: []any{"web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP", "5m", "app=web"},
		},
		{
			name: "ClusterIP with externalIPs lists them",
			spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIPs: []string{"10.96.0.10"}, ExternalIPs: []string{"192.0.2.1", "192.0.2.2"}, Ports: http},
			want: []any{"web", "ClusterIP", "10.96.0.10", "192.0.2.1,192.0.2.2", "80/TCP", "5m", "<none>"},
		},
		{
			name: "dual-stack shows the primary cluster IP",
			spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10", "fd00::10"}, Ports: http},
			want: []any{"web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP", "5m", "<none>"},
		},
		{
			name: "clusterIP alone is used when clusterIPs is unset",
			spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", Ports: http},
			want: []any{"web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP", "5m", "<none>"},
		},
		{
			name: "headless shows None",
			spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "None", ClusterIPs: []string{"None"}},
			want: []any{"web", "ClusterIP", "None", "<none>", "<none>", "5m", "<none>"},
		},
		{
			name: "NodePort shows port:nodePort",
			spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIPs: []string{"10.96.0.10"}, Ports: []corev1.ServicePort{
				{Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP},
				{Port: 53, Protocol: corev1.ProtocolUDP},
			}},
			want: []any{"web", "NodePort", "10.96.0.10", "<none>", "80:30080/TCP,53/UDP", "5m", "<none>"},
		},
		{
			name: "LoadBalancer without ingress shows pending",
			spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIPs: []string{"10.96.0.10"}, Ports: []corev1.ServicePort{{Port: 443, NodePort: 31443, Protocol: corev1.ProtocolTCP}}},
			want: []any{"web", "LoadBalancer", "10.96.0.10", "<pending>", "443:31443/TCP", "5m", "<none>"},
		},
		{
			name: "LoadBalancer shows sorted ingress addresses then externalIPs",
			spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIPs: []string{"10.96.0.10"}, ExternalIPs: []string{"192.0.2.9"}, Ports: http},
			status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
				{IP: "203.0.113.7"}, {Hostname: "lb.example.com"}, {IP: "198.51.100.1", Hostname: "ignored.example.com"}, {IP: "203.0.113.7"},
			}}},
			want: []any{"web", "LoadBalancer", "10.96.0.10", "198.51.100.1,203.0.113.7,lb.example.com,192.0.2.9", "80/TCP", "5m", "<none>"},
		},
		{
			name: "LoadBalancer with only externalIPs is not pending",
			spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIPs: []string{"10.96.0.10"}, ExternalIPs: []string{"192.0.2.9"}, Ports: http},
			want: []any{"web", "LoadBalancer", "10.96.0.10", "192.0.2.9", "80/TCP", "5m", "<none>"},
		},
		{
			name: "LoadBalancer hostname is not clipped in server-side tables",
			spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIPs: []string{"10.96.0.10"}, Ports: http},
			status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
				{Hostname: "a1b2c3-1234567890.eu-west-1.elb.amazonaws.com"},
			}}},
			want: []any{"web", "LoadBalancer", "10.96.0.10", "a1b2c3-1234567890.eu-west-1.elb.amazonaws.com", "80/TCP", "5m", "<none>"},
		},
		{
			name: "ExternalName shows the external name and no cluster IP",
			spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com"},
			want: []any{"web", "ExternalName", "<none>", "db.example.com", "<none>", "5m", "<none>"},
		},
		{
			name: "unset type shows unknown external IP",
			spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.10"}, Ports: http},
			want: []any{"web", "", "10.96.0.10", "<unknown>", "80/TCP", "5m", "<none>"},
		},
		{
			name: "selector is sorted key=value pairs",
			spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIPs: []string{"10.96.0.10"}, Ports: http, Selector: map[string]string{"tier": "front", "app": "web"}},
			want: []any{"web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP", "5m", "app=web,tier=front"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := &corev1.Service{ObjectMeta: objectMeta("web", 5*time.Minute), Spec: tc.spec, Status: tc.status}
			assertCells(t, serviceCells(svc, testNow), tc.want)
		})
	}
}
