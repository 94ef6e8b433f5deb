// Package dns is the `svcplane dns` command: the cluster DNS server as its own process, reading
// the API through a kubeconfig. `svcplane server` runs the same component in-process through
// Options.StartWithSource, reading its own storage.
package dns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/cmd/cmdutil"
	"github.com/svcplane/svcplane/pkg/dns/cache"
	"github.com/svcplane/svcplane/pkg/dns/resolver"
	"github.com/svcplane/svcplane/pkg/dns/server"
)

// The Service Pods reach the DNS server through, named as kubeadm names CoreDNS's so that
// tooling looking for it finds it.
const (
	ServiceNamespace = "kube-system"
	ServiceName      = "kube-dns"
)

// Options are the flags of the DNS component.
type Options struct {
	Kubeconfig    string
	Listen        []string
	ClusterDomain string
	Upstream      []string
	PodRecords    string
	TTL           time.Duration
	HealthListen  string
	// PublishService makes the component create the kube-dns Service with ServiceIP and, when
	// AdvertiseAddress is set, an EndpointSlice that sends its traffic to this server.
	PublishService   bool
	ServiceIP        string
	AdvertiseAddress string
	ResolvConf       string

	podMode resolver.PodMode
}

// NewOptions returns the defaults of `svcplane dns`.
func NewOptions() *Options {
	return &Options{
		Listen:        []string{":53"},
		ClusterDomain: "cluster.local",
		PodRecords:    "insecure",
		TTL:           30 * time.Second,
		HealthListen:  ":8080",
		ServiceIP:     "10.96.0.10",
		ResolvConf:    "/etc/resolv.conf",
	}
}

// AddFlags registers the flags of `svcplane dns` on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Kubeconfig of the API server to read Services, EndpointSlices, Namespaces and Pods from; empty means in-cluster configuration.")
	o.addSharedFlags(fs, "")
	fs.StringVar(&o.HealthListen, "health-listen", o.HealthListen, "Address for /health, /ready and /metrics over HTTP; empty disables them.")
	fs.BoolVar(&o.PublishService, "publish-service", o.PublishService, "Create the kube-system/kube-dns Service with --service-ip if it does not exist.")
	fs.StringVar(&o.ServiceIP, "service-ip", o.ServiceIP, "ClusterIP requested for the kube-dns Service when --publish-service is set.")
	fs.StringVar(&o.AdvertiseAddress, "advertise-address", o.AdvertiseAddress, "Address Pods reach this server at, published as the kube-dns Service's endpoint when --publish-service is set.")
}

// AddEmbeddedFlags registers the flags `svcplane server` offers for its built-in DNS server; their
// names carry a dns- prefix where the bare name would be ambiguous among the server's flags.
func (o *Options) AddEmbeddedFlags(fs *pflag.FlagSet) {
	o.addSharedFlags(fs, "dns-")
	fs.StringVar(&o.HealthListen, "dns-health-listen", o.HealthListen, "Address for the DNS server's /health, /ready and /metrics; empty disables them (its metrics are on the API server's /metrics too).")
}

func (o *Options) addSharedFlags(fs *pflag.FlagSet, prefix string) {
	fs.StringArrayVar(&o.Listen, "dns-listen", o.Listen, "ADDR:PORT to answer DNS on, over UDP and TCP (repeatable).")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", o.ClusterDomain, "The cluster's DNS zone.")
	fs.StringSliceVar(&o.Upstream, prefix+"upstream", o.Upstream, "Resolvers (IP or IP:PORT, repeatable) for names outside the cluster zone; default: the nameservers of /etc/resolv.conf.")
	fs.StringVar(&o.PodRecords, prefix+"pod-records", o.PodRecords, "Answer <a-b-c-d>.<ns>.pod.<zone>: insecure (any address), verified (only addresses of Pods in that namespace) or disabled.")
	fs.DurationVar(&o.TTL, prefix+"ttl", o.TTL, "TTL of cluster records, and the SOA minimum that bounds negative caching.")
}

// Complete fills in the upstream resolvers from resolv.conf when none are given.
func (o *Options) Complete() error {
	if len(o.Upstream) == 0 && o.ResolvConf != "" {
		servers, err := nameservers(o.ResolvConf)
		if err != nil {
			klog.InfoS("No upstream resolvers: names outside the cluster zone will get SERVFAIL", "resolvConf", o.ResolvConf, "err", err)
		}
		o.Upstream = servers
	}
	for i, u := range o.Upstream {
		o.Upstream[i] = withDefaultPort(u)
	}
	o.ClusterDomain = strings.TrimSuffix(strings.ToLower(o.ClusterDomain), ".")
	return nil
}

