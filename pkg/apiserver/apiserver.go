// Package apiserver assembles the svcplane API server: it installs the storage of every served
// resource into a k8s.io/apiserver GenericAPIServer and adds the start-up work a cluster needs
// (the system namespaces, the built-in controllers). Config → Complete → New, as in
// k8s.io/sample-apiserver; the options that fill Config live in pkg/cmd/server.
package apiserver

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/admission/namespacelifecycle"
	"github.com/svcplane/svcplane/pkg/api/scheme"
	"github.com/svcplane/svcplane/pkg/controller"
	"github.com/svcplane/svcplane/pkg/printers"
	"github.com/svcplane/svcplane/pkg/registry/base"
	"github.com/svcplane/svcplane/pkg/registry/deployment"
	"github.com/svcplane/svcplane/pkg/registry/endpoints"
	"github.com/svcplane/svcplane/pkg/registry/endpointslice"
	"github.com/svcplane/svcplane/pkg/registry/event"
	"github.com/svcplane/svcplane/pkg/registry/namespace"
	"github.com/svcplane/svcplane/pkg/registry/node"
	"github.com/svcplane/svcplane/pkg/registry/pod"
	"github.com/svcplane/svcplane/pkg/registry/replicaset"
	"github.com/svcplane/svcplane/pkg/registry/service"
	"github.com/svcplane/svcplane/pkg/registry/service/allocator"
)

// Config is everything New needs.
type Config struct {
	Generic *genericapiserver.Config
	// Informers share one loopback client; the generic server starts them after it serves. When
	// controllers are configured, New registers for the kinds they watch informers that instead
	// read this server's watch caches in-process (sharedinformers.go), and gives them metadata
	// informers over the same stores (metadatainformers.go).
	Informers informers.SharedInformerFactory
	// Controllers run in the server process after start-up.
	Controllers []controller.Registration
	// Services configures Service allocation and the kubernetes Service; nil disables both.
	Services *ServiceConfig
	// KubeletTransport reaches node agents for pods/log (see pod.LogREST); nil leaves logs
	// unavailable.
	KubeletTransport http.RoundTripper
}

type completedConfig struct {
	generic     genericapiserver.CompletedConfig
	informers   informers.SharedInformerFactory
	controllers []controller.Registration
	services    *ServiceConfig
	kubelet     http.RoundTripper
}

// CompletedConfig is a Config whose derived fields are filled in.
type CompletedConfig struct {
	*completedConfig
}

// Complete fills in the fields derived from others.
func (c *Config) Complete() CompletedConfig {
	return CompletedConfig{&completedConfig{
		generic:     c.Generic.Complete(c.Informers),
		informers:   c.Informers,
		controllers: c.Controllers,
		services:    c.Services,
		kubelet:     c.KubeletTransport,
	}}
}

// Server is the assembled API server, and the way for components run in its process to read its
// storage without a round trip through HTTP.
type Server struct {
	*genericapiserver.GenericAPIServer
	stores map[schema.GroupVersionResource]rest.Storage
}

// ListerWatcher returns a client-go ListerWatcher that lists and watches resource in this
// process, straight from its registry store's watch cache. Its objects are the cache's own (see
// sharedinformers.go): whoever takes one must never change it in place.
func (s *Server) ListerWatcher(resource schema.GroupVersionResource) (cache.ListerWatcher, error) {
	store, ok := s.stores[resource].(readableStore)
	if !ok {
		return nil, fmt.Errorf("the server stores no %s", resource)
	}
	return &storageListerWatcher{store: store}, nil
}

// New returns the server with every resource installed; the caller runs it.
func (c CompletedConfig) New() (*Server, error) {
	s, err := c.generic.New("svcplane-apiserver", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, err
	}
	stores, err := installAPIs(s, c.generic.RESTOptionsGetter, c.services, c.kubelet)
	if err != nil {
		return nil, err
	}
	if c.informers != nil && len(c.controllers) > 0 {
		shareWatchCaches(c.informers, stores)
	}
	loopback := c.generic.LoopbackClientConfig
	if c.services != nil {
		c.services.addHooks(s, loopback)
	}
	s.AddPostStartHookOrDie("svcplane-system-namespaces", func(hook genericapiserver.PostStartHookContext) error {
		client, err := kubernetes.NewForConfig(loopback)
		if err != nil {
			return err
		}
		return ensureSystemNamespaces(hook, client)
	})
	if len(c.controllers) > 0 {
		controllers, factory := c.controllers, c.informers
		s.AddPostStartHookOrDie("svcplane-controllers", func(hook genericapiserver.PostStartHookContext) error {
			client, err := kubernetes.NewForConfig(loopback)
			if err != nil {
				return err
			}
			metadataClient, err := metadata.NewForConfig(loopback)
			if err != nil {
				return err
			}
			metadataFactory := newStoreMetadataInformers(stores, metadatainformer.NewSharedInformerFactory(metadataClient, 0))
			var loops []func(context.Context)
			for _, ctrl := range controllers {
				run, err := ctrl.New(controller.Context{Config: loopback, Client: client, Informers: factory, MetadataInformers: metadataFactory})
				if err != nil {
					return fmt.Errorf("creating the %s controller: %w", ctrl.Name, err)
				}
				loops = append(loops, run)
			}
			// Start the informers the controllers registered before their loops read them.
			factory.Start(hook.Done())
			metadataFactory.Start(hook.Done())
			for i, run := range loops {
				klog.V(2).InfoS("Starting controller", "name", controllers[i].Name)
				go run(hook)
			}
			return nil
		})
	}
	return &Server{GenericAPIServer: s, stores: stores}, nil
}

