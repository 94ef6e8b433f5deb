// Command proxy-controlplane compares the control plane of svcplane's nftables proxy with
// upstream kube-proxy in nftables mode, on the same API objects in the same run (issue 7,
// bar b). run.sh beside it starts a `svcplane server` on the host's loopback and one network
// namespace per proxy; this program does the rest:
//
//  1. Makes the server reachable inside each namespace (a relay listening on the namespace's
//     loopback, see forwardAPI), creates the Node kube-proxy runs as, and starts both proxies
//     inside their namespaces (`ip netns exec`) with /metrics on the namespace's loopback.
//  2. Ramp: creates -services selector-less Services with one EndpointSlice of -endpoints ready
//     endpoints each, at -rate Services a second, every slice stamped with the trigger time an
//     endpoint controller would write. Both proxies program them as they come; their
//     kubeproxy_network_programming_duration_seconds histograms give the network-programming
//     latency (p50, p99) at that scale.
//  3. One change: -changes times, one endpoint of one Service is replaced; each proxy's
//     partial-sync histogram (its _sum before and after) gives that sync's duration; median.
//  4. Full sync: each proxy in turn is restarted on the -services × -endpoints objects (its
//     rules still in its namespace, as after a crash or upgrade); the first sync of the new
//     process is a full one; its duration and the process's memory after it are read.
//
// Durations are the proxies' own metrics, so each measures what its authors call a sync:
// svcplane's kubeproxy_sync_proxy_rules_duration_seconds{kind=full|partial} (Snapshot of the
// tracker + the netlink batch until the kernel's answer), kube-proxy's
// kubeproxy_sync_{full,partial}_proxy_rules_duration_seconds (building the transaction + `nft`).
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type options struct {
	kubeconfig                     string
	oursNetns, peerNetns           string
	svcplane, kubeProxy            string
	peerNodeIP                     string
	services, endpoints            int
	rate                           float64
	writers, changes               int
	workDir                        string
	convergeTimeout, fullSyncLimit time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the svcplane server (on the host's loopback)")
	flag.StringVar(&o.oursNetns, "ours-netns", "", "network namespace for svcplane's proxy (must exist)")
	flag.StringVar(&o.peerNetns, "peer-netns", "", "network namespace for kube-proxy (must exist)")
	flag.StringVar(&o.svcplane, "svcplane", "", "svcplane binary")
	flag.StringVar(&o.kubeProxy, "kube-proxy", "", "kube-proxy binary; empty runs svcplane's proxy alone")
	flag.StringVar(&o.peerNodeIP, "peer-node-ip", "10.250.0.12", "kube-proxy's node address (on a link in its namespace)")
	flag.IntVar(&o.services, "services", 10000, "Services to create")
	flag.IntVar(&o.endpoints, "endpoints", 10, "ready endpoints per Service (one EndpointSlice)")
	flag.Float64Var(&o.rate, "rate", 100, "Services (each with its slice) created per second during the ramp")
	flag.IntVar(&o.writers, "writers", 8, "concurrent API writers during the ramp")
	flag.IntVar(&o.changes, "changes", 20, "one-endpoint changes to time")
	flag.StringVar(&o.workDir, "work", "", "directory for the proxies' logs and kubeconfig")
	flag.DurationVar(&o.convergeTimeout, "converge-timeout", 4*time.Minute, "how long to wait after the ramp for a proxy to program every Service")
	flag.DurationVar(&o.fullSyncLimit, "full-sync-timeout", 4*time.Minute, "how long to wait for a restarted proxy's first full sync")
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxy-controlplane:", err)
		os.Exit(1)
	}
}

// result is what one proxy scored.
type result struct {
	rampProgrammed           float64 // programming-latency samples after the ramp
	rampP50, rampP99         float64
	rampP99Lo, rampP99Hi     float64 // the bucket the p99 lies in
	rampMean                 float64
	rampSyncs                float64
	rampCPU                  float64 // CPU seconds during ramp + convergence
	rampPeakRSS              float64
	rampConverged            time.Duration // from the ramp's start until every Service was programmed
	rampSyncP50, rampSyncP99 float64       // partial syncs during the ramp
	changeSyncs, changeLats  []float64
	fullSync                 float64 // seconds; NaN when it never finished
	fullStartToSync          time.Duration
	fullRSS, fullPeakRSS     float64
	fullCPU, fullWait        float64 // during the full sync: CPU used, and time runnable without a CPU
}

