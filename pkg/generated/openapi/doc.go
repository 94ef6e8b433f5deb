// Package openapi holds the generated OpenAPI definitions of every API type
// svcplane serves (core/v1, apps/v1, discovery/v1, autoscaling/v1 Scale, and
// our own svcplane.io/v1 from pkg/apis/svcplane/v1) and of
// the apimachinery types they reference (meta/v1, runtime, intstr, resource,
// version).
//
// GetOpenAPIDefinitions (in zz_generated.openapi.go) is the
// common.GetOpenAPIDefinitions function handed to the generic API server's
// OpenAPI (v2) and OpenAPIV3 configs. The server builds /openapi/v2 and
// /openapi/v3 from it, and server-side apply builds its structured-merge-diff
// type converter from it, so the schemas carry the upstream markers: defaults
// (e.g. ServicePort.protocol defaults to "TCP"), list types and list-map keys
// (e.g. Service.spec.ports is a map list keyed by port and protocol), enums.
//
// Definition keys are the OpenAPI model names of the types, as returned by
// their OpenAPIModelName methods, e.g. "io.k8s.api.core.v1.Service" (not the
// Go path "k8s.io/api/core/v1.Service"). They are the same names the API
// server's definition namer (k8s.io/apiserver/pkg/endpoints/openapi) and
// runtime.Scheme.ToOpenAPIDefinitionName use. The
// x-kubernetes-group-version-kind extension is not in these definitions; the
// server's definition namer adds it from the scheme when it builds the spec.
//
// Do not edit zz_generated.openapi.go by hand. To regenerate it, e.g. after
// bumping k8s.io/api or k8s.io/kube-openapi, run from the repository root:
//
//	bash hack/update-openapi.sh
//
// The script runs k8s.io/kube-openapi/cmd/openapi-gen at the version pinned
// in go.mod. API rule violations inherited from upstream types are recorded in
// hack/openapi-api-rule-violations.list rather than failing the run. To serve
// a type from a further package, add that package (and any package its types
// reference) to INPUT_PKGS in the script; TestAllReferencesResolve fails if a
// referenced package is missing.
package openapi
