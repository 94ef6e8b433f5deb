package openapi

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/managedfields"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	"k8s.io/kube-openapi/pkg/builder"
	"k8s.io/kube-openapi/pkg/builder3"
	"k8s.io/kube-openapi/pkg/common"

	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
)

var rootModels = []string{
	corev1.Service{}.OpenAPIModelName(),
	appsv1.Deployment{}.OpenAPIModelName(),
	discoveryv1.EndpointSlice{}.OpenAPIModelName(),
	autoscalingv1.Scale{}.OpenAPIModelName(),
	svcplanev1.LoadBalancerIPPool{}.OpenAPIModelName(),
}

func testNamer(t *testing.T) *openapinamer.DefinitionNamer {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, discoveryv1.AddToScheme, autoscalingv1.AddToScheme,
		svcplanev1.AddToScheme,
	} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return openapinamer.NewDefinitionNamer(s)
}

// TestOpenAPIV2Build builds the /openapi/v2 definitions the way the API
// server does (builder + the apiserver definition namer).
func TestOpenAPIV2Build(t *testing.T) {
	namer := testNamer(t)
	cfg := &common.Config{GetDefinitions: GetOpenAPIDefinitions, GetDefinitionName: namer.GetDefinitionName}
	sw, err := builder.BuildOpenAPIDefinitionsForResources(cfg, rootModels...)
	if err != nil {
		t.Fatalf("building v2 definitions: %v", err)
	}
	for _, name := range rootModels {
		def, ok := sw.Definitions[name]
		if !ok {
			t.Errorf("v2 spec lacks %s", name)
			continue
		}
		if _, ok := def.Extensions["x-kubernetes-group-version-kind"]; !ok {
			t.Errorf("v2 %s lacks x-kubernetes-group-version-kind (added by the namer)", name)
		}
	}
}

// TestServerSideApplyTypeConverter builds the structured-merge-diff type
// converter from the /openapi/v3 schemas, as the generic API server does for
// server-side apply, and checks that list-map keys and the protocol default
// reach it.
func TestServerSideApplyTypeConverter(t *testing.T) {
	namer := testNamer(t)
	cfg := &common.OpenAPIV3Config{GetDefinitions: GetOpenAPIDefinitions, GetDefinitionName: namer.GetDefinitionName}
	schemas, err := builder3.BuildOpenAPIDefinitionsForResources(cfg, rootModels...)
	if err != nil {
		t.Fatalf("building v3 schemas: %v", err)
	}
	tc, err := managedfields.NewTypeConverter(schemas, false)
	if err != nil {
		t.Fatalf("NewTypeConverter: %v", err)
	}

	svc := &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "dns", Port: 53}, // protocol defaults to TCP
			{Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP},
		}},
	}
	if _, err := tc.ObjectToTyped(svc); err != nil {
		t.Fatalf("Service with ports 53/TCP and 53/UDP: %v", err)
	}
	// With the default applied, an explicit 53/TCP duplicates the first port.
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP})
	_, err = tc.ObjectToTyped(svc)
	if err == nil || !strings.Contains(err.Error(), "duplicate entries for key") {
		t.Fatalf("duplicate 53/TCP port: got error %v, want a duplicate-key error", err)
	}

	for _, obj := range []runtime.Object{
		&appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}},
		&discoveryv1.EndpointSlice{TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"}, AddressType: discoveryv1.AddressTypeIPv4},
		&autoscalingv1.Scale{TypeMeta: metav1.TypeMeta{APIVersion: "autoscaling/v1", Kind: "Scale"}},
		&svcplanev1.LoadBalancerIPPool{TypeMeta: metav1.TypeMeta{APIVersion: "svcplane.io/v1", Kind: "LoadBalancerIPPool"},
			Spec: svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.0/24"}}},
	} {
		if _, err := tc.ObjectToTyped(obj); err != nil {
			t.Errorf("%s: %v", obj.GetObjectKind().GroupVersionKind(), err)
		}
	}
}
