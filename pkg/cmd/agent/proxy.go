package agent

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"

	"github.com/svcplane/svcplane/pkg/agent/announce"
	"github.com/svcplane/svcplane/pkg/proxy/app"
)

func (o *Options) addProxyFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.ProxyMode, "proxy-mode", o.ProxyMode, "Service proxy run by the agent: nftables, userspace, or none (run `svcplane proxy` separately, or no proxy).")
	fs.StringVar(&o.ClusterCIDR, "cluster-cidr", o.ClusterCIDR, "Pod address range of the cluster, or one per IP family (v4,v6): the proxy masquerades Service traffic from outside its family's range. An IPv6 range makes IPv6 Services required.")
	fs.StringSliceVar(&o.ServiceCIDRs, "service-cluster-ip-range", o.ServiceCIDRs, "ClusterIP ranges, as the server's --service-cluster-ip-range (the userspace mode routes them locally).")
	fs.BoolVar(&o.AnnounceLoadBalancers, "announce-load-balancers", o.AnnounceLoadBalancers, "Answer ARP (IPv4) and NDP (IPv6) on the interface of the (first) --node-ip for the LoadBalancer addresses this node is chosen to announce (L2 mode).")
	fs.DurationVar(&o.AnnounceBeaconInterval, "announce-beacon-interval", o.AnnounceBeaconInterval, "How often the announcer broadcasts on the interface of the (first) --node-ip that it is alive; the other nodes take its LoadBalancer addresses over 4 intervals after its last beacon (at once when it stops cleanly).")
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
	clusterCIDRs, err := app.ParseCIDRList("--cluster-cidr", o.ClusterCIDR)
	if err != nil {
		return err
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
		Client: client, NodeName: o.NodeName, Mode: o.ProxyMode, ClusterCIDRs: clusterCIDRs,
		ServiceCIDRs: serviceCIDRs, Scheduler: o.Scheduler,
		// NodePorts answer on the node IPs (upstream's "primary" default), not on the pod
		// bridge's gateways.
		NodePortAddresses: nodePortPrefixes(o.nodeIPs),
		HealthzAddress:    "0.0.0.0:10256",
		MinSyncPeriod:     100 * time.Millisecond, SyncPeriod: time.Hour,
	})
}

// runAnnouncer runs L2 announcement of LoadBalancer addresses until ctx ends. A node whose
// agent stops stops answering at once and tells the other nodes, which take its addresses
// over; a killed agent's addresses move when its beacons have been missing for 4 intervals.
func (o *Options) runAnnouncer(ctx context.Context, client kubernetes.Interface) error {
	if !o.AnnounceLoadBalancers {
		<-ctx.Done()
		return nil
	}
	// Both families are announced on one interface: the primary node IP's (a second node IP
	// is normally on the same link).
	err := announce.Run(ctx, announce.Config{Client: client, NodeName: o.NodeName, NodeIP: o.nodeIPs[0],
		NodeGracePeriod: 3 * o.HeartbeatInterval, BeaconInterval: o.AnnounceBeaconInterval, StrictARP: true})
	if err != nil {
		return fmt.Errorf("announcing LoadBalancer addresses: %w", err)
	}
	return nil
}
