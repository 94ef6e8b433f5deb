package printers

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/registry/rest"
)

// ForServices prints core/v1 Services and ServiceLists:
// NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE, wide SELECTOR.
func ForServices() rest.TableConvertor {
	docs := corev1.ServiceSpec{}.SwaggerDoc()
	return newTableConvertor(
		[]metav1.TableColumnDefinition{
			nameColumn(),
			column("Type", "string", docs["type"]),
			column("Cluster-IP", "string", docs["clusterIP"]),
			column("External-IP", "string", docs["externalIPs"]),
			column("Port(s)", "string", docs["ports"]),
			ageColumn(),
			wide(column("Selector", "string", docs["selector"])),
		},
		serviceCells,
	)
}

func serviceCells(svc *corev1.Service, now time.Time) []any {
	// Upstream prints the internal type, whose conversion from v1 fills
	// ClusterIPs from ClusterIP when only the latter is set.
	clusterIP := svc.Spec.ClusterIP
	if len(svc.Spec.ClusterIPs) > 0 {
		clusterIP = svc.Spec.ClusterIPs[0]
	}
	return []any{
		svc.Name,
		string(svc.Spec.Type),
		orNone(clusterIP),
		serviceExternalIP(svc),
		orNone(servicePorts(svc.Spec.Ports)),
		since(svc.CreationTimestamp, now),
		labels.FormatLabels(svc.Spec.Selector),
	}
}

func serviceExternalIP(svc *corev1.Service) string {
	switch svc.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort:
		return orNone(strings.Join(svc.Spec.ExternalIPs, ","))
	case corev1.ServiceTypeLoadBalancer:
		// Load-balancer addresses first, then spec.externalIPs, as upstream.
		addresses := append(loadBalancerAddresses(svc.Status.LoadBalancer), svc.Spec.ExternalIPs...)
		if len(addresses) == 0 {
			return "<pending>"
		}
		return strings.Join(addresses, ",")
	case corev1.ServiceTypeExternalName:
		return svc.Spec.ExternalName
	}
	return "<unknown>"
}

// loadBalancerAddresses lists each ingress point's IP, or its hostname when it
// has no IP, sorted and without duplicates. Upstream clips the list to 16
// characters only for non-wide output, which the server never generates.
func loadBalancerAddresses(status corev1.LoadBalancerStatus) []string {
	addresses := sets.New[string]()
	for _, ingress := range status.Ingress {
		switch {
		case ingress.IP != "":
			addresses.Insert(ingress.IP)
		case ingress.Hostname != "":
			addresses.Insert(ingress.Hostname)
		}
	}
	return sets.List(addresses)
}

// servicePorts renders ports as port/protocol, or port:nodePort/protocol when
// a node port is allocated.
func servicePorts(ports []corev1.ServicePort) string {
	rendered := make([]string, 0, len(ports))
	for _, p := range ports {
		if p.NodePort > 0 {
			rendered = append(rendered, fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol))
		} else {
			rendered = append(rendered, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
		}
	}
	return strings.Join(rendered, ",")
}
