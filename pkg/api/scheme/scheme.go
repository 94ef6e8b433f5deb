// Package scheme registers the Kubernetes types svcplane serves. The published k8s.io/api v1
// types double as the internal (in-memory) types: each is registered a second time under its
// group's __internal version, so the generic registry and etcd storage convert between the two by
// only rewriting the TypeMeta, and no generated internal packages or conversions are needed.
package scheme

import (
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"

	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
)

var (
	// Scheme knows every served type, in its v1 and its __internal version.
	Scheme = runtime.NewScheme()
	// Codecs serializes the served types (JSON, YAML, protobuf) for requests and for etcd.
	Codecs = serializer.NewCodecFactory(Scheme)
	// ParameterCodec decodes query parameters such as ListOptions.
	ParameterCodec = runtime.NewParameterCodec(Scheme)
)

// ServedKinds lists, per group version, the kinds the API server stores; only these get an
// internal twin, so request option types (ListOptions, WatchEvent...) keep their own internal forms.
var ServedKinds = map[schema.GroupVersion][]string{
	corev1.SchemeGroupVersion: {
		"Namespace", "NamespaceList", "Service", "ServiceList", "Endpoints", "EndpointsList",
		"Pod", "PodList", "Node", "NodeList", "Event", "EventList", "Binding",
	},
	discoveryv1.SchemeGroupVersion:   {"EndpointSlice", "EndpointSliceList"},
	appsv1.SchemeGroupVersion:        {"Deployment", "DeploymentList", "ReplicaSet", "ReplicaSetList"},
	autoscalingv1.SchemeGroupVersion: {"Scale"},
	svcplanev1.SchemeGroupVersion:    {"LoadBalancerIPPool", "LoadBalancerIPPoolList"},
}

func init() {
	utilruntime.Must(AddExternalTypes(Scheme))
	for gv, kinds := range ServedKinds {
		internal := schema.GroupVersion{Group: gv.Group, Version: runtime.APIVersionInternal}
		for _, kind := range kinds {
			obj, err := Scheme.New(gv.WithKind(kind))
			utilruntime.Must(err)
			Scheme.AddKnownTypeWithName(internal.WithKind(kind), obj)
		}
	}
	utilruntime.Must(addFieldLabelConversions(Scheme))
	utilruntime.Must(addPodLogOptionsConversion(Scheme))
	addDefaultingFuncs(Scheme)

	// The discovery documents and Status are unversioned, as in every Kubernetes API server.
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
	unversioned := schema.GroupVersion{Group: "", Version: "v1"}
	Scheme.AddUnversionedTypes(unversioned,
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{},
	)
}

// AddExternalTypes registers only the published v1 types. The OpenAPI definition namer reads a
// scheme built with it, so the x-kubernetes-group-version-kind extensions never name __internal.
func AddExternalTypes(s *runtime.Scheme) error {
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, discoveryv1.AddToScheme, autoscalingv1.AddToScheme,
		svcplanev1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return err
		}
	}
	for _, gv := range []schema.GroupVersion{corev1.SchemeGroupVersion, appsv1.SchemeGroupVersion,
		discoveryv1.SchemeGroupVersion, autoscalingv1.SchemeGroupVersion, svcplanev1.SchemeGroupVersion} {
		if err := s.SetVersionPriority(gv); err != nil {
			return err
		}
	}
	return nil
}

// NewExternalScheme returns a scheme with only the published v1 types.
func NewExternalScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(AddExternalTypes(s))
	return s
}
