// Package agent is `svcplane agent`: it registers this machine as a Node, keeps the Node's
// Ready condition fresh, and runs the Node's Pods (package pods). The hidden `agent pod-init`
// is the init shim the agent starts every Pod process through (package runtime).
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/agent/announce"
	"github.com/svcplane/svcplane/pkg/agent/egress"
	"github.com/svcplane/svcplane/pkg/agent/logserver"
	"github.com/svcplane/svcplane/pkg/agent/netns"
	"github.com/svcplane/svcplane/pkg/agent/pods"
	"github.com/svcplane/svcplane/pkg/agent/runtime"
	"github.com/svcplane/svcplane/pkg/cmd/cmdutil"
	"github.com/svcplane/svcplane/pkg/proxy/app"
)

// Options are the agent's flags.
type Options struct {
	Server, Token, Kubeconfig string
	// CAFile verifies the server; without it (and without a kubeconfig) the connection is
	// not verified, like `kubectl --insecure-skip-tls-verify`.
	CAFile        string
	NodeName      string
	NodeIP        string
	PodCIDR       string
	PodBridge     string
	DataDir       string
	ClusterDNS    string
	ClusterDomain string
	// HeartbeatInterval is how often the Ready condition is renewed (kubelet: 10s).
	HeartbeatInterval time.Duration
	// Netns, when set, names the network namespace (/run/netns/NAME) the agent must be running
	// in. The sandbox sets it so that an agent started in the wrong namespace (the host's, by a
	// script re-running its command line) refuses to run instead of sending traffic out.
	Netns string
	// ProxyMode is the Service proxy run in this process (nftables, userspace or none);
	// ClusterCIDR is the Pods' range, whose traffic to Services is not masqueraded.
	ProxyMode, ClusterCIDR string
	// ServiceCIDRs are the ClusterIP ranges (the userspace mode routes them locally);
	// Scheduler is that mode's default scheduler.
	ServiceCIDRs []string
	Scheduler    string
	// AnnounceLoadBalancers answers ARP and NDP for the LoadBalancer addresses this node is chosen
	// for (package announce).
	AnnounceLoadBalancers bool
	// AnnounceBeaconInterval is how often the announcer tells the other nodes it is alive.
	AnnounceBeaconInterval time.Duration
	// MasqueradePodEgress masquerades Pods' traffic to outside the cluster CIDRs (package
	// egress).
	MasqueradePodEgress bool
	// LogsPort is where the API server fetches containers' logs for `kubectl logs` (package
	// logserver); 0 turns it off.
	LogsPort int

	nodeIPs  []netip.Addr // --node-ip, primary first: the Node's InternalIPs, Pods' hostIPs
	podCIDRs []string     // --pod-cidr split: what spec.podCIDRs must be
}

// NewOptions returns the defaults of the flags.
func NewOptions() *Options {
	return &Options{PodBridge: "cbr0", DataDir: "/var/lib/svcplane-agent", ClusterDNS: "10.96.0.10",
		ClusterDomain: "cluster.local", HeartbeatInterval: 10 * time.Second, ProxyMode: "nftables", ClusterCIDR: "10.244.0.0/16",
		ServiceCIDRs: []string{"10.96.0.0/12"}, AnnounceLoadBalancers: true,
		AnnounceBeaconInterval: announce.DefaultBeaconInterval, MasqueradePodEgress: true, LogsPort: logserver.DefaultPort}
}

// NewCommand returns `svcplane agent`.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: register the Node and run its Pods as processes in network namespaces",
		Args:  cobra.NoArgs,
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
	cmd.AddCommand(&cobra.Command{
		Use:                "pod-init",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			err := runtime.InitMain(args)
			if err != nil {
				// The container's log is the only place anyone will look.
				fmt.Fprintln(os.Stderr, "svcplane pod-init:", err)
				os.Exit(127)
			}
			return nil
		},
	})
	return cmd
}

