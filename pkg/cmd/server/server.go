package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/cmd/cmdutil"
	"github.com/svcplane/svcplane/pkg/controller"
	"github.com/svcplane/svcplane/pkg/controller/deployment"
	"github.com/svcplane/svcplane/pkg/controller/endpoints"
	"github.com/svcplane/svcplane/pkg/controller/endpointslice"
	"github.com/svcplane/svcplane/pkg/controller/endpointslicemirroring"
	"github.com/svcplane/svcplane/pkg/controller/garbagecollector"
	"github.com/svcplane/svcplane/pkg/controller/loadbalancer"
	"github.com/svcplane/svcplane/pkg/controller/namespace"
	"github.com/svcplane/svcplane/pkg/controller/nodeipam"
	"github.com/svcplane/svcplane/pkg/controller/replicaset"
	"github.com/svcplane/svcplane/pkg/controller/scheduler"
	"github.com/svcplane/svcplane/pkg/etcd"
)

// NewCommand returns the `svcplane server` command.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the API server with its embedded etcd and controllers",
		Long: `Run the Kubernetes-compatible API server. On first start it creates, under --data-dir,
an embedded etcd, a CA and serving certificate, an admin token and admin.kubeconfig:

  kubectl --kubeconfig svcplane-data/admin.kubeconfig get namespaces`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.AddFlags(cmd.Flags())
	cmdutil.AddLogFlags(cmd)
	return cmd
}

// Run serves until ctx is cancelled or a component fails.
func (o *Options) Run(ctx context.Context) error {
	start := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := applyMemoryDefaults(); err != nil {
		return err
	}

	endpoint := ""
	if len(o.Etcd.StorageConfig.Transport.ServerList) == 0 {
		store, err := etcd.Start(ctx, o.DataDir+"/etcd")
		if err != nil {
			return err
		}
		defer store.Close()
		endpoint = store.Endpoint
		go func() {
			if err := <-store.Err(); err != nil {
				cancel(fmt.Errorf("embedded etcd failed: %w", err))
			}
		}()
	}

	cfg, err := o.Config(endpoint)
	if err != nil {
		return err
	}
	server, err := cfg.Complete().New()
	if err != nil {
		return fmt.Errorf("creating the API server: %w", err)
	}
	if err := o.WriteAdminKubeconfig(); err != nil {
		return err
	}
	server.AddPostStartHookOrDie("svcplane-ready-log", func(genericapiserver.PostStartHookContext) error {
		klog.InfoS("svcplane server is serving", "address", o.SecureServing.BindAddress, "port", o.SecureServing.BindPort,
			"kubeconfig", o.AdminKubeconfigPath(), "startup", time.Since(start).Round(time.Millisecond))
		return nil
	})
	o.DNS.addHook(server, cancel)
	o.Agent.addHook(ctx, server, cancel)
	err = server.PrepareRun().RunWithContext(ctx)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

func (o *Options) controllers() []controller.Registration {
	// The legacy Endpoints controller shares the EndpointSlice controller's workers and batching.
	eps := endpoints.Options{Workers: o.EndpointSlice.Workers, BatchQuiet: o.EndpointSlice.BatchQuiet,
		BatchBusyQuiet: o.EndpointSlice.BatchBusyQuiet, BatchMaxDelay: o.EndpointSlice.BatchMaxDelay}
	return []controller.Registration{
		{Name: "namespace", New: namespace.New},
		{Name: "garbage-collector", New: garbagecollector.New},
		{Name: "replicaset", New: replicaset.New},
		{Name: "deployment", New: deployment.New},
		{Name: "endpointslice", New: endpointslice.NewWithOptions(o.EndpointSlice)},
		{Name: "endpoints", New: endpoints.NewWithOptions(eps)},
		{Name: "endpointslice-mirroring", New: endpointslicemirroring.New},
		{Name: "node-ipam", New: nodeipam.New},
		{Name: "scheduler", New: scheduler.New},
		{Name: "loadbalancer", New: loadbalancer.New(loadbalancer.Options{DefaultPool: o.LBPools, Identity: o.advertiseIP.String()})},
	}
}
