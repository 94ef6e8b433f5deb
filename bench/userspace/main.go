// Command userspace benchmarks the userspace proxy mode against HAProxy (mode tcp, same
// round-robin balancing) and against no proxy at all, in one run on the same backends:
//
//	go build -o /tmp/usbench ./bench/userspace && sudo /tmp/usbench [-seconds 8] [-rounds 3] [-idle 2000]
//	    [-paths direct,userspace,goroutines,haproxy] [-tests iperf,keepalive,connect,latency,memory]
//	    [-rate-keepalive 2000] [-rate-connect 1000] [-proxy-procs N] [-proxy-cpuprofile FILE]
//
// Everything happens inside network namespaces it creates (pkg/sandbox/topology) and removes
// on exit: the client runs in "ext" (10.250.0.200), both proxies in node1 (10.250.0.11, on
// port 30080 ours, 30081 HAProxy's), the backends in node2 (10.250.0.12: HTTP on 8080 and
// 8081, iperf3 on 5201, idle sinks on 9000). Reported per path, as the median over rounds
// that interleave the paths:
//
//   - iperf: single-stream iperf3 throughput, and the proxy's CPU time per gigabyte;
//   - keepalive: wrk over one keep-alive connection, closed loop (p50, p99, requests/s);
//   - connect: wrk with "Connection: close" over 32 connections (new connections per second,
//     and the proxy's CPU time per connection);
//   - latency: the fixed-rate generator in loadgen.go (open loop, the same offered load on
//     every path) on keep-alive connections and on a new connection per request; the added
//     p50/p99/p99.9 of each proxy is its figure minus the direct path's in the same round;
//   - memory: the proxy's RSS growth per idle proxied connection over -idle connections.
//
// The 1-minute load average is printed with every round: on a shared machine the rates move
// with it, the CPU-time figures much less.
//
// Needs iperf3, wrk and haproxy (Debian packages; bench/userspace/run.sh installs them).
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/svcplane/svcplane/pkg/proxy"
	"github.com/svcplane/svcplane/pkg/proxy/userspace"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

