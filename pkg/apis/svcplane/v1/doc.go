// Package v1 is version v1 of the svcplane.io API group: svcplane's own kinds, served by its API
// server beside the Kubernetes ones. Today that is LoadBalancerIPPool, the address ranges the
// loadbalancer controller hands out to `type: LoadBalancer` Services.
//
// The Go types are also the internal version (registered under svcplane.io/__internal by
// pkg/api/scheme), as for the k8s.io/api types we serve.
//
// +k8s:deepcopy-gen=package
// +k8s:openapi-gen=true
// +k8s:openapi-model-package=io.svcplane.v1
// +groupName=svcplane.io
package v1