// installAPIs installs the core group at /api and the named groups (apps, discovery.k8s.io,
// svcplane.io) at /apis, and returns the main store of each resource.
func installAPIs(s *genericapiserver.GenericAPIServer, opts generic.RESTOptionsGetter, services *ServiceConfig, kubelet http.RoundTripper) (map[schema.GroupVersionResource]rest.Storage, error) {
	var allocators *allocator.Set
	if services != nil {
		allocators = services.Allocators
	}
	core, err := service.NewStores(opts, withTable(service.Definition(), printers.ForServices()), allocators)
	if err != nil {
		return nil, err
	}
	for _, d := range []base.Definition{
		withTable(endpoints.Definition(), printers.ForEndpoints()),
		withTable(pod.Definition(), printers.ForPods()),
		withTable(node.Definition(), printers.ForNodes()),
		withTable(event.Definition(), printers.ForEvents()),
	} {
		stores, err := base.NewStores(opts, d)
		if err != nil {
			return nil, err
		}
		maps.Copy(core, stores.Map())
	}
	core["pods/log"] = &pod.LogREST{Pods: core["pods"].(rest.Getter), Nodes: core["nodes"].(rest.Getter), Transport: kubelet}
	namespaces, err := namespace.NewREST(opts, printers.ForNamespaces())
	if err != nil {
		return nil, err
	}
	maps.Copy(core, namespaces)
	coreGroup := genericapiserver.NewDefaultAPIGroupInfo(corev1.GroupName, scheme.Scheme, scheme.ParameterCodec, scheme.Codecs)
	coreGroup.VersionedResourcesStorageMap[corev1.SchemeGroupVersion.Version] = core
	if err := s.InstallLegacyAPIGroup(genericapiserver.DefaultLegacyAPIPrefix, &coreGroup); err != nil {
		return nil, fmt.Errorf("installing the core API group: %w", err)
	}

	apps, err := groupInfo(opts, appsv1.GroupName,
		withTable(deployment.Definition(), printers.ForDeployments()),
		withTable(replicaset.Definition(), printers.ForReplicaSets()))
	if err != nil {
		return nil, err
	}
	discovery, err := groupInfo(opts, discoveryv1.GroupName,
		withTable(endpointslice.Definition(), printers.ForEndpointSlices()))
	if err != nil {
		return nil, err
	}
	svcplane, err := svcplaneGroup(opts)
	if err != nil {
		return nil, err
	}
	if err := s.InstallAPIGroups(apps, discovery, svcplane); err != nil {
		return nil, fmt.Errorf("installing the API groups: %w", err)
	}
	stores := map[schema.GroupVersionResource]rest.Storage{}
	for _, group := range []*genericapiserver.APIGroupInfo{&coreGroup, apps, discovery, svcplane} {
		for version, versioned := range group.VersionedResourcesStorageMap {
			for resource, store := range versioned {
				// Subresources (status, scale, binding...) are reached through their resource.
				if !strings.Contains(resource, "/") {
					stores[schema.GroupVersionResource{Group: group.PrioritizedVersions[0].Group, Version: version, Resource: resource}] = store
				}
			}
		}
	}
	return stores, nil
}

func withTable(d base.Definition, table rest.TableConvertor) base.Definition {
	d.Table = table
	return d
}

func groupInfo(opts generic.RESTOptionsGetter, group string, defs ...base.Definition) (*genericapiserver.APIGroupInfo, error) {
	storage := map[string]rest.Storage{}
	for _, d := range defs {
		stores, err := base.NewStores(opts, d)
		if err != nil {
			return nil, err
		}
		maps.Copy(storage, stores.Map())
	}
	info := genericapiserver.NewDefaultAPIGroupInfo(group, scheme.Scheme, scheme.ParameterCodec, scheme.Codecs)
	info.VersionedResourcesStorageMap["v1"] = storage
	return &info, nil
}

// ensureSystemNamespaces creates default, kube-system and kube-public, retrying until the server
// answers; a server that cannot create them does not become ready.
func ensureSystemNamespaces(ctx context.Context, client kubernetes.Interface) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, name := range namespacelifecycle.Immortal {
			_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				klog.V(2).InfoS("Creating system namespace failed; retrying", "namespace", name, "err", err)
				return false, nil
			}
		}
		return true, nil
	})
}