var ipv4 = map[string]string{"ip_family": "IPv4"}

func run(ctx context.Context, o options) error {
	if o.kubeconfig == "" || o.oursNetns == "" || o.svcplane == "" || o.workDir == "" {
		return fmt.Errorf("-kubeconfig, -ours-netns, -svcplane and -work are required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return err
	}
	u, err := url.Parse(cfg.Host)
	if err != nil {
		return err
	}
	apiAddr := u.Host // 127.0.0.1:PORT, the same inside each namespace through the relay
	cfg.QPS, cfg.Burst = -1, 0
	client := kubernetes.NewForConfigOrDie(cfg)

	proxies := []*proxyUnderTest{{
		name: "svcplane", netns: o.oursNetns, binary: o.svcplane,
		args: []string{"proxy", "--kubeconfig", o.kubeconfig, "--node-name", "bench-svcplane", "--netns", o.oursNetns,
			"--healthz-bind-address", "127.0.0.1:10256"},
		logPath:     filepath.Join(o.workDir, "svcplane-proxy.log"),
		metricsURL:  "http://127.0.0.1:10256/metrics",
		fullSync:    series{"kubeproxy_sync_proxy_rules_duration_seconds", map[string]string{"kind": "full"}},
		partialSync: series{"kubeproxy_sync_proxy_rules_duration_seconds", map[string]string{"kind": "partial"}},
		programming: series{"kubeproxy_network_programming_duration_seconds", nil},
		lastSync:    series{"kubeproxy_sync_proxy_rules_last_timestamp_seconds", nil},
	}}
	if o.kubeProxy != "" {
		if o.peerNetns == "" {
			return fmt.Errorf("-kube-proxy needs -peer-netns")
		}
		proxies = append(proxies, &proxyUnderTest{
			name: "kube-proxy", netns: o.peerNetns, binary: o.kubeProxy,
			// Everything kube-proxy would write outside its network namespace is switched off:
			// nf_conntrack_max and the conntrack hash size are global (maxPerCore 0 leaves them),
			// the TCP timeouts are left as they are (0), and its OOM score stays neutral. Its
			// rules and the /proc/sys/net it sees are the namespace's own (ip netns exec).
			args: []string{"--proxy-mode=nftables", "--kubeconfig", o.kubeconfig, "--hostname-override", "bench-kube-proxy",
				"--metrics-bind-address", "127.0.0.1:10249", "--healthz-bind-address", "127.0.0.1:10256",
				"--cluster-cidr", "10.244.0.0/16",
				"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
				"--oom-score-adj=0"},
			logPath:    filepath.Join(o.workDir, "kube-proxy.log"),
			metricsURL: "http://127.0.0.1:10249/metrics",
			// kube-proxy runs an IPv6 proxier beside the IPv4 one wherever the kernel has IPv6;
			// the Services here are IPv4 only, as svcplane's proxy is.
			fullSync:    series{"kubeproxy_sync_full_proxy_rules_duration_seconds", ipv4},
			partialSync: series{"kubeproxy_sync_partial_proxy_rules_duration_seconds", ipv4},
			programming: series{"kubeproxy_network_programming_duration_seconds", ipv4},
			lastSync:    series{"kubeproxy_sync_proxy_rules_last_timestamp_seconds", ipv4},
		})
	}
	for _, p := range proxies {
		p.client = metricsClient(p.netns)
		if err := forwardAPI(ctx, p.netns, apiAddr); err != nil {
			return err
		}
	}
	defer func() {
		for _, p := range proxies {
			p.stop()
		}
	}()

	if err := ensureNamespace(ctx, client); err != nil {
		return err
	}
	if err := ensureNode(ctx, client, "bench-kube-proxy", o.peerNodeIP); err != nil {
		return err
	}
	for _, p := range proxies {
		if err := p.start(); err != nil {
			return err
		}
	}
	for _, p := range proxies {
		// Up: the first (full) sync of the empty cluster is done.
		if _, ok := p.waitFor(ctx, 2*time.Minute, 200*time.Millisecond, func(s scrape) bool {
			return s.sum(p.fullSync.name+"_count", p.fullSync.labels) >= 1
		}); !ok {
			return fmt.Errorf("%s did not finish its first sync; see %s", p.name, p.logPath)
		}
	}
	results := make([]*result, len(proxies))
	for i := range results {
		results[i] = &result{fullSync: math.NaN()}
	}
	load("before the ramp")

	if err := ramp(ctx, o, client, proxies, results); err != nil {
		return err
	}
	load("before the one-change syncs")
	if err := oneChanges(ctx, o, client, proxies, results); err != nil {
		return err
	}
	for i, p := range proxies {
		load("before " + p.name + "'s restart")
		if err := fullSync(ctx, o, p, results[i]); err != nil {
			return err
		}
	}
	load("at the end")
	report(o, proxies, results)
	return nil
}

func load(when string) {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) >= 3 {
		fmt.Printf("load %s: %s %s %s\n", when, f[0], f[1], f[2])
	}
}

