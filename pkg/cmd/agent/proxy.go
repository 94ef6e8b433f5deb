package agent

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"

	"github.com/svcplane/svcplane/pkg/proxy/app"
)

func (o *Options) addProxyFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.ProxyMode, "proxy-mode", o.ProxyMode, "Service proxy run by the agent: nftables, userspace, or none (run `svcplane proxy` separately, or no proxy).")
	fs.StringVar(&o.ClusterCIDR, "cluster-cidr", o.ClusterCIDR, "Pod address range of the cluster: the proxy masquerades Service traffic from outside it.")
	fs.StringSliceVar(&o.ServiceCIDRs, "service-cluster-ip-range", o.ServiceCIDRs, "ClusterIP ranges, as the server's --service-cluster-ip-range (the userspace mode routes them locally).")
	fs.StringVar(&o.Scheduler, "scheduler", o.Scheduler, "Userspace proxy mode: default scheduler (rr, wrr, lc, wlc, sed, nq, dh, sh, random).")
}

// runProxy runs the Service proxy in the agent's process until ctx ends; it returns at once
// with --proxy-mode=none, and early with an error naming what is missing when the proxy
// cannot start (which stops the agent: a node without a working proxy must not look ready).
func (o *Options) runProxy(ctx context.Context, client kubernetes.Interface) error {
	if o.ProxyMode == app.ModeNone {
		<-ctx.Done()
		return nil
	}
	cidr, err := netip.ParsePrefix(o.ClusterCIDR)
	if err != nil {
		return fmt.Errorf("--cluster-cidr %q is not a CIDR", o.ClusterCIDR)
	}
	var serviceCIDRs []netip.Prefix
	for _, s := range o.ServiceCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("--service-cluster-ip-range %q is not a CIDR", s)
		}
		serviceCIDRs = append(serviceCIDRs, p.Masked())
	}
	return app.Run(ctx, app.Config{
		Client: client, NodeName: o.NodeName, Mode: o.ProxyMode, ClusterCIDR: cidr.Masked(),
		ServiceCIDRs: serviceCIDRs, Scheduler: o.Scheduler,
		// NodePorts answer on the node address (upstream's "primary" default), not on the
		// pod bridge's gateway.
		NodePortAddresses: []netip.Prefix{netip.PrefixFrom(o.nodeIP, o.nodeIP.BitLen())},
		HealthzAddress:    "0.0.0.0:10256",
		MinSyncPeriod:     100 * time.Millisecond, SyncPeriod: time.Hour,
	})
}