// AddFlags registers the flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Server, "server", o.Server, "URL of the API server, e.g. https://10.250.0.2:6443.")
	fs.StringVar(&o.Token, "token", o.Token, "Bearer token for the API server (a line of the server's tokens.csv).")
	fs.StringVar(&o.CAFile, "certificate-authority", o.CAFile, "CA bundle that signed the API server's certificate; without it the server is not verified.")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Kubeconfig to reach the API server with, instead of --server and --token.")
	fs.StringVar(&o.NodeName, "node-name", o.NodeName, "Name of this Node; default the host name.")
	fs.StringVar(&o.NodeIP, "node-ip", o.NodeIP, "Address other nodes reach this one at, or one per IP family (10.250.0.11,fd00:250::b; the first is the primary): the Node's InternalIPs, the Pods' hostIPs and the addresses NodePorts answer on; default the first non-loopback IPv4 address.")
	fs.StringVar(&o.PodCIDR, "pod-cidr", o.PodCIDR, "Ask for this pod CIDR, or one per IP family (10.244.1.0/24,fd00:244:0:1::/64; the first is the primary), when registering (the IPv4 one must match the pod bridge; the bridge gets the IPv6 one's first address); default: wait for the server's node-ipam controller to assign them.")
	fs.StringVar(&o.PodBridge, "pod-bridge", o.PodBridge, "Bridge Pods are attached to; its address in each pod CIDR is the Pods' gateway. Created with each CIDR's first address if it does not exist.")
	fs.StringVar(&o.DataDir, "data-dir", o.DataDir, "Directory for Pod state, logs and address allocations; keep it across restarts.")
	fs.StringVar(&o.ClusterDNS, "cluster-dns", o.ClusterDNS, "Nameserver of Pods with dnsPolicy ClusterFirst (the DNS Service's IP); empty uses the node's resolv.conf.")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", o.ClusterDomain, "Cluster DNS domain.")
	fs.DurationVar(&o.HeartbeatInterval, "heartbeat-interval", o.HeartbeatInterval, "How often the Node's Ready condition is renewed.")
	fs.BoolVar(&o.MasqueradePodEgress, "masquerade-pod-egress", o.MasqueradePodEgress, "Masquerade Pods' traffic to addresses outside --cluster-cidr behind the node's address (nftables table svcplane-egress), so hosts without routes to the pod CIDRs can answer.")
	fs.IntVar(&o.LogsPort, "logs-port", o.LogsPort, "Port (on every address) where the API server fetches containers' logs for `kubectl logs`, the kubelet's port; 0 turns it off. Only the API server's client certificate, signed by --certificate-authority, is served.")
	fs.StringVar(&o.Netns, "netns", o.Netns, "Refuse to run unless this process is inside the named network namespace (/run/netns/NAME).")
	o.addProxyFlags(fs)
}

// Complete fills defaults.
func (o *Options) Complete() error {
	if o.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("--node-name not given and no host name: %w", err)
		}
		o.NodeName = h
	}
	if o.NodeIP == "" {
		ip, err := firstAddress()
		if err != nil {
			return err
		}
		o.nodeIPs = []netip.Addr{ip}
	} else {
		ips, err := parseNodeIPs(o.NodeIP)
		if err != nil {
			return fmt.Errorf("--node-ip %q: %w", o.NodeIP, err)
		}
		o.nodeIPs = ips
	}
	return nil
}

// Validate checks the flags together.
func (o *Options) Validate() error {
	var errs []error
	if o.Kubeconfig == "" && (o.Server == "" || o.Token == "") {
		errs = append(errs, errors.New("give --server and --token, or --kubeconfig"))
	}
	if o.PodCIDR != "" {
		o.podCIDRs = strings.Split(o.PodCIDR, ",")
		for i := range o.podCIDRs {
			o.podCIDRs[i] = strings.TrimSpace(o.podCIDRs[i])
		}
		if _, err := parsePodCIDRs(o.podCIDRs); err != nil {
			errs = append(errs, fmt.Errorf("--pod-cidr %q: %w", o.PodCIDR, err))
		}
	}
	if o.HeartbeatInterval <= 0 {
		errs = append(errs, errors.New("--heartbeat-interval must be positive"))
	}
	if o.AnnounceBeaconInterval < 10*time.Millisecond || o.AnnounceBeaconInterval > 10*time.Second {
		errs = append(errs, errors.New("--announce-beacon-interval must be between 10ms and 10s"))
	}
	if o.Netns != "" {
		if err := cmdutil.InNamedNetns(o.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	if o.NodeIP != "" {
		for _, ip := range o.nodeIPs {
			if !isLocalAddress(ip) {
				errs = append(errs, fmt.Errorf("--node-ip %s is not an address of this host (wrong network namespace?)", ip))
			}
		}
	}
	return errors.Join(errs...)
}

func isLocalAddress(ip netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if local, ok := netip.AddrFromSlice(n.IP); ok && local.Unmap() == ip {
				return true
			}
		}
	}
	return false
}

func firstAddress() (netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && !ip.IsLoopback() {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, errors.New("no IPv4 address found: give --node-ip")
}

func (o *Options) restConfig() (*rest.Config, error) {
	if o.Kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags(o.Server, o.Kubeconfig)
	}
	cfg := &rest.Config{Host: o.Server, BearerToken: o.Token}
	if o.CAFile != "" {
		cfg.TLSClientConfig.CAFile = o.CAFile
	} else {
		cfg.TLSClientConfig.Insecure = true
	}
	return cfg, nil
}