// ramp creates the Services at the configured rate and waits until both proxies have
// programmed every one.
func ramp(ctx context.Context, o options, client kubernetes.Interface, proxies []*proxyUnderTest, results []*result) error {
	before := make([]histogram, len(proxies))
	syncsBefore := make([]float64, len(proxies))
	cpuBefore := make([]float64, len(proxies))
	for i, p := range proxies {
		s, err := p.scrape(ctx)
		if err != nil {
			return err
		}
		before[i] = s.histogram(p.programming.name, p.programming.labels)
		syncsBefore[i] = s.sum(p.partialSync.name+"_count", p.partialSync.labels) + s.sum(p.fullSync.name+"_count", p.fullSync.labels)
		cpuBefore[i] = p.cpuSeconds()
	}
	delivery := startDeliveryWatch(ctx, client)
	syncBefore := make([]histogram, len(proxies))
	for i, p := range proxies {
		s, err := p.scrape(ctx)
		if err != nil {
			return err
		}
		syncBefore[i] = s.histogram(p.partialSync.name, p.partialSync.labels)
	}
	fmt.Printf("ramp: %d Services × %d endpoints at %.0f Services/s (%d writers)\n", o.services, o.endpoints, o.rate, o.writers)
	start := time.Now()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < o.writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.services || ctx.Err() != nil {
					return
				}
				// Paced: Service i is due at start + i/rate; late ones go at once.
				if wait := time.Until(start.Add(time.Duration(float64(i) / o.rate * float64(time.Second)))); wait > 0 {
					time.Sleep(wait)
				}
				if err := createService(ctx, client, i, o.endpoints); err != nil && failed.Add(1) <= 5 {
					fmt.Fprintln(os.Stderr, err)
				}
			}
		}()
	}
	wg.Wait()
	created := time.Since(start)
	if failed.Load() > 0 {
		return fmt.Errorf("%d of %d Services failed to be created", failed.Load(), o.services)
	}
	fmt.Printf("ramp: created in %.1f s (%.0f Services/s achieved)\n", created.Seconds(), float64(o.services)/created.Seconds())

	// Wait for both at once: a proxy that is still programming must not be timed while the
	// other sits idle waiting its turn.
	var mu sync.Mutex
	var pwg sync.WaitGroup
	for i, p := range proxies {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			want := float64(o.services)
			s, ok := p.waitFor(ctx, o.convergeTimeout, 250*time.Millisecond, func(s scrape) bool {
				return s.histogram(p.programming.name, p.programming.labels).minus(before[i]).count >= want
			})
			r := results[i]
			mu.Lock()
			defer mu.Unlock()
			r.rampConverged = time.Since(start)
			r.rampCPU = p.cpuSeconds() - cpuBefore[i]
			_, r.rampPeakRSS = p.memory()
			if s == nil {
				return
			}
			h := s.histogram(p.programming.name, p.programming.labels).minus(before[i])
			r.rampProgrammed = h.count
			r.rampP50, _, _ = h.quantile(0.50)
			r.rampP99, r.rampP99Lo, r.rampP99Hi = h.quantile(0.99)
			if h.count > 0 {
				r.rampMean = h.sum / h.count
			}
			syncs := s.histogram(p.partialSync.name, p.partialSync.labels).minus(syncBefore[i])
			r.rampSyncP50, _, _ = syncs.quantile(0.50)
			r.rampSyncP99, _, _ = syncs.quantile(0.99)
			r.rampSyncs = s.sum(p.partialSync.name+"_count", p.partialSync.labels) + s.sum(p.fullSync.name+"_count", p.fullSync.labels) - syncsBefore[i]
			if !ok {
				fmt.Printf("ramp: %s programmed only %.0f of %d Services within %s of the ramp's end\n", p.name, h.count, o.services, o.convergeTimeout)
			} else {
				fmt.Printf("ramp: %s programmed all %d after %.1f s\n", p.name, o.services, r.rampConverged.Seconds())
			}
		}()
	}
	pwg.Wait()
	lats := delivery.take()
	fmt.Printf("ramp: watch delivery to a third client (trigger time → slice event): p50 %.3f s, p99 %.3f s, max %.3f s (%d events)\n",
		percentile(lats, 0.5), percentile(lats, 0.99), percentile(lats, 1), len(lats))
	for i, p := range proxies {
		fmt.Printf("ramp: %s partial syncs p50 %.3f s, p99 %.3f s (histogram estimates)\n", p.name, results[i].rampSyncP50, results[i].rampSyncP99)
	}
	return ctx.Err()
}

