// Package proxy is `svcplane proxy`: the Service proxy alone (package pkg/proxy/app), for a
// node whose agent runs with --proxy-mode=none or for running it beside another node agent.
package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcplane/svcplane/pkg/cmd/cmdutil"
	"github.com/svcplane/svcplane/pkg/proxy/app"
)

// Options are the proxy's flags.
type Options struct {
	Kubeconfig, Server string
	NodeName           string
	Mode               string
	ClusterCIDR        string
	ServiceCIDRs       []string
	NodePortAddresses  []string
	HealthzAddress     string
	MinSyncPeriod      time.Duration
	SyncPeriod         time.Duration
	Scheduler          string
	// Netns, when set, names the network namespace (/run/netns/NAME) the proxy must be
	// running in: a proxy started in the wrong namespace would program the host's firewall.
	Netns string

	cfg app.Config
}

// NewCommand returns `svcplane proxy`.
func NewCommand() *cobra.Command {
	o := &Options{Mode: app.ModeNFTables, ClusterCIDR: "10.244.0.0/16", ServiceCIDRs: []string{"10.96.0.0/12"},
		HealthzAddress: "0.0.0.0:10256", MinSyncPeriod: 100 * time.Millisecond, SyncPeriod: time.Hour}
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run the Service proxy: make ClusterIPs, NodePorts and external IPs of Services work on this node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return app.Run(cmd.Context(), o.cfg)
		},
	}
	o.AddFlags(cmd.Flags())
	cmdutil.AddLogFlags(cmd)
	return cmd
}

// AddFlags registers the flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Kubeconfig to reach the API server with.")
	fs.StringVar(&o.Server, "server", o.Server, "URL of the API server, overriding the kubeconfig's.")
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "Name of this Node (decides which endpoints are local); default the host name.")
	fs.StringVar(&o.Mode, "proxy-mode", o.Mode, "nftables or userspace.")
	fs.StringVar(&o.ClusterCIDR, "cluster-cidr", o.ClusterCIDR, "Pod address ranges, one or one per IP family (10.244.0.0/16,fd00:244::/56): ClusterIP traffic from outside its family's range is masqueraded; a family without one masquerades all. An IPv6 range makes IPv6 Services required: the proxy fails if the ip6 table cannot be programmed.")
	fs.StringSliceVar(&o.ServiceCIDRs, "service-cidr", o.ServiceCIDRs, "ClusterIP ranges, one per IP family (the userspace mode routes each locally); an IPv6 range makes IPv6 Services required, as an IPv6 --cluster-cidr does.")
	fs.StringSliceVar(&o.NodePortAddresses, "nodeport-addresses", o.NodePortAddresses, "CIDRs of the node addresses NodePorts answer on, per IP family; a family without one answers on every non-loopback, non-link-local address of that family.")
	fs.StringVar(&o.HealthzAddress, "healthz-bind-address", o.HealthzAddress, "Address serving /healthz and /metrics; empty disables.")
	fs.DurationVar(&o.MinSyncPeriod, "min-sync-period", o.MinSyncPeriod, "Shortest time between syncs: changes arriving meanwhile are merged.")
	fs.DurationVar(&o.SyncPeriod, "sync-period", o.SyncPeriod, "Period of the full resync that repairs rules changed behind the proxy's back.")
	fs.StringVar(&o.Scheduler, "scheduler", o.Scheduler, "Userspace mode: default scheduler (rr, wrr, lc, wlc, sed, nq, dh, sh, random); Services override it with the svcplane.io/scheduler annotation.")
	fs.StringVar(&o.Netns, "netns", o.Netns, "Refuse to run unless this process is inside the named network namespace (/run/netns/NAME).")
}

// Complete turns the flags into the app's Config.
func (o *Options) Complete() error {
	if o.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("--node-name not given and no host name: %w", err)
		}
		o.NodeName = h
	}
	var errs []error
	o.cfg = app.Config{NodeName: o.NodeName, Mode: o.Mode, HealthzAddress: o.HealthzAddress,
		MinSyncPeriod: o.MinSyncPeriod, SyncPeriod: o.SyncPeriod, Scheduler: o.Scheduler}
	cidrs, err := app.ParseCIDRList("--cluster-cidr", o.ClusterCIDR)
	if err != nil {
		errs = append(errs, err)
	}
	o.cfg.ClusterCIDRs = cidrs
	for _, flag := range []struct {
		name string
		in   []string
		out  *[]netip.Prefix
	}{{"--service-cidr", o.ServiceCIDRs, &o.cfg.ServiceCIDRs}, {"--nodeport-addresses", o.NodePortAddresses, &o.cfg.NodePortAddresses}} {
		for _, s := range flag.in {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %q is not a CIDR", flag.name, s))
				continue
			}
			*flag.out = append(*flag.out, p.Masked())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if o.Kubeconfig == "" && o.Server == "" {
		return errors.New("give --kubeconfig")
	}
	rc, err := clientcmd.BuildConfigFromFlags(o.Server, o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("reading --kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst = 50, 100
	rc.UserAgent = "svcplane-proxy/" + o.NodeName
	if o.cfg.Client, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	return nil
}

// Validate checks the flags together.
func (o *Options) Validate() error {
	var errs []error
	if err := o.cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.Netns != "" {
		if err := cmdutil.InNamedNetns(o.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
