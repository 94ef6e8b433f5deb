package apiserver

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/registry/service/allocator"
	"github.com/svcplane/svcplane/pkg/registry/service/kubernetesservice"
)

// ServiceConfig is what Services need beyond their storage: the ranges they allocate from and
// where the kubernetes Service points.
type ServiceConfig struct {
	Allocators *allocator.Set
	// StoragePrefix is the etcd prefix of the API objects (/registry); leases live under it.
	StoragePrefix string
	// Advertise and Port are this server's address for the kubernetes Service's endpoints.
	Advertise netip.Addr
	Port      int
}

// Timings of upstream: repair every 3 minutes; endpoint leases of 15 s renewed every 10 s. A
// leak is freed only after it has looked leaked for a minute, far longer than any create
// takes between allocating and storing its Service.
const (
	repairInterval  = 3 * time.Minute
	repairGrace     = time.Minute
	leaseTTL        = 15 * time.Second
	leaseRenewEvery = 10 * time.Second
)

// addHooks starts the allocators' etcd sync, the repair loop and the kubernetes Service
// reconciler after the server serves, and takes this server out of the endpoints before it stops.
func (c *ServiceConfig) addHooks(s *genericapiserver.GenericAPIServer, loopback *rest.Config) {
	set := c.Allocators
	s.AddPostStartHookOrDie("svcplane-service-allocators", func(hook genericapiserver.PostStartHookContext) error {
		// Service writes wait for this first sync; the hook's context lives as long as the server.
		if err := set.Start(hook); err != nil {
			return fmt.Errorf("loading Service allocations from etcd: %w", err)
		}
		go func() {
			<-hook.Done()
			// Give the pre-shutdown hook's lease removal a chance to finish first.
			time.Sleep(2 * time.Second)
			set.Client().Close()
		}()
		client, err := kubernetes.NewForConfig(loopback)
		if err != nil {
			return err
		}
		broadcaster := record.NewBroadcaster(record.WithContext(hook))
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
		repair := &allocator.Repair{
			Set:    set,
			Events: broadcaster.NewRecorder(clientgoscheme.Scheme, corev1.EventSource{Component: "svcplane-apiserver"}),
			ListServices: func(ctx context.Context) ([]corev1.Service, error) {
				list, err := client.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
				if err != nil {
					return nil, err
				}
				return list.Items, nil
			},
			Interval: repairInterval,
			Grace:    repairGrace,
		}
		go repair.Run(hook)
		return nil
	})

	primary := set.IPs[set.Primary].CIDR()
	reconciler := &kubernetesservice.Reconciler{
		Client:      kubernetes.NewForConfigOrDie(loopback),
		Etcd:        set.Client(),
		LeasePrefix: strings.TrimSuffix(c.StoragePrefix, "/") + "/svcplane/apiserverleases/",
		ServiceIP:   primary.Addr().Next(),
		Advertise:   c.Advertise,
		Port:        c.Port,
		TTL:         leaseTTL,
		Interval:    leaseRenewEvery,
	}
	s.AddPostStartHookOrDie("svcplane-kubernetes-service", func(hook genericapiserver.PostStartHookContext) error {
		go reconciler.Run(hook)
		return nil
	})
	s.AddPreShutdownHookOrDie("svcplane-kubernetes-service-endpoints", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := reconciler.Stop(ctx); err != nil {
			klog.ErrorS(err, "Removing this server from the kubernetes Service's endpoints failed; its lease will expire")
		}
		return nil
	})
}