// oneChanges replaces one endpoint of one Service, -changes times, each time waiting until
// every proxy has programmed it, and records each proxy's sync duration and latency for it.
func oneChanges(ctx context.Context, o options, client kubernetes.Interface, proxies []*proxyUnderTest, results []*result) error {
	target := o.services / 2
	sliceClient := client.DiscoveryV1().EndpointSlices(benchNamespace)
	name := serviceName(target) + "-1"
	for n := 0; n < o.changes; n++ {
		before := make([]scrape, len(proxies))
		for i, p := range proxies {
			s, err := p.scrape(ctx)
			if err != nil {
				return err
			}
			before[i] = s
		}
		slice, err := sliceClient.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		// A fresh address each time, outside every other Service's range.
		slice.Endpoints[0].Addresses = []string{fmt.Sprintf("10.200.%d.%d", n/250, n%250+1)}
		stamp(slice, time.Now())
		if _, err := sliceClient.Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
			return err
		}
		for i, p := range proxies {
			hBefore := before[i].histogram(p.programming.name, p.programming.labels)
			s, ok := p.waitFor(ctx, time.Minute, 20*time.Millisecond, func(s scrape) bool {
				return s.histogram(p.programming.name, p.programming.labels).minus(hBefore).count >= 1
			})
			if !ok {
				return fmt.Errorf("%s did not program change %d within a minute", p.name, n)
			}
			lat := s.histogram(p.programming.name, p.programming.labels).minus(hBefore)
			sync := s.histogram(p.partialSync.name, p.partialSync.labels).minus(before[i].histogram(p.partialSync.name, p.partialSync.labels))
			full := s.histogram(p.fullSync.name, p.fullSync.labels).minus(before[i].histogram(p.fullSync.name, p.fullSync.labels))
			if full.count > 0 {
				fmt.Printf("change %d: %s ran a full sync meanwhile (%.3f s)\n", n, p.name, full.sum)
			}
			if sync.count > 0 {
				// Normally one sync; if the proxy split the work, their mean.
				results[i].changeSyncs = append(results[i].changeSyncs, sync.sum/sync.count)
			}
			results[i].changeLats = append(results[i].changeLats, lat.sum/lat.count)
		}
		// kube-proxy runs at most one sync a second (its --min-sync-period): space the changes
		// so that each gets a sync of its own.
		time.Sleep(1100 * time.Millisecond)
	}
	return nil
}

