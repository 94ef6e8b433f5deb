package openapi

import (
	"reflect"
	"sort"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/validation/spec"

	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
)

// definitions returns the generated definitions and every name passed to the
// reference callback while building them.
func definitions(t *testing.T) (map[string]common.OpenAPIDefinition, map[string]bool) {
	t.Helper()
	refs := map[string]bool{}
	defs := GetOpenAPIDefinitions(func(name string) spec.Ref {
		refs[name] = true
		return spec.MustCreateRef("#/definitions/" + common.EscapeJsonPointer(name))
	})
	if len(defs) == 0 {
		t.Fatal("GetOpenAPIDefinitions returned no definitions")
	}
	return defs, refs
}

func mustDef(t *testing.T, defs map[string]common.OpenAPIDefinition, name string) common.OpenAPIDefinition {
	t.Helper()
	def, ok := defs[name]
	if !ok {
		t.Fatalf("definition %q is missing", name)
	}
	return def
}

func mustProp(t *testing.T, s spec.Schema, owner, name string) spec.Schema {
	t.Helper()
	p, ok := s.Properties[name]
	if !ok {
		t.Fatalf("%s has no property %q", owner, name)
	}
	return p
}

func TestServedTypesPresent(t *testing.T) {
	defs, _ := definitions(t)
	for _, tc := range []struct {
		modelName func() string
		want      string
	}{
		{corev1.Service{}.OpenAPIModelName, "io.k8s.api.core.v1.Service"},
		{corev1.ServiceList{}.OpenAPIModelName, "io.k8s.api.core.v1.ServiceList"},
		{corev1.Endpoints{}.OpenAPIModelName, "io.k8s.api.core.v1.Endpoints"},
		{corev1.Namespace{}.OpenAPIModelName, "io.k8s.api.core.v1.Namespace"},
		{corev1.Pod{}.OpenAPIModelName, "io.k8s.api.core.v1.Pod"},
		{appsv1.Deployment{}.OpenAPIModelName, "io.k8s.api.apps.v1.Deployment"},
		{discoveryv1.EndpointSlice{}.OpenAPIModelName, "io.k8s.api.discovery.v1.EndpointSlice"},
		{autoscalingv1.Scale{}.OpenAPIModelName, "io.k8s.api.autoscaling.v1.Scale"},
		{svcplanev1.LoadBalancerIPPool{}.OpenAPIModelName, "io.svcplane.v1.LoadBalancerIPPool"},
		{svcplanev1.LoadBalancerIPPoolList{}.OpenAPIModelName, "io.svcplane.v1.LoadBalancerIPPoolList"},
	} {
		// The key is the type's OpenAPI model name, which is what the API
		// server's namer and runtime.Scheme.ToOpenAPIDefinitionName use.
		if got := tc.modelName(); got != tc.want {
			t.Errorf("OpenAPIModelName() = %q, want %q", got, tc.want)
		}
		mustDef(t, defs, tc.want)
	}
	for _, name := range []string{
		"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
		"io.k8s.apimachinery.pkg.apis.meta.v1.Status",
		"io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
		"io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
		"io.k8s.apimachinery.pkg.runtime.RawExtension",
		"io.k8s.apimachinery.pkg.util.intstr.IntOrString",
		"io.k8s.apimachinery.pkg.api.resource.Quantity",
		"io.k8s.apimachinery.pkg.version.Info",
	} {
		mustDef(t, defs, name)
	}
	// The legacy Go-path key format must not appear.
	if _, ok := defs["k8s.io/api/core/v1.Service"]; ok {
		t.Error(`unexpected Go-path key "k8s.io/api/core/v1.Service"`)
	}
}

func TestAllReferencesResolve(t *testing.T) {
	defs, refs := definitions(t)
	if len(refs) == 0 {
		t.Fatal("no references recorded")
	}
	var missing []string
	for name := range refs {
		if _, ok := defs[name]; !ok {
			missing = append(missing, name+" (Ref)")
		}
	}
	for owner, def := range defs {
		for _, dep := range def.Dependencies {
			if _, ok := defs[dep]; !ok {
				missing = append(missing, dep+" (dependency of "+owner+")")
			}
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("unresolved reference: %s", m)
	}
}

func TestServicePortProtocolDefault(t *testing.T) {
	defs, _ := definitions(t)
	sp := mustDef(t, defs, "io.k8s.api.core.v1.ServicePort").Schema
	protocol := mustProp(t, sp, "ServicePort", "protocol")
	if protocol.Default != "TCP" {
		t.Errorf("ServicePort.protocol default = %#v, want \"TCP\"", protocol.Default)
	}
	for _, req := range sp.Required {
		if req == "protocol" {
			t.Error("ServicePort.protocol must not be required")
		}
	}
	// Same marker on ContainerPort, which Deployment pod templates use.
	cp := mustDef(t, defs, "io.k8s.api.core.v1.ContainerPort").Schema
	if d := mustProp(t, cp, "ContainerPort", "protocol").Default; d != "TCP" {
		t.Errorf("ContainerPort.protocol default = %#v, want \"TCP\"", d)
	}
}

func TestServiceSpecPortsListMap(t *testing.T) {
	defs, refs := definitions(t)
	svc := mustDef(t, defs, "io.k8s.api.core.v1.Service").Schema
	specProp := mustProp(t, svc, "Service", "spec")
	// Service.spec is a reference to ServiceSpec (wrapped in allOf when it
	// carries a default).
	ref := specProp.Ref.String()
	if ref == "" && len(specProp.AllOf) == 1 {
		ref = specProp.AllOf[0].Ref.String()
	}
	if ref != "#/definitions/io.k8s.api.core.v1.ServiceSpec" {
		t.Errorf("Service.spec ref = %q, want ServiceSpec", ref)
	}
	if !refs["io.k8s.api.core.v1.ServiceSpec"] {
		t.Error("ServiceSpec was never referenced")
	}

	ss := mustDef(t, defs, "io.k8s.api.core.v1.ServiceSpec").Schema
	ports := mustProp(t, ss, "ServiceSpec", "ports")
	if got := ports.Extensions["x-kubernetes-list-type"]; got != "map" {
		t.Errorf("ServiceSpec.ports x-kubernetes-list-type = %#v, want \"map\"", got)
	}
	wantKeys := []interface{}{"port", "protocol"}
	if got := ports.Extensions["x-kubernetes-list-map-keys"]; !reflect.DeepEqual(got, wantKeys) {
		t.Errorf("ServiceSpec.ports x-kubernetes-list-map-keys = %#v, want %#v", got, wantKeys)
	}
	if got := ports.Extensions["x-kubernetes-patch-merge-key"]; got != "port" {
		t.Errorf("ServiceSpec.ports x-kubernetes-patch-merge-key = %#v, want \"port\"", got)
	}
	if ports.Items == nil || ports.Items.Schema == nil {
		t.Fatal("ServiceSpec.ports has no item schema")
	}
}

// The group-version-kind extension is added by the API server's definition
// namer at serve time, never by the generator.
func TestNoGVKExtensionInGeneratedDefinitions(t *testing.T) {
	defs, _ := definitions(t)
	for name, def := range defs {
		if _, ok := def.Schema.Extensions["x-kubernetes-group-version-kind"]; ok {
			t.Errorf("%s unexpectedly carries x-kubernetes-group-version-kind", name)
		}
	}
}
