// Package app runs a Service proxy: the informers of pkg/proxy/config feed one pkg/proxy
// Tracker per IP family, whose Snapshots a bounded-frequency runner (pkg/proxy/runner) hands to
// the chosen backend (pkg/proxy/nftables, one table per family, or pkg/proxy/userspace). It also
// serves /healthz and /metrics, and the healthCheckNodePorts of externalTrafficPolicy: Local
// Services. It is the only package that imports both backends; `svcplane proxy` and
// `svcplane agent` call Run.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/proxy"
	"github.com/svcplane/svcplane/pkg/proxy/config"
	"github.com/svcplane/svcplane/pkg/proxy/nftables"
	"github.com/svcplane/svcplane/pkg/proxy/runner"
	"github.com/svcplane/svcplane/pkg/proxy/schedule"
	"github.com/svcplane/svcplane/pkg/proxy/userspace"
)

// Proxy modes.
const (
	ModeNFTables  = "nftables"
	ModeUserspace = "userspace"
	// ModeNone runs no proxy (for the agent's --proxy-mode).
	ModeNone = "none"
)

// Config is what Run needs.
type Config struct {
	Client   kubernetes.Interface
	NodeName string
	Mode     string
	// ClusterCIDRs are the Pods' ranges, at most one per IP family: ClusterIP traffic from
	// outside its family's range is masqueraded; a family without a range masquerades all its
	// ClusterIP traffic. An IPv6 range makes IPv6 required (see Run).
	ClusterCIDRs []netip.Prefix
	// ServiceCIDRs are the ClusterIP ranges (the userspace mode routes each locally).
	// An IPv6 range makes IPv6 required (see Run).
	ServiceCIDRs []netip.Prefix
	// NodePortAddresses selects, per family, the node addresses NodePorts answer on: a family
	// with no prefix here answers on every non-loopback, non-link-local address of that family
	// (kube-proxy treats --nodeport-addresses of one family the same way).
	NodePortAddresses []netip.Prefix
	// HealthzAddress serves /healthz and /metrics ("" disables), e.g. "0.0.0.0:10256".
	HealthzAddress string
	// MinSyncPeriod merges bursts of changes; SyncPeriod is the periodic full resync.
	MinSyncPeriod, SyncPeriod time.Duration
	// Scheduler is the userspace mode's default scheduler (rr when empty); Services choose
	// their own with the svcplane.io/scheduler annotation.
	Scheduler string
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	switch c.Mode {
	case ModeNFTables, ModeUserspace:
	default:
		errs = append(errs, fmt.Errorf("--proxy-mode %q: use %s or %s", c.Mode, ModeNFTables, ModeUserspace))
	}
	if c.NodeName == "" {
		errs = append(errs, errors.New("a node name is required"))
	}
	if c.Scheduler != "" && !slices.Contains(schedule.Names(), c.Scheduler) {
		errs = append(errs, fmt.Errorf("--scheduler %q: use one of %s", c.Scheduler, strings.Join(schedule.Names(), ", ")))
	}
	if c.MinSyncPeriod < 0 || c.SyncPeriod <= 0 {
		errs = append(errs, errors.New("sync periods must be positive"))
	}
	for _, f := range []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol} {
		if n := len(ofFamily(c.ClusterCIDRs, f)); n > 1 {
			errs = append(errs, fmt.Errorf("--cluster-cidr: %d %s ranges; give at most one per family", n, f))
		}
	}
	return errors.Join(errs...)
}

