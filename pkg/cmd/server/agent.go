package server

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/spf13/pflag"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/apiserver"
	"github.com/svcplane/svcplane/pkg/auth"
	agentcmd "github.com/svcplane/svcplane/pkg/cmd/agent"
	"github.com/svcplane/svcplane/pkg/controller/nodeipam"
	"github.com/svcplane/svcplane/pkg/pki"
)

// localAgent is `svcplane server --agent`: this host's node agent and Service proxy, run in
// the server's process (the all-in-one single host, like k3s). It is the same agent as
// `svcplane agent`, configured from the server's own options: a node token of its own in the
// server's token file, the server's CA, its advertise address as API server and node IP, its
// ranges and DNS. It talks to the server over HTTPS like any other node, so the server's
// authentication and the agent's view of the cluster are those of a remote node.
type localAgent struct {
	enabled bool
	opts    *agentcmd.Options
	dataDir string
}

func newLocalAgent() *localAgent {
	opts := agentcmd.NewOptions()
	opts.DataDir = ""
	return &localAgent{opts: opts}
}

func (a *localAgent) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&a.enabled, "agent", a.enabled, "Also run this host's node agent and Service proxy in this process (a single-host cluster): it registers the host as a Node, creates the pod bridge, runs Pods and proxies Services. Needs root.")
	fs.StringVar(&a.opts.NodeName, "node-name", a.opts.NodeName, "With --agent: this host's Node name; default the host name.")
	fs.StringVar(&a.opts.NodeIP, "node-ip", a.opts.NodeIP, "With --agent: this host's address, or one per IP family (the first is the primary); default the advertise address.")
	fs.StringVar(&a.opts.ProxyMode, "proxy-mode", a.opts.ProxyMode, "With --agent: the Service proxy, nftables, userspace or none.")
	fs.StringVar(&a.opts.PodBridge, "pod-bridge", a.opts.PodBridge, "With --agent: the bridge Pods are attached to; created if it does not exist.")
	fs.StringVar(&a.dataDir, "agent-data-dir", a.dataDir, "With --agent: Pod state, logs and address allocations; default <data-dir>/agent.")
}

// complete fills in the agent's options from the server's and gives the node its token. It
// runs after the server's own Complete (the advertise address and the token file exist) and
// before the server reads the token file.
func (a *localAgent) complete(o *Options) error {
	if !a.enabled {
		return nil
	}
	opts := a.opts
	if opts.NodeIP == "" {
		opts.NodeIP = o.advertiseIP.String()
	}
	opts.Server = "https://" + netip.AddrPortFrom(o.advertiseIP, uint16(o.SecureServing.BindPort)).String()
	opts.CAFile = pki.FilesIn(o.DataDir).CACert
	opts.DataDir = a.dataDir
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(o.DataDir, "agent")
	}
	opts.ClusterCIDR = nodeipam.ClusterCIDR
	opts.ServiceCIDRs = nil
	for _, cidr := range o.serviceCIDRs {
		opts.ServiceCIDRs = append(opts.ServiceCIDRs, cidr.String())
	}
	opts.ClusterDNS = ""
	if o.DNS.enabled {
		opts.ClusterDNS = o.DNS.opts.ServiceIP
		opts.ClusterDomain = o.DNS.opts.ClusterDomain
	}
	if err := opts.Complete(); err != nil {
		return fmt.Errorf("--agent: %w", err)
	}
	token, err := auth.EnsureNodeToken(o.tokenFile(), opts.NodeName)
	if err != nil {
		return fmt.Errorf("--agent: %w", err)
	}
	opts.Token = token
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("--agent: %w", err)
	}
	return nil
}

// addHook starts the agent once the API serves; if it fails, the server stops with its error,
// since a single-host cluster without its node is no use.
func (a *localAgent) addHook(ctx context.Context, s *apiserver.Server, fail context.CancelCauseFunc) {
	if !a.enabled {
		return
	}
	s.AddPostStartHookOrDie("svcplane-agent", func(genericapiserver.PostStartHookContext) error {
		klog.InfoS("starting this host's node agent", "node", a.opts.NodeName, "server", a.opts.Server, "dataDir", a.opts.DataDir)
		go func() {
			if err := a.opts.Run(ctx); err != nil && ctx.Err() == nil {
				fail(fmt.Errorf("node agent: %w", err))
			}
		}()
		return nil
	})
}