// Validate reports every invalid option at once.
func (o *Options) Validate() error {
	var errs []error
	if len(o.Listen) == 0 {
		errs = append(errs, errors.New("--dns-listen: give at least one ADDR:PORT"))
	}
	for _, l := range o.Listen {
		if _, _, err := net.SplitHostPort(l); err != nil {
			errs = append(errs, fmt.Errorf("--dns-listen %q: want ADDR:PORT, e.g. 127.0.0.1:53 or :53", l))
		}
	}
	for _, u := range o.Upstream {
		if _, err := netip.ParseAddrPort(u); err != nil {
			errs = append(errs, fmt.Errorf("upstream %q: want IP or IP:PORT", u))
		}
	}
	if o.ClusterDomain == "" {
		errs = append(errs, errors.New("--cluster-domain must not be empty"))
	}
	mode, err := resolver.ParsePodMode(o.PodRecords)
	if err != nil {
		errs = append(errs, err)
	}
	o.podMode = mode
	if o.TTL < time.Second || o.TTL > 24*time.Hour {
		errs = append(errs, fmt.Errorf("ttl %v: use 1s to 24h", o.TTL))
	}
	if o.PublishService {
		if _, err := netip.ParseAddr(o.ServiceIP); err != nil {
			errs = append(errs, fmt.Errorf("--service-ip %q is not an IP address", o.ServiceIP))
		}
		if _, err := netip.ParseAddr(o.AdvertiseAddress); o.AdvertiseAddress != "" && err != nil {
			errs = append(errs, fmt.Errorf("--advertise-address %q is not an IP address", o.AdvertiseAddress))
		}
	}
	return errors.Join(errs...)
}

// Component is a DNS server whose sockets are bound; Run serves until its context ends.
type Component struct {
	opts   *Options
	client kubernetes.Interface
	source cache.Source
	index  *cache.Index
	server *server.Server
}

// Start binds the sockets and returns the component ready to Run, reading the cluster through
// config. A bind error (port taken, or port 53 without the privilege) is returned here, before
// anything else starts.
func (o *Options) Start(config *rest.Config) (*Component, error) {
	client, err := newClient(config)
	if err != nil {
		return nil, err
	}
	return o.start(cache.ClientSource(client), client)
}

// StartWithSource is Start for a caller that hands the component its own way of listing and
// watching the cluster: `svcplane server` passes its storage, read in-process. config is still
// the client the component publishes the kube-dns Service with.
func (o *Options) StartWithSource(source cache.Source, config *rest.Config) (*Component, error) {
	client, err := newClient(config)
	if err != nil {
		return nil, err
	}
	return o.start(source, client)
}

func newClient(config *rest.Config) (kubernetes.Interface, error) {
	config = rest.CopyConfig(config)
	config.UserAgent = "svcplane-dns"
	// Defaults of 5 QPS would stretch the initial lists of a large cluster over seconds.
	config.QPS, config.Burst = 50, 100
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, fmt.Errorf("creating the DNS server's API client: %w", err)
	}
	return client, nil
}

func (o *Options) start(source cache.Source, client kubernetes.Interface) (*Component, error) {
	index := cache.New(o.podMode == resolver.PodsVerified)
	res := resolver.New(index, resolver.Config{
		Zone:                o.ClusterDomain,
		TTL:                 uint32(o.TTL / time.Second),
		Pods:                o.podMode,
		DNSServiceNamespace: ServiceNamespace,
		DNSServiceName:      ServiceName,
	})
	srv := server.New(res, server.Config{Listen: o.Listen, Upstreams: o.Upstream, HealthListen: o.HealthListen})
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	return &Component{opts: o, client: client, source: source, index: index, server: srv}, nil
}

// Addrs returns the bound DNS addresses.
func (c *Component) Addrs() []net.Addr { return c.server.Addrs() }

// Run watches the API and answers queries until ctx ends.
func (c *Component) Run(ctx context.Context) error {
	if err := c.index.Run(ctx, c.source); err != nil {
		return err
	}
	if c.opts.PublishService {
		go c.publish(ctx)
	}
	go func() {
		start := time.Now()
		if err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(context.Context) (bool, error) {
			return c.index.Synced(), nil
		}); err == nil {
			// Over HTTP the first lists decoded every object in full before slimming; hand that
			// memory back now rather than whenever the scavenger gets to it, so RSS reflects
			// the index.
			debug.FreeOSMemory()
			services, endpoints := c.index.Counts()
			klog.InfoS("DNS index synced", "services", services, "endpoints", endpoints, "after", time.Since(start).Round(time.Millisecond))
		}
	}()
	return c.server.Serve(ctx)
}

// nameservers reads the nameserver lines of a resolv.conf.
func nameservers(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if addr, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, netip.AddrPortFrom(addr, 53).String())
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s lists no nameserver", path)
	}
	return out, nil
}

func withDefaultPort(s string) string {
	if addr, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(addr, 53).String()
	}
	return s
}

// NewCommand returns the `svcplane dns` command.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "Run the cluster DNS server against an API server",
		Long: `Run the cluster DNS server: it answers the names of the Kubernetes DNS specification for
the cluster zone from Services, EndpointSlices, Namespaces (and Pods, with --pod-records=verified)
read through --kubeconfig, and forwards all other names to --upstream.

  svcplane dns --kubeconfig svcplane-data/admin.kubeconfig --dns-listen 127.0.0.1:1053`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			config, err := clientConfig(o.Kubeconfig)
			if err != nil {
				return err
			}
			c, err := o.Start(config)
			if err != nil {
				return err
			}
			return c.Run(cmd.Context())
		},
	}
	o.AddFlags(cmd.Flags())
	cmdutil.AddLogFlags(cmd)
	return cmd
}

func clientConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		config, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig given and not running in a cluster: %w", err)
		}
		return config, nil
	}
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading --kubeconfig %s: %w", kubeconfig, err)
	}
	return config, nil
}