// fullSync restarts p and times its first sync, a full one over every Service.
func fullSync(ctx context.Context, o options, p *proxyUnderTest, r *result) error {
	p.stop()
	started := time.Now()
	if err := p.start(); err != nil {
		return err
	}
	// Scheduler samples every 100 ms, to tell afterwards what the sync's window cost.
	var samples []schedSample
	s, ok := p.waitFor(ctx, o.fullSyncLimit, 100*time.Millisecond, func(s scrape) bool {
		samples = append(samples, p.sched())
		return s.sum(p.fullSync.name+"_count", p.fullSync.labels) >= 1
	})
	if !ok {
		fmt.Printf("full sync: %s did not finish its first sync within %s of its start\n", p.name, o.fullSyncLimit)
		r.fullRSS, r.fullPeakRSS = p.memory()
		return nil
	}
	r.fullStartToSync = time.Since(started)
	r.fullSync = s.sum(p.fullSync.name+"_sum", p.fullSync.labels)
	// The sync ran from (finish - duration) to finish; finish is the proxy's last-sync gauge.
	end := time.Unix(0, int64(s.sum(p.lastSync.name, p.lastSync.labels)*1e9))
	begin := end.Add(-time.Duration(r.fullSync * float64(time.Second)))
	first, last := samples[0], samples[len(samples)-1]
	for _, x := range samples {
		if !x.at.After(begin) {
			first = x
		}
	}
	r.fullCPU, r.fullWait = last.cpu-first.cpu, last.wait-first.wait
	// Let the sync's garbage be collected before the resident set is read.
	time.Sleep(3 * time.Second)
	r.fullRSS, r.fullPeakRSS = p.memory()
	fmt.Printf("full sync: %s %.3f s (%.1f s from process start; in its window ≈ %.2f s of CPU and %.2f s runnable waiting for a CPU), RSS %.0f MiB (peak %.0f MiB)\n",
		p.name, r.fullSync, r.fullStartToSync.Seconds(), r.fullCPU, r.fullWait, r.fullRSS, r.fullPeakRSS)
	return nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func report(o options, proxies []*proxyUnderTest, results []*result) {
	fmt.Printf("\n%d Services × %d endpoints, ramp at %.0f Services/s\n", o.services, o.endpoints, o.rate)
	fmt.Printf("%-11s %12s %12s %16s %14s %10s %12s %12s %12s %10s\n", "proxy", "full sync", "1-change", "prog p99 (bucket)", "prog p50/mean", "ramp CPU", "ramp syncs",
		"RSS", "peak RSS", "1-chg lat")
	for i, p := range proxies {
		r := results[i]
		fmt.Printf("%-11s %11.3fs %10.1fms %7.3fs (%g–%g) %6.3f/%.3fs %9.1fs %12.0f %8.0f MiB %8.0f MiB %8.1fms\n",
			p.name, r.fullSync, 1000*median(r.changeSyncs), r.rampP99, r.rampP99Lo, r.rampP99Hi, r.rampP50, r.rampMean,
			r.rampCPU, r.rampSyncs, r.fullRSS, math.Max(r.fullPeakRSS, r.rampPeakRSS), 1000*median(r.changeLats))
	}
	for i, p := range proxies {
		r := results[i]
		fmt.Printf("%s full sync: %.3f s wall, %.2f s CPU (with exited children), %.2f s runnable waiting for a CPU\n", p.name, r.fullSync, r.fullCPU, r.fullWait)
	}
	if len(proxies) == 2 {
		a, b := results[0], results[1]
		fmt.Printf("\nratios (kube-proxy / svcplane): full sync %.1f×, one-change sync %.1f×, programming p99 %.1f×, RSS %.1f×, ramp CPU %.1f×, full-sync CPU %.1f×\n",
			b.fullSync/a.fullSync, median(b.changeSyncs)/median(a.changeSyncs), b.rampP99/a.rampP99, b.fullRSS/a.fullRSS, b.rampCPU/a.rampCPU, b.fullCPU/a.fullCPU)
	}
	fmt.Printf("\nbars: full sync < 1 s: %v; one change < 20 ms: %v; programming p99 < 1 s: %v\n",
		results[0].fullSync < 1, median(results[0].changeSyncs) < 0.020, results[0].rampP99 < 1)
}