// ParseCIDRList reads a flag holding one CIDR or a comma-separated list ("10.244.0.0/16" or
// "10.244.0.0/16,fd00:244::/56"); empty means none.
func ParseCIDRList(flag, value string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(value, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %q is not a CIDR", flag, value, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Backend is what the two modes have in common.
type Backend interface {
	Sync(snap *proxy.Snapshot, full bool) error
}

// stack is one IP family's share of the proxy: its Tracker and the backend it feeds.
type stack struct {
	family    corev1.IPFamily
	backend   Backend
	tracker   *proxy.Tracker
	nodeAddrs []netip.Addr
}

// Run runs the proxy until ctx ends. It returns early only if the backend cannot start (the
// kernel lacks a feature, a socket cannot be opened): that error names what is missing.
//
// Both modes proxy IPv4 always, and IPv6 too whenever the kernel lets this namespace use it
// (as kube-proxy, which goes dual-stack when the kernel supports both families, whatever the
// node's addresses), with one backend per family fed by its own Tracker: in nftables mode a
// table each, ip and ip6 svcplane; in userspace mode a userspace.Proxier each, with its own
// listeners and local routes for its family's service range. If the IPv6 backend cannot
// start (no ip6 nat, IPv6 disabled on lo), the proxy logs why and serves IPv4 alone, unless
// IPv6 was asked for explicitly by an IPv6 range in ClusterCIDRs or ServiceCIDRs: then Run
// fails, since that node would silently break the IPv6 Services it was configured for.
func Run(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	var start func(f corev1.IPFamily, nodeAddrs []netip.Addr) (Backend, error)
	switch c.Mode {
	case ModeNFTables:
		start = func(f corev1.IPFamily, nodeAddrs []netip.Addr) (Backend, error) {
			var cidr netip.Prefix // invalid: masquerade all ClusterIP traffic of this family
			if own := ofFamily(c.ClusterCIDRs, f); len(own) > 0 {
				cidr = own[0]
			}
			return nftables.New(nftables.Config{Family: f, ClusterCIDR: cidr, NodePortAddresses: nodeAddrs})
		}
	case ModeUserspace:
		start = func(f corev1.IPFamily, nodeAddrs []netip.Addr) (Backend, error) {
			return userspace.New(userspace.Options{Family: f, NodeIPs: nodeAddrs, ServiceCIDRs: ofFamily(c.ServiceCIDRs, f),
				ManageLocalRoutes: true, Scheduler: c.Scheduler})
		}
	}
	stacks, err := startStacks(c, start)
	if err != nil {
		return err
	}
	defer closeStacks(stacks)

	metrics := proxy.NewMetrics(c.Mode)
	health := &proxy.Health{Timeout: max(60*time.Second, 2*c.MinSyncPeriod)}
	healthChecks := proxy.NewServiceHealthServer("")
	defer healthChecks.Close()
	var r *runner.Runner
	notify := func() {
		health.Queued()
		r.Run()
	}
	handlers := make([]config.FamilyHandler, len(stacks))
	for i, s := range stacks {
		s.tracker = proxy.NewTracker(s.family, c.NodeName, notify)
		handlers[i] = config.FamilyHandler{Family: s.family, Handler: s.tracker}
	}
	synced := false
	// One runner syncs every family in turn rather than one runner per family: a dual-stack
	// Service's change concerns both tables, so one wake-up per burst programs both, and
	// /healthz, the sync-duration histogram and the healthCheckNodePorts keep the meaning they
	// have on a single-stack node (a sync is done when every table carries it). The cost: a
	// failure in one family retries as a full sync of both (failures are rare; the full sync
	// of an unchanged table is one transaction).
	r = runner.New(func(full bool) error {
		start := time.Now()
		snaps := make([]*proxy.Snapshot, len(stacks))
		ready := true
		for i, s := range stacks {
			snaps[i] = s.tracker.Snapshot()
			ready = ready && snaps[i].Synced
		}
		if !ready {
			// Before both informers have listed everything, a sync would briefly remove
			// the Services not yet seen: wait (the Synced handlers nudge the runner). The
			// first sync below is a full one, so the changes just taken are not lost.
			return nil
		}
		if !synced {
			full, synced = true, true
		}
		var errs []error
		var changeTimes []time.Time
		changed := 0
		for i, s := range stacks {
			if err := s.backend.Sync(snaps[i], full); err != nil {
				metrics.SyncFailures.Inc()
				klog.ErrorS(err, "proxy sync failed; retrying as a full sync", "mode", c.Mode, "family", s.family, "full", full)
				errs = append(errs, fmt.Errorf("%s: %w", s.family, err))
				continue
			}
			changeTimes = append(changeTimes, snaps[i].ChangeTimes...)
			changed += snaps[i].Changed.Len()
		}
		healthChecks.Sync(healthSnapshot(snaps))
		if len(errs) > 0 {
			return errors.Join(errs...)
		}
		metrics.ObserveSync(full, start, changeTimes)
		health.Synced(start)
		klog.V(2).InfoS("proxy synced", "full", full, "changed", changed, "took", time.Since(start))
		return nil
	}, c.MinSyncPeriod, c.SyncPeriod)

	if c.HealthzAddress != "" {
		ln, err := net.Listen("tcp", c.HealthzAddress)
		if err != nil {
			return fmt.Errorf("listening for /healthz and /metrics on %s: %w", c.HealthzAddress, err)
		}
		srv := &http.Server{Handler: metrics.Handler(health), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
	}
	go config.Run(ctx, c.Client, 0, config.PerFamily(handlers...))
	for _, s := range stacks {
		klog.InfoS("proxy running", "mode", c.Mode, "node", c.NodeName, "family", s.family, "nodePortAddresses", s.nodeAddrs)
	}
	r.Loop(ctx)
	return nil
}

// startStacks starts the IPv4 backend and, where possible, the IPv6 one (see Run), each with
// start.
func startStacks(c Config, start func(f corev1.IPFamily, nodeAddrs []netip.Addr) (Backend, error)) ([]*stack, error) {
	newStack := func(f corev1.IPFamily) (*stack, error) {
		addrs, err := nodeAddresses(f, c.NodePortAddresses)
		if err != nil {
			return nil, err
		}
		b, err := start(f, addrs)
		if err != nil {
			return nil, err
		}
		return &stack{family: f, backend: b, nodeAddrs: addrs}, nil
	}
	v4, err := newStack(corev1.IPv4Protocol)
	if err != nil {
		return nil, fmt.Errorf("starting the %s proxy: %w", c.Mode, err)
	}
	stacks := []*stack{v4}
	required := ipv6AskedFor(c)
	v6, err := func() (*stack, error) {
		if reason := ipv6Unavailable(); reason != "" {
			return nil, errors.New(reason)
		}
		return newStack(corev1.IPv6Protocol)
	}()
	switch {
	case err == nil:
		stacks = append(stacks, v6)
	case required != "":
		closeStacks(stacks)
		return nil, fmt.Errorf("starting the IPv6 %s proxy, required by %s: %w", c.Mode, required, err)
	default:
		klog.ErrorS(err, "IPv6 Services will not work on this node; proxying IPv4 only (give an IPv6 --cluster-cidr to make this an error)")
	}
	return stacks, nil
}

// closeStacks stops the backends that hold resources of their own (the userspace mode's
// listeners, connections and local routes); an nftables table stays, as on every exit, for
// the next run to take over without a gap.
func closeStacks(stacks []*stack) {
	for _, s := range stacks {
		if c, ok := s.backend.(io.Closer); ok {
			if err := c.Close(); err != nil {
				klog.ErrorS(err, "Stopping the proxy", "family", s.family)
			}
		}
	}
}

// ipv6AskedFor names the setting that asks for IPv6 Services on this node, or "".
func ipv6AskedFor(c Config) string {
	if v6 := ofFamily(c.ClusterCIDRs, corev1.IPv6Protocol); len(v6) > 0 {
		return "--cluster-cidr " + v6[0].String()
	}
	if v6 := ofFamily(c.ServiceCIDRs, corev1.IPv6Protocol); len(v6) > 0 {
		return "the IPv6 service range " + v6[0].String()
	}
	return ""
}

// ipv6Unavailable says why this network namespace cannot use IPv6, or "" if it can: a kernel
// booted with ipv6.disable=1 has no /proc/net/if_inet6 (kube-proxy checks the same file), and
// a namespace can switch IPv6 off with the disable_ipv6 sysctl.
func ipv6Unavailable() string {
	if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
		return "the kernel has no IPv6 (/proc/net/if_inet6 is missing)"
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6"); err == nil && strings.TrimSpace(string(b)) == "1" {
		return "IPv6 is disabled in this network namespace (net.ipv6.conf.all.disable_ipv6=1)"
	}
	return ""
}

// healthSnapshot is what the one healthCheckNodePort server counts: with one family, that
// family's Snapshot; with two, every externalTrafficPolicy: Local ServicePort from the family
// where this node has more usable local endpoints of it (a dual-stack Pod is one endpoint in
// each family, so the families are compared, not added; an IPv6-only Service is counted too).
func healthSnapshot(snaps []*proxy.Snapshot) *proxy.Snapshot {
	if len(snaps) == 1 {
		return snaps[0]
	}
	out := &proxy.Snapshot{Services: proxy.ServicePortMap{}, Endpoints: proxy.EndpointsMap{}}
	best := map[proxy.ServicePortName]int{}
	for _, snap := range snaps {
		for name, sp := range snap.Services {
			if !sp.ExternalPolicyLocal || sp.HealthCheckNodePort == 0 {
				continue
			}
			_, _, local := proxy.UsableEndpoints(sp, snap.Endpoints[name])
			if prev, ok := best[name]; ok && prev >= local {
				continue
			}
			best[name] = local
			out.Services[name], out.Endpoints[name] = sp, snap.Endpoints[name]
		}
	}
	return out
}

// ofFamily returns the prefixes of family f.
func ofFamily(prefixes []netip.Prefix, f corev1.IPFamily) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range prefixes {
		if p.Addr().Is4() == (f == corev1.IPv4Protocol) {
			out = append(out, p)
		}
	}
	return out
}

// nodeAddresses lists this node's addresses of family f within the prefixes of that family
// (all non-loopback, non-link-local ones when prefixes has none of f).
func nodeAddresses(f corev1.IPFamily, prefixes []netip.Prefix) ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing the node's addresses: %w", err)
	}
	own := ofFamily(prefixes, f)
	var out []netip.Addr
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.Is4() != (f == corev1.IPv4Protocol) || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		if len(own) > 0 && !slices.ContainsFunc(own, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			continue
		}
		if !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out, nil
}
