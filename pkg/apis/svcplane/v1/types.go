package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Names shared by the API server, the loadbalancer controller and users' manifests.
const (
	// LoadBalancerClass is the spec.loadBalancerClass svcplane's controller implements. Services
	// without a class are ours too (we are the cluster's default implementation); Services of
	// any other class are left to whoever implements it.
	LoadBalancerClass = "svcplane.io/lb"
	// AnnotationLoadBalancerIPs requests addresses: a comma-separated list, at most one per IP
	// family. It replaces the deprecated spec.loadBalancerIP, which is honoured when it is absent.
	AnnotationLoadBalancerIPs = "svcplane.io/load-balancer-ips"
	// AnnotationAllowSharedIP opts a Service into sharing its address with other Services that
	// carry the same value, as long as their ports do not clash.
	AnnotationAllowSharedIP = "svcplane.io/allow-shared-ip"
	// DefaultPoolName is the pool `svcplane server --lb-pool` keeps.
	DefaultPoolName = "default"
)

// LoadBalancerIPPool is a set of addresses the loadbalancer controller may assign to
// `type: LoadBalancer` Services, optionally only to Services matching its selectors.
//
// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type LoadBalancerIPPool struct {
	metav1.TypeMeta `json:",inline"`
	// Standard object's metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec says which addresses the pool holds and which Services may use them.
	Spec LoadBalancerIPPoolSpec `json:"spec"`
	// Status counts the pool's assigned and available addresses; the controller writes it.
	// +optional
	Status LoadBalancerIPPoolStatus `json:"status,omitempty"`
}

// LoadBalancerIPPoolSpec is the desired content of a pool.
type LoadBalancerIPPoolSpec struct {
	// Addresses are the pool's addresses: CIDRs ("10.251.0.0/24", "fd00:251::/120") or inclusive
	// ranges ("10.251.0.10-10.251.0.20"), IPv4 or IPv6. They may not overlap each other or the
	// addresses of another pool.
	// +listType=atomic
	Addresses []string `json:"addresses"`
	// ServiceSelector, when set, limits the pool to Services whose labels match it.
	// +optional
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`
	// NamespaceSelector, when set, limits the pool to Services in namespaces whose labels match it.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// AvoidBuggyIPs skips IPv4 addresses ending in .0 or .255, which some old clients and
	// middleboxes mistake for network or broadcast addresses.
	// +optional
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`
	// AutoAssign, when false, gives the pool's addresses only to Services that request one of
	// them (annotation svcplane.io/load-balancer-ips or spec.loadBalancerIP). Unset means true.
	// +optional
	AutoAssign *bool `json:"autoAssign,omitempty"`
}

// LoadBalancerIPPoolStatus is what the controller observed of a pool.
type LoadBalancerIPPoolStatus struct {
	// Assigned is the number of the pool's addresses held by at least one Service.
	// +optional
	Assigned int64 `json:"assigned"`
	// Available is the number of the pool's addresses free to assign (saturating at the largest
	// int64 for huge IPv6 pools).
	// +optional
	Available int64 `json:"available"`
	// ObservedGeneration is the pool generation the counts are for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// LoadBalancerIPPoolList is a list of pools.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type LoadBalancerIPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	// Standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// Items are the pools.
	Items []LoadBalancerIPPool `json:"items"`
}
