package endpoints

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	esreconciler "k8s.io/endpointslice"
	esutil "k8s.io/endpointslice/util"
	utilnet "k8s.io/utils/net"
)

// maxAddresses is upstream's cap on one Endpoints object; beyond it consumers are expected to
// read EndpointSlices, and the object says so with the over-capacity annotation.
const maxAddresses = 1000

// desiredSubsets lists the Pods selected by service as Endpoints subsets, one subset per distinct
// set of resolved ports, in a canonical order so that equal content compares equal.
func desiredSubsets(service *corev1.Service, pods []*corev1.Pod) []corev1.EndpointSubset {
	publishNotReady := service.Spec.PublishNotReadyAddresses
	groups := map[string]*corev1.EndpointSubset{}
	add := func(ports []corev1.EndpointPort, address corev1.EndpointAddress, ready bool) {
		key := portsKey(ports)
		subset := groups[key]
		if subset == nil {
			subset = &corev1.EndpointSubset{Ports: ports}
			groups[key] = subset
		}
		if ready {
			subset.Addresses = append(subset.Addresses, address)
		} else {
			subset.NotReadyAddresses = append(subset.NotReadyAddresses, address)
		}
	}
	for _, pod := range pods {
		// Terminating Pods leave Endpoints (unlike slices, which mark them) unless the Service
		// publishes not-ready addresses anyway.
		if !esutil.ShouldPodBeInEndpoints(pod, publishNotReady) {
			continue
		}
		address, ok := podAddress(service, pod)
		if !ok {
			continue
		}
		ready := publishNotReady || esutil.IsPodReady(pod)
		if len(service.Spec.Ports) == 0 {
			// Only a headless Service may have no ports; its DNS records still need addresses.
			if service.Spec.ClusterIP == corev1.ClusterIPNone {
				add(nil, address, ready)
			}
			continue
		}
		// Each port is resolved per Pod: a named targetPort may mean different numbers on
		// different Pods, which then land in different subsets.
		var ports []corev1.EndpointPort
		for i := range service.Spec.Ports {
			sp := &service.Spec.Ports[i]
			number, err := esreconciler.FindPort(pod, sp)
			if err != nil {
				continue
			}
			ports = append(ports, corev1.EndpointPort{Name: sp.Name, Port: int32(number), Protocol: sp.Protocol, AppProtocol: sp.AppProtocol})
		}
		if len(ports) == 0 {
			continue
		}
		slices.SortFunc(ports, comparePorts)
		add(ports, address, ready)
	}
	keys := make([]string, 0, len(groups))
	for key := range groups {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	subsets := make([]corev1.EndpointSubset, 0, len(keys))
	for _, key := range keys {
		subset := groups[key]
		slices.SortFunc(subset.Addresses, compareAddresses)
		slices.SortFunc(subset.NotReadyAddresses, compareAddresses)
		subsets = append(subsets, *subset)
	}
	return subsets
}

// podAddress picks the Pod IP of the Service's primary family, as a ClusterIP only reaches
// backends of its own family.
func podAddress(service *corev1.Service, pod *corev1.Pod) (corev1.EndpointAddress, bool) {
	wantIPv6 := false
	switch {
	case service.Spec.ClusterIP != "" && service.Spec.ClusterIP != corev1.ClusterIPNone:
		wantIPv6 = utilnet.IsIPv6String(service.Spec.ClusterIP)
	case len(service.Spec.IPFamilies) > 0:
		wantIPv6 = service.Spec.IPFamilies[0] == corev1.IPv6Protocol
	default:
		wantIPv6 = utilnet.IsIPv6String(pod.Status.PodIP)
	}
	ips := pod.Status.PodIPs
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: pod.Status.PodIP}}
	}
	for _, ip := range ips {
		if utilnet.IsIPv6String(ip.IP) != wantIPv6 {
			continue
		}
		address := corev1.EndpointAddress{
			IP:        ip.IP,
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		}
		if pod.Spec.NodeName != "" {
			node := pod.Spec.NodeName
			address.NodeName = &node
		}
		if esutil.ShouldSetHostname(pod, service) {
			address.Hostname = pod.Spec.Hostname
		}
		return address, true
	}
	return corev1.EndpointAddress{}, false
}

func portsKey(ports []corev1.EndpointPort) string {
	var b strings.Builder
	for _, p := range ports {
		appProtocol := ""
		if p.AppProtocol != nil {
			appProtocol = *p.AppProtocol
		}
		fmt.Fprintf(&b, "%s/%s/%d/%s,", p.Name, p.Protocol, p.Port, appProtocol)
	}
	return b.String()
}

func comparePorts(a, b corev1.EndpointPort) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
}

func compareAddresses(a, b corev1.EndpointAddress) int {
	var uidA, uidB string
	if a.TargetRef != nil {
		uidA = string(a.TargetRef.UID)
	}
	if b.TargetRef != nil {
		uidB = string(b.TargetRef.UID)
	}
	return cmp.Or(cmp.Compare(a.IP, b.IP), cmp.Compare(uidA, uidB))
}

// truncate keeps at most limit addresses, ready ones first, and reports whether it dropped any.
// Each subset keeps a share proportional to its size, so that every port set stays represented,
// as upstream's Endpoints controller does.
func truncate(subsets []corev1.EndpointSubset, limit int) ([]corev1.EndpointSubset, bool) {
	ready, notReady := 0, 0
	for _, s := range subsets {
		ready += len(s.Addresses)
		notReady += len(s.NotReadyAddresses)
	}
	if ready+notReady <= limit {
		return subsets, false
	}
	if ready > limit {
		shrink(subsets, limit, ready, func(s *corev1.EndpointSubset) *[]corev1.EndpointAddress { return &s.Addresses })
		for i := range subsets {
			subsets[i].NotReadyAddresses = nil
		}
	} else {
		shrink(subsets, limit-ready, notReady, func(s *corev1.EndpointSubset) *[]corev1.EndpointAddress { return &s.NotReadyAddresses })
	}
	// A subset left without addresses would only carry ports nobody serves.
	return slices.DeleteFunc(subsets, func(s corev1.EndpointSubset) bool {
		return len(s.Addresses) == 0 && len(s.NotReadyAddresses) == 0
	}), true
}

// shrink cuts the addresses list picks from each subset to its share of budget out of total.
func shrink(subsets []corev1.EndpointSubset, budget, total int, pick func(*corev1.EndpointSubset) *[]corev1.EndpointAddress) {
	left := budget
	for i := range subsets {
		list := pick(&subsets[i])
		share := min((len(*list)*budget+total-1)/total, left)
		*list = (*list)[:share]
		left -= share
	}
}
