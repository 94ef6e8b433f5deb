package apiserver

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"

	"github.com/svcplane/svcplane/pkg/api/scheme"
	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
	"github.com/svcplane/svcplane/pkg/printers"
	"github.com/svcplane/svcplane/pkg/registry/loadbalancerippool"
)

// svcplaneGroup is the svcplane.io group: svcplane's own kinds.
func svcplaneGroup(opts generic.RESTOptionsGetter) (*genericapiserver.APIGroupInfo, error) {
	pools, err := loadbalancerippool.NewStores(jsonStorage{opts}, printers.ForLoadBalancerIPPools())
	if err != nil {
		return nil, err
	}
	info := genericapiserver.NewDefaultAPIGroupInfo(svcplanev1.GroupName, scheme.Scheme, scheme.ParameterCodec, scheme.Codecs)
	info.VersionedResourcesStorageMap[svcplanev1.SchemeGroupVersion.Version] = map[string]rest.Storage(pools.Map())
	return &info, nil
}

// jsonStorage stores svcplane.io objects as JSON in their v1 version. The server's storage codec
// is protobuf for the k8s.io/api kinds, whose protobuf marshalling is generated upstream; our own
// kinds have none (as CRDs, which kube-apiserver also stores as JSON), and a pool is read rarely
// enough that the bytes do not matter.
type jsonStorage struct {
	generic.RESTOptionsGetter
}

func (j jsonStorage) GetRESTOptions(resource schema.GroupResource, example runtime.Object) (generic.RESTOptions, error) {
	opts, err := j.RESTOptionsGetter.GetRESTOptions(resource, example)
	if err != nil {
		return opts, err
	}
	info, ok := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeJSON)
	if !ok {
		return opts, fmt.Errorf("no JSON serializer registered")
	}
	config := *opts.StorageConfig
	config.Codec = scheme.Codecs.CodecForVersions(info.Serializer, scheme.Codecs.UniversalDeserializer(),
		svcplanev1.SchemeGroupVersion, runtime.InternalGroupVersioner)
	config.EncodeVersioner = svcplanev1.SchemeGroupVersion
	opts.StorageConfig = &config
	return opts, nil
}