// Run registers the Node and runs its Pods until ctx ends.
func (o *Options) Run(ctx context.Context) error {
	// The sandbox starts agents alongside a server that writes its CA on first start.
	for o.CAFile != "" {
		if _, err := os.Stat(o.CAFile); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	cfg, err := o.restConfig()
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200
	cfg.UserAgent = "svcplane-agent/" + o.NodeName
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	node, err := o.register(ctx, client)
	if err != nil {
		return err
	}
	podCIDRs, err := parsePodCIDRs(nodePodCIDRs(node))
	if err != nil {
		return fmt.Errorf("node %s has pod CIDRs %v: %w", o.NodeName, nodePodCIDRs(node), err)
	}
	for _, c := range podCIDRs {
		warnIfNoForwarding(c.Addr().Is6())
	}
	network, err := netns.New(netns.Config{Bridge: o.PodBridge, PodCIDRs: podCIDRs, StateDir: filepath.Join(o.DataDir, "ipam")})
	if err != nil {
		return err
	}
	o.ensureEgress(podCIDRs)
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the svcplane binary: %w", err)
	}
	agent := pods.New(pods.Config{
		NodeName: o.NodeName, NodeIPs: o.nodeIPs, DataDir: o.DataDir, Client: client,
		Network: network, Runtime: &runtime.Runtime{Init: []string{exe, "agent", "pod-init"}},
		TestServer: []string{exe, "testserver"},
		ClusterDNS: o.ClusterDNS, ClusterDomain: o.ClusterDomain,
	})
	errc := make(chan error, 3)
	go func() { errc <- agent.Run(ctx) }()
	go o.heartbeat(ctx, client)
	go o.serveLogs(ctx)
	go func() { errc <- o.runProxy(ctx, client) }()
	announcerDone := make(chan struct{})
	go func() {
		defer close(announcerDone)
		errc <- o.runAnnouncer(ctx, client)
	}()
	klog.InfoS("agent running", "node", o.NodeName, "nodeIPs", o.nodeIPs, "podCIDRs", podCIDRs)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		// The announcer's last act tells the other nodes to take its addresses over at once;
		// exiting before it would leave them waiting for its beacons to run out.
		select {
		case <-announcerDone:
		case <-time.After(time.Second):
		}
		return nil
	}
}

// register creates the Node, or adopts the existing one, and waits for its pod CIDR.
func (o *Options) register(ctx context.Context, client kubernetes.Interface) (*corev1.Node, error) {
	var node *corev1.Node
	for {
		n, err := client.CoreV1().Nodes().Get(ctx, o.NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			n, err = client.CoreV1().Nodes().Create(ctx, o.newNode(), metav1.CreateOptions{})
		}
		if err == nil {
			node = n
			break
		}
		// The server may still be starting (the sandbox starts agents alongside it).
		klog.InfoS("waiting for the API server", "server", o.Server, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if len(o.podCIDRs) > 0 && node.Spec.PodCIDR == "" && len(node.Spec.PodCIDRs) == 0 {
		node.Spec.PodCIDR, node.Spec.PodCIDRs = o.podCIDRs[0], o.podCIDRs
		n, err := client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
		if err != nil && !apierrors.IsConflict(err) {
			return nil, fmt.Errorf("setting pod CIDR of node %s: %w", o.NodeName, err)
		}
		if err == nil {
			node = n
		}
	}
	for node.Spec.PodCIDR == "" {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		n, err := client.CoreV1().Nodes().Get(ctx, o.NodeName, metav1.GetOptions{})
		if err == nil {
			node = n
		}
	}
	if len(o.podCIDRs) > 0 && strings.Join(nodePodCIDRs(node), ",") != strings.Join(o.podCIDRs, ",") {
		return nil, fmt.Errorf("node %s already has pod CIDRs %s, not --pod-cidr %s: delete the Node or drop the flag", o.NodeName, strings.Join(nodePodCIDRs(node), ","), o.PodCIDR)
	}
	return node, nil
}

// nodePodCIDRs is spec.podCIDRs, or spec.podCIDR alone where a writer set only that.
func nodePodCIDRs(n *corev1.Node) []string {
	if len(n.Spec.PodCIDRs) > 0 {
		return n.Spec.PodCIDRs
	}
	return []string{n.Spec.PodCIDR}
}

// parsePodCIDRs reads pod CIDRs: one, or one per IP family, the primary first.
func parsePodCIDRs(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR", s)
		}
		out = append(out, p.Masked())
	}
	if len(out) > 2 || (len(out) == 2 && out[0].Addr().Is4() == out[1].Addr().Is4()) {
		return nil, errors.New("give one CIDR, or one per IP family")
	}
	return out, nil
}

