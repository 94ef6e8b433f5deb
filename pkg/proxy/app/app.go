// Package app runs a Service proxy: the informers of pkg/proxy/config feed a pkg/proxy
// Tracker, whose Snapshots a bounded-frequency runner (pkg/proxy/runner) hands to the chosen
// backend (pkg/proxy/nftables or pkg/proxy/userspace). It also serves /healthz and /metrics,
// and the healthCheckNodePorts of externalTrafficPolicy: Local Services. It is the only
// package that imports both backends; `svcplane proxy` and `svcplane agent` call Run.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
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
	// ClusterCIDR is the Pods' range: ClusterIP traffic from outside it is masqueraded.
	// Invalid masquerades all ClusterIP traffic.
	ClusterCIDR netip.Prefix
	// ServiceCIDRs are the ClusterIP ranges (the userspace mode routes them locally).
	ServiceCIDRs []netip.Prefix
	// NodePortAddresses selects the node addresses NodePorts answer on; empty: every
	// non-loopback address of the node's family.
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
	return errors.Join(errs...)
}

// Backend is what the two modes have in common.
type Backend interface {
	Sync(snap *proxy.Snapshot, full bool) error
}

// Run runs the proxy until ctx ends. It returns early only if the backend cannot start (the
// kernel lacks a feature, a socket cannot be opened): that error names what is missing.
func Run(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	nodeAddrs, err := nodeAddresses(c.NodePortAddresses)
	if err != nil {
		return err
	}
	var backend Backend
	switch c.Mode {
	case ModeNFTables:
		p, err := nftables.New(nftables.Config{Family: corev1.IPv4Protocol, ClusterCIDR: c.ClusterCIDR, NodePortAddresses: nodeAddrs})
		if err != nil {
			return fmt.Errorf("starting the nftables proxy: %w", err)
		}
		backend = p
	case ModeUserspace:
		p, err := userspace.New(userspace.Options{NodeIPs: nodeAddrs, ServiceCIDRs: c.ServiceCIDRs, ManageLocalRoutes: true, Scheduler: c.Scheduler})
		if err != nil {
			return fmt.Errorf("starting the userspace proxy: %w", err)
		}
		defer p.Close()
		backend = p
	}

	metrics := proxy.NewMetrics(c.Mode)
	health := &proxy.Health{Timeout: max(60*time.Second, 2*c.MinSyncPeriod)}
	healthChecks := proxy.NewServiceHealthServer("")
	defer healthChecks.Close()
	var r *runner.Runner
	tracker := proxy.NewTracker(corev1.IPv4Protocol, c.NodeName, func() {
		health.Queued()
		r.Run()
	})
	synced := false
	r = runner.New(func(full bool) error {
		start := time.Now()
		snap := tracker.Snapshot()
		if !snap.Synced {
			// Before both informers have listed everything, a sync would briefly remove
			// the Services not yet seen: wait (the Synced handlers nudge the runner).
			return nil
		}
		if !synced {
			full, synced = true, true
		}
		if err := backend.Sync(snap, full); err != nil {
			metrics.SyncFailures.Inc()
			klog.ErrorS(err, "proxy sync failed; retrying as a full sync", "mode", c.Mode, "full", full)
			return err
		}
		healthChecks.Sync(snap)
		metrics.ObserveSync(full, start, snap.ChangeTimes)
		health.Synced(start)
		klog.V(2).InfoS("proxy synced", "full", full, "changed", snap.Changed.Len(), "took", time.Since(start))
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
	go config.Run(ctx, c.Client, 0, tracker)
	klog.InfoS("proxy running", "mode", c.Mode, "node", c.NodeName, "nodePortAddresses", nodeAddrs)
	r.Loop(ctx)
	return nil
}

// nodeAddresses lists this node's IPv4 addresses within prefixes (all non-loopback ones
// when prefixes is empty).
func nodeAddresses(prefixes []netip.Prefix) ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing the node's addresses: %w", err)
	}
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
		if !ip.Is4() || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		if len(prefixes) > 0 && !slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			continue
		}
		if !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out, nil
}