const (
	node1, node2, ext = "node1", "node2", topology.MemberExternal
	oursPort          = 30080
	haproxyPort       = 30081
	goroutinesPort    = 30090
	hostNSEnv         = "USBENCH_HOST_NS"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "loadgen" {
		if err := runLoadgen(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "proxy" {
		if err := runProxy(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "proxy:", err)
			os.Exit(1)
		}
		return
	}
	seconds := flag.Int("seconds", 8, "duration of each load run")
	idle := flag.Int("idle", 2000, "idle connections held for the memory figure")
	rounds := flag.Int("rounds", 3, "rounds over all paths; each figure is the median (0: memory only)")
	only := flag.String("paths", "direct,userspace,haproxy", "paths to measure, comma-separated; also goroutines: our proxy with GoroutineRelay")
	tests := flag.String("tests", "iperf,keepalive,connect,latency,memory", "measurements to take, comma-separated")
	rateKA := flag.Int("rate-keepalive", 2000, "fixed request rate of the keep-alive latency run")
	rateConn := flag.Int("rate-connect", 1000, "fixed new-connection rate of the connection latency run")
	procs := flag.Int("proxy-procs", 0, "GOMAXPROCS of our proxy (0: Go's default, every CPU)")
	profile := flag.String("proxy-cpuprofile", "", "write our proxy's CPU profile over the whole run to this file")
	flag.Parse()
	b := &bench{seconds: time.Duration(*seconds) * time.Second, rateKeepAlive: *rateKA, rateConnect: *rateConn, proxyProcs: *procs, proxyProfile: *profile}
	if err := b.run(*idle, *rounds, strings.Split(*only, ","), testSet(strings.Split(*tests, ","))); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// runProxy is the userspace proxy process, started inside node1: one TCP NodePort Service per
// -service name=port=backend,backend.
func runProxy(args []string) error {
	self, err := os.Readlink("/proc/self/ns/net")
	if host := os.Getenv(hostNSEnv); err != nil || host == "" || self == host {
		return fmt.Errorf("refusing to run outside the benchmark's namespace")
	}
	fs := flag.NewFlagSet("proxy", flag.ExitOnError)
	node := fs.String("node-ip", "", "")
	var services []string
	fs.Func("service", "name=nodeport=backend,backend", func(s string) error { services = append(services, s); return nil })
	procs := fs.Int("procs", 0, "GOMAXPROCS of the proxy (0: Go's default, every CPU)")
	profile := fs.String("cpuprofile", "", "write the proxy's CPU profile to this file")
	goroutines := fs.Bool("goroutine-relay", false, "serve TCP with goroutines per connection, not the event loops")
	fs.Parse(args)
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	p, err := userspace.New(userspace.Options{NodeIPs: []netip.Addr{netip.MustParseAddr(*node)}, GoroutineRelay: *goroutines})
	if err != nil {
		return err
	}
	snap := &proxy.Snapshot{Services: proxy.ServicePortMap{}, Endpoints: proxy.EndpointsMap{}, Changed: sets.New[proxy.ServicePortName](), Synced: true}
	for _, s := range services {
		f := strings.Split(s, "=")
		port, _ := strconv.Atoi(f[1])
		name := proxy.ServicePortName{NamespacedName: types.NamespacedName{Namespace: "bench", Name: f[0]}, Protocol: corev1.ProtocolTCP}
		snap.Services[name] = &proxy.ServicePort{Name: name, Protocol: corev1.ProtocolTCP, NodePort: int32(port)}
		for _, b := range strings.Split(f[2], ",") {
			ap := netip.MustParseAddrPort(b)
			snap.Endpoints[name] = append(snap.Endpoints[name], &proxy.Endpoint{IP: ap.Addr(), Port: int32(ap.Port()), Ready: true, Serving: true})
		}
	}
	if err := p.Sync(snap, true); err != nil {
		return err
	}
	fmt.Println("ready")
	// Stop when stdin closes or on SIGTERM (how the benchmark ends its processes), returning so
	// that the deferred profile is written.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	go func() { io.Copy(io.Discard, os.Stdin); stop <- syscall.SIGTERM }()
	<-stop
	return p.Close()
}

type bench struct {
	topo                       *topology.Topology
	seconds                    time.Duration
	rateKeepAlive, rateConnect int
	proxyProcs                 int
	proxyProfile               string
	procs                      []*exec.Cmd
}

type testSet []string

func (t testSet) has(name string) bool { return slices.Contains(t, name) }

func (b *bench) run(idle, rounds int, only []string, t testSet) (err error) {
	for _, tool := range []string{"iperf3", "wrk", "haproxy"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s: apt-get install iperf3 wrk haproxy (bench/userspace/run.sh does)", tool)
		}
	}
	topo, err := topology.Create(topology.Options{Name: fmt.Sprintf("usb%d", os.Getpid()%100000), Nodes: 2})
	if err != nil {
		return err
	}
	b.topo = topo
	defer func() {
		b.stopAll()
		if cerr := topo.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	// Tear the namespaces down on ^C as well.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		b.stopAll()
		topo.Close()
		os.Exit(130)
	}()

	n1, n2 := topology.NodeAddr(1), topology.NodeAddr(2)
	httpA, httpB := netip.AddrPortFrom(n2, 8080), netip.AddrPortFrom(n2, 8081)
	iperf := netip.AddrPortFrom(n2, 5201)
	sink := netip.AddrPortFrom(n2, 9000)
	for _, a := range []netip.AddrPort{httpA, httpB} {
		ln, err := topo.Listen(node2, "tcp", a.String())
		if err != nil {
			return err
		}
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") }))
	}
	sinkLn, err := topo.Listen(node2, "tcp", sink.String())
	if err != nil {
		return err
	}
	// The sink holds each connection until the client closes it.
	go func() {
		for {
			c, err := sinkLn.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	if _, err := b.start(node2, "", "iperf3", "-s", "-B", n2.String(), "-p", "5201"); err != nil {
		return err
	}

	exe, _ := os.Executable()
	ours, err := b.start(node1, "ready", exe, "proxy", "-node-ip", n1.String(), "-procs", fmt.Sprint(b.proxyProcs),
		"-cpuprofile", b.proxyProfile,
		"-service", fmt.Sprintf("http=%d=%s,%s", oursPort, httpA, httpB),
		"-service", fmt.Sprintf("iperf=%d=%s", oursPort+2, iperf),
		"-service", fmt.Sprintf("sink=%d=%s", oursPort+4, sink))
	if err != nil {
		return err
	}
	// The goroutine relay (the design before the event loops), when asked for, in a second
	// proxy process.
	goroutinesPid := 0
	if slices.Contains(only, "goroutines") {
		g, err := b.start(node1, "ready", exe, "proxy", "-node-ip", n1.String(), "-procs", fmt.Sprint(b.proxyProcs),
			"-goroutine-relay",
			"-service", fmt.Sprintf("http=%d=%s,%s", goroutinesPort, httpA, httpB),
			"-service", fmt.Sprintf("iperf=%d=%s", goroutinesPort+2, iperf),
			"-service", fmt.Sprintf("sink=%d=%s", goroutinesPort+4, sink))
		if err != nil {
			return err
		}
		goroutinesPid = g.Process.Pid
	}
	cfg := haproxyConfig(n1, httpA, httpB, iperf, sink)
	cfgPath := fmt.Sprintf("/tmp/usbench-%d.cfg", os.Getpid())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	defer os.Remove(cfgPath)
	hap, err := b.start(node1, "", "haproxy", "-db", "-f", cfgPath)
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)

	type path struct {
		name              string
		http, iperf, sink netip.AddrPort
		pid               int
	}
	paths := []path{
		{"direct", httpA, iperf, sink, 0},
		{"userspace", netip.AddrPortFrom(n1, oursPort), netip.AddrPortFrom(n1, oursPort+2), netip.AddrPortFrom(n1, oursPort+4), ours.Process.Pid},
		{"goroutines", netip.AddrPortFrom(n1, goroutinesPort), netip.AddrPortFrom(n1, goroutinesPort+2), netip.AddrPortFrom(n1, goroutinesPort+4), goroutinesPid},
		{"haproxy", netip.AddrPortFrom(n1, haproxyPort), netip.AddrPortFrom(n1, haproxyPort+2), netip.AddrPortFrom(n1, haproxyPort+4), hap.Process.Pid},
	}
	paths = slices.DeleteFunc(paths, func(p path) bool { return !slices.Contains(only, p.name) })
	fmt.Printf("%s, %d CPUs, %v per run, median of %d rounds (paths interleaved), load average %s\n",
		time.Now().UTC().Format(time.RFC3339), numCPU(), b.seconds, rounds, loadAverage())
	type figures struct {
		gbps, p50, p99, rps, cps, cp99, cpuPerGB, cpuPerConn []float64
		kaRate, connRate                                     []latencyResult
	}
	results := make([]figures, len(paths))
	// Idle memory first, on fresh processes: after the load rounds the heap left over from
	// them absorbs the new connections and the growth reads as nothing (or less).
	perConn := make([]string, len(paths))
	for i, p := range paths {
		perConn[i] = "-"
		if p.pid != 0 && t.has("memory") {
			bytes, err := b.idleMemory(p.pid, p.sink, idle)
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			perConn[i] = fmt.Sprint(bytes)
		}
	}
	for round := range rounds {
		for i, p := range paths {
			r := &results[i]
			var line []string
			if t.has("iperf") {
				cpu0 := cpuSeconds(p.pid)
				gbps, err := b.iperf(p.iperf)
				if err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
				cpuPerGB := (cpuSeconds(p.pid) - cpu0) / (gbps / 8 * b.seconds.Seconds())
				r.gbps, r.cpuPerGB = append(r.gbps, gbps), append(r.cpuPerGB, cpuPerGB)
				line = append(line, fmt.Sprintf("%.2f Gbit/s (%.2f CPU s/GB)", gbps, cpuPerGB))
			}
			if t.has("keepalive") {
				p50, p99, rps, err := b.wrk(p.http, 1, false)
				if err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
				r.p50, r.p99, r.rps = append(r.p50, p50), append(r.p99, p99), append(r.rps, rps)
				line = append(line, fmt.Sprintf("1 conn p50 %.3f ms p99 %.3f ms %.0f req/s", p50, p99, rps))
			}
			if t.has("connect") {
				cpu0 := cpuSeconds(p.pid)
				_, cp99, cps, err := b.wrk(p.http, 32, true)
				if err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
				cpuPerConn := (cpuSeconds(p.pid) - cpu0) / (cps * b.seconds.Seconds()) * 1e6
				r.cps, r.cp99, r.cpuPerConn = append(r.cps, cps), append(r.cp99, cp99), append(r.cpuPerConn, cpuPerConn)
				line = append(line, fmt.Sprintf("%.0f conn/s (p99 %.2f ms, %.0f CPU µs/conn)", cps, cp99, cpuPerConn))
			}
			if t.has("latency") {
				ka, err := b.loadgen(p.http, b.rateKeepAlive, false)
				if err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
				nc, err := b.loadgen(p.http, b.rateConnect, true)
				if err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
				r.kaRate, r.connRate = append(r.kaRate, ka), append(r.connRate, nc)
				line = append(line, fmt.Sprintf("fixed rate p50/p99/p99.9 keep-alive %.3f/%.3f/%.3f ms, new conn %.3f/%.3f/%.3f ms",
					ka.P50, ka.P99, ka.P999, nc.P50, nc.P99, nc.P999))
			}
			fmt.Fprintf(os.Stderr, "round %d %s (load %s): %s\n", round+1, p.name, loadAverage(), strings.Join(line, ", "))
		}
	}
	fmt.Printf("%-10s %7s %8s %14s %8s %8s %8s %8s %16s %16s %10s\n", "path", "Gbit/s", "CPU s/GB", "1 conn p50/p99",
		"req/s", "conn/s", "conn p99", "µs/conn", "ka fixed p50/p99", "new fixed p50/p99", "B/idle")
	for i, p := range paths {
		r := results[i]
		ka, nc := medianLatency(r.kaRate), medianLatency(r.connRate)
		fmt.Printf("%-10s %7.2f %8.2f %14s %8.0f %8.0f %8.2f %8.0f %16s %16s %10s\n", p.name, median(r.gbps), median(r.cpuPerGB),
			fmt.Sprintf("%.3f/%.3f", median(r.p50), median(r.p99)), median(r.rps), median(r.cps), median(r.cp99), median(r.cpuPerConn),
			fmt.Sprintf("%.3f/%.3f", ka.P50, ka.P99), fmt.Sprintf("%.3f/%.3f", nc.P50, nc.P99), perConn[i])
	}
	if t.has("latency") && len(paths) > 1 && paths[0].name == "direct" {
		fmt.Printf("added latency at a fixed rate (%d req/s on %d keep-alive connections; %d new connections/s), median over rounds of each round's figure:\n",
			b.rateKeepAlive, keepAliveConns, b.rateConnect)
		base := results[0]
		for i, p := range paths[1:] {
			r := results[i+1]
			fmt.Printf("  %-10s keep-alive p50 %+.3f ms p99 %+.3f ms p99.9 %+.3f ms; new conn p50 %+.3f ms p99 %+.3f ms p99.9 %+.3f ms\n", p.name,
				addedLatency(r.kaRate, base.kaRate, func(l latencyResult) float64 { return l.P50 }),
				addedLatency(r.kaRate, base.kaRate, func(l latencyResult) float64 { return l.P99 }),
				addedLatency(r.kaRate, base.kaRate, func(l latencyResult) float64 { return l.P999 }),
				addedLatency(r.connRate, base.connRate, func(l latencyResult) float64 { return l.P50 }),
				addedLatency(r.connRate, base.connRate, func(l latencyResult) float64 { return l.P99 }),
				addedLatency(r.connRate, base.connRate, func(l latencyResult) float64 { return l.P999 }))
		}
	}
	fmt.Printf("load average at the end: %s\n", loadAverage())
	return nil
}

// medianLatency is the round whose p99 is the median one.
func medianLatency(v []latencyResult) latencyResult {
	if len(v) == 0 {
		return latencyResult{}
	}
	s := slices.Clone(v)
	slices.SortFunc(s, func(a, b latencyResult) int { return cmp.Compare(a.P99, b.P99) })
	return s[len(s)/2]
}

// addedLatency is the median over rounds of a path's figure minus the direct path's in the
// same round: rounds interleave the paths, so each difference compares like with like.
func addedLatency(path, direct []latencyResult, f func(latencyResult) float64) float64 {
	var d []float64
	for i := range min(len(path), len(direct)) {
		d = append(d, f(path[i])-f(direct[i]))
	}
	return median(d)
}

func loadAverage() string {
	raw, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func haproxyConfig(n1 netip.Addr, httpA, httpB, iperf, sink netip.AddrPort) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n\n")
	fmt.Fprintf(&b, "listen http\n  bind %s:%d\n  balance roundrobin\n  server a %s\n  server b %s\n\n", n1, haproxyPort, httpA, httpB)
	fmt.Fprintf(&b, "listen iperf\n  bind %s:%d\n  server a %s\n\n", n1, haproxyPort+2, iperf)
	fmt.Fprintf(&b, "listen sink\n  bind %s:%d\n  server a %s\n", n1, haproxyPort+4, sink)
	return b.String()
}

// start runs a process inside member's namespace; with ready, waits for that line on stdout.
func (b *bench) start(member, ready, name string, args ...string) (*exec.Cmd, error) {
	cmd := b.topo.Command(context.Background(), member, name, args...)
	host, _ := os.Readlink("/proc/self/ns/net")
	cmd.Env = append(os.Environ(), hostNSEnv+"="+host)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	_ = stdin // held open: our proxy stops when it closes
	var out io.Reader
	if ready != "" {
		out, _ = cmd.StdoutPipe()
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s in %s: %w", name, member, err)
	}
	b.procs = append(b.procs, cmd)
	if ready != "" {
		buf := make([]byte, len(ready)+1)
		if _, err := io.ReadFull(out, buf); err != nil || strings.TrimSpace(string(buf)) != ready {
			return nil, fmt.Errorf("%s did not start: %q %v", name, buf, err)
		}
	}
	return cmd, nil
}

func (b *bench) stopAll() {
	for _, c := range b.procs {
		if c.Process != nil {
			c.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, c := range b.procs {
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			c.Process.Kill()
		}
	}
	b.procs = nil
}

func (b *bench) output(member string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), b.seconds+30*time.Second)
	defer cancel()
	out, err := b.topo.Command(ctx, member, name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (b *bench) iperf(target netip.AddrPort) (float64, error) {
	out, err := b.output(ext, "iperf3", "-c", target.Addr().String(), "-p", fmt.Sprint(target.Port()),
		"-t", fmt.Sprint(int(b.seconds.Seconds())), "-J")
	if err != nil {
		return 0, err
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return 0, fmt.Errorf("parsing iperf3 output: %w", err)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

var (
	p50Line = regexp.MustCompile(`(?m)^\s+50%\s+(\S+)`)
	p99Line = regexp.MustCompile(`(?m)^\s+99%\s+(\S+)`)
	rpsLine = regexp.MustCompile(`(?m)^Requests/sec:\s+(\S+)`)
)

func (b *bench) wrk(target netip.AddrPort, conns int, closeEach bool) (p50, p99, rps float64, err error) {
	args := []string{"-t", fmt.Sprint(min(conns, 2)), "-c", fmt.Sprint(conns), "-d", fmt.Sprintf("%ds", int(b.seconds.Seconds())), "--latency"}
	if closeEach {
		args = append(args, "-H", "Connection: close")
	}
	out, err := b.output(ext, "wrk", append(args, "http://"+target.String()+"/")...)
	if err != nil {
		return 0, 0, 0, err
	}
	m50, m99, r := p50Line.FindStringSubmatch(out), p99Line.FindStringSubmatch(out), rpsLine.FindStringSubmatch(out)
	if m50 == nil || m99 == nil || r == nil {
		return 0, 0, 0, fmt.Errorf("parsing wrk output:\n%s", out)
	}
	rps, _ = strconv.ParseFloat(r[1], 64)
	return millis(m50[1]), millis(m99[1]), rps, nil
}

// keepAliveConns carry the fixed-rate keep-alive run; new connections get 32 workers.
const keepAliveConns = 8

// loadgen runs the fixed-rate generator (loadgen.go) in the client namespace.
func (b *bench) loadgen(target netip.AddrPort, rate int, newConn bool) (latencyResult, error) {
	exe, _ := os.Executable()
	conns := keepAliveConns
	if newConn {
		conns = 32
	}
	out, err := b.output(ext, exe, "loadgen", "-target", target.String(), "-rate", fmt.Sprint(rate),
		"-duration", b.seconds.String(), "-conns", fmt.Sprint(conns), fmt.Sprintf("-new-conn=%t", newConn))
	if err != nil {
		return latencyResult{}, err
	}
	var r latencyResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return r, fmt.Errorf("parsing loadgen output %q: %w", out, err)
	}
	if r.Failed > 0 {
		return r, fmt.Errorf("loadgen: %d of %d requests failed", r.Failed, r.Sent)
	}
	return r, nil
}

// millis converts wrk's latency ("812.00us", "1.23ms", "2.01s") to milliseconds.
func millis(s string) float64 {
	for _, u := range []struct {
		suffix string
		scale  float64
	}{{"us", 1e-3}, {"ms", 1}, {"s", 1e3}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f * u.scale
		}
	}
	return 0
}

// idleMemory opens n connections through the proxy with pid and returns its RSS growth per
// connection, in bytes.
func (b *bench) idleMemory(pid int, target netip.AddrPort, n int) (int, error) {
	before, err := rss(pid)
	if err != nil {
		return 0, err
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := b.topo.Dial(context.Background(), ext, "tcp", target.String())
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
	}
	time.Sleep(2 * time.Second)
	after, err := rss(pid)
	if err != nil {
		return 0, err
	}
	return (after - before) / n, nil
}

func rss(pid int) (int, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// cpuSeconds is the user+system CPU time of pid (0 for no process: the direct path).
func cpuSeconds(pid int) float64 {
	if pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are the 12th and 13th.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

func numCPU() int {
	raw, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(raw), "processor\t:")
}