// serveLogs runs the log server for `kubectl logs` until ctx ends. Pods run without it, so a
// port in use only costs an error in the log.
func (o *Options) serveLogs(ctx context.Context) {
	if o.LogsPort == 0 {
		return
	}
	if o.CAFile == "" {
		klog.InfoS("not serving containers' logs: without --certificate-authority the API server's client certificate cannot be checked, so kubectl logs will not work for this node's Pods")
		return
	}
	// A restarted agent may find the port still held for a moment by the one before it.
	for logged := false; ; {
		err := logserver.Serve(ctx, logserver.Config{Addr: net.JoinHostPort("", strconv.Itoa(o.LogsPort)), CAFile: o.CAFile,
			DataDir: o.DataDir, Hosts: o.nodeIPs})
		if err == nil || ctx.Err() != nil {
			return
		}
		if !logged {
			klog.ErrorS(err, "not serving containers' logs yet, retrying: kubectl logs does not work for this node's Pods meanwhile")
			logged = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// servedLogsPort is the port logs are served on, 0 when they are not.
func (o *Options) servedLogsPort() int {
	if o.CAFile == "" {
		return 0
	}
	return o.LogsPort
}

// ensureEgress writes (or, turned off, removes) the egress masquerade. Pods still reach each
// other and Services without it, so a kernel without nftables NAT (where the userspace proxy
// mode is the choice) only costs a warning.
func (o *Options) ensureEgress(podCIDRs []netip.Prefix) {
	clusterCIDRs, err := app.ParseCIDRList("--cluster-cidr", o.ClusterCIDR)
	if err == nil {
		err = egress.Ensure(egress.Config{PodCIDRs: podCIDRs, ClusterCIDRs: clusterCIDRs, Bridge: o.PodBridge, Disabled: !o.MasqueradePodEgress})
	}
	if err != nil && o.MasqueradePodEgress {
		klog.ErrorS(err, "Pods' traffic leaving the cluster is not masqueraded: hosts without routes to the pod CIDRs cannot answer it (--masquerade-pod-egress=false silences this)")
	}
}

// warnIfNoForwarding names the sysctl to set when the node does not forward a family. The
// agent never turns forwarding on itself: it may run in a host's own namespace, whose routing
// is not ours to change (the sandbox sets it in its node namespaces only). Without it Pods
// reach neither Services (whose DNAT to another Pod is forwarded) nor other nodes.
func warnIfNoForwarding(ipv6 bool) {
	family, key := "IPv4", "net.ipv4.ip_forward"
	if ipv6 {
		family, key = "IPv6", "net.ipv6.conf.all.forwarding"
	}
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
	if err == nil && strings.TrimSpace(string(b)) != "1" {
		klog.Warningf("%s forwarding is off in this network namespace, so Pods' %s traffic to Services and to other nodes is not routed; set %s=1", family, family, key)
	}
}

func (o *Options) newNode() *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: o.NodeName, Labels: map[string]string{
			corev1.LabelHostname: o.NodeName,
			corev1.LabelOSStable: goruntime.GOOS, corev1.LabelArchStable: goruntime.GOARCH,
		}},
	}
	if len(o.podCIDRs) > 0 {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = o.podCIDRs[0], o.podCIDRs
	}
	n.Status = o.nodeStatus(nil, time.Now())
	return n
}

// nodeStatus is what the agent reports: addresses, Ready (kept since lastTransition when
// unchanged), and no pressure.
func (o *Options) nodeStatus(old []corev1.NodeCondition, now time.Time) corev1.NodeStatus {
	transition := metav1.NewTime(now)
	for _, c := range old {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			transition = c.LastTransitionTime
		}
	}
	// An InternalIP per node IP, primary first, as kubelet lists them.
	var addresses []corev1.NodeAddress
	for _, ip := range o.nodeIPs {
		addresses = append(addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
	}
	addresses = append(addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: o.NodeName})
	return corev1.NodeStatus{
		Addresses: addresses,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message:           "svcplane agent is posting ready status",
			LastHeartbeatTime: metav1.NewTime(now), LastTransitionTime: transition,
		}},
		NodeInfo: corev1.NodeSystemInfo{OperatingSystem: goruntime.GOOS, Architecture: goruntime.GOARCH, KubeletVersion: "svcplane"},
		// Where the API server fetches logs, as from a kubelet (0 when not served).
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(o.servedLogsPort())}},
		Capacity: corev1.ResourceList{
			corev1.ResourcePods: *resourceQuantity(110),
		},
		Allocatable: corev1.ResourceList{
			corev1.ResourcePods: *resourceQuantity(110),
		},
	}
}

// heartbeat renews the Ready condition; a Node whose heartbeat stops is what a lifecycle
// controller would mark NotReady.
func (o *Options) heartbeat(ctx context.Context, client kubernetes.Interface) {
	for {
		n, err := client.CoreV1().Nodes().Get(ctx, o.NodeName, metav1.GetOptions{})
		if err == nil {
			n.Status = o.nodeStatus(n.Status.Conditions, time.Now())
			if _, err = client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
				klog.ErrorS(err, "renewing node status")
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(o.HeartbeatInterval):
		}
	}
}
