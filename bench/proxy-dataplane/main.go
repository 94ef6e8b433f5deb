// Command proxy-dataplane measures what the nftables proxy costs a packet, in a sandbox that
// bench/proxy-dataplane/run.sh brings up (`svcplane sandbox up --agent --proxy-mode nftables`,
// two nodes) and takes down:
//
//   - single-stream TCP throughput (iperf3) from a client Pod on node1 to a backend Pod on node2,
//     through the backend's ClusterIP and to the Pod's own address, interleaved, median of
//     -rounds, with the CPU both iperf3 processes spent per GB. Both paths take the same route
//     (client Pod → node1, forwarded → node2 → backend Pod); a client Pod is not masqueraded,
//     so the only difference is node1's DNAT.
//   - connect() latency: a probe inside the client Pod (SCHED_FIFO unless -realtime=false)
//     opens fresh TCP connections, alternating in blocks of 10 between the ClusterIP and the
//     Pod address, and times each blocking connect() (SYN → SYN-ACK, the first packet through
//     the DNAT rules); p50/p99 per path.
//
// Both are measured with 10 Services, then again after -services Services (selector-less, each
// with a hand-made EndpointSlice of -endpoints addresses in the unused upper half of the
// cluster CIDR) exist and node1's proxy has put them all into its @service-ips map.
//
//	sudo bench/proxy-dataplane/run.sh [services] [rounds] [seconds]
//
// The probe subcommand runs inside the client Pod's network namespace and refuses to run in
// the namespace of the command that started it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	agentruntime "github.com/svcplane/svcplane/pkg/agent/runtime"
	"github.com/svcplane/svcplane/pkg/sandbox"
)

const (
	hostNSEnv   = "PDPBENCH_HOST_NS"
	benchNS     = "default"
	fillNS      = "fill"
	iperfPort   = 5201
	connectPort = 8080
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "probe" {
		if err := runProbe(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "the sandbox's kubeconfig")
	flag.StringVar(&o.sandbox, "sandbox", "", "the sandbox's name (to find the client Pod's namespace and node1)")
	flag.StringVar(&o.svcplane, "svcplane", "svcplane", "svcplane binary, for `sandbox exec`")
	flag.IntVar(&o.services, "services", 30000, "Services for the large measurement")
	flag.IntVar(&o.endpoints, "endpoints", 1, "endpoints in each filler Service's EndpointSlice")
	flag.IntVar(&o.writers, "writers", 32, "concurrent API writers creating the filler Services")
	flag.IntVar(&o.rounds, "rounds", 7, "iperf3 rounds per path and scale; figures are medians")
	flag.IntVar(&o.seconds, "seconds", 4, "seconds per iperf3 run (after 1 s that is not counted)")
	flag.IntVar(&o.connects, "connects", 10000, "timed connects per path and scale")
	flag.Float64Var(&o.settleLoad, "settle-load", 1.5, "before measuring at each scale, wait until the 1-minute load average is at most this")
	flag.DurationVar(&o.settleMax, "settle-max", 4*time.Minute, "but no longer than this")
	flag.BoolVar(&o.realtime, "realtime", true, "run the connect probe SCHED_FIFO (chrt), so other processes do not set its p99")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

type options struct {
	kubeconfig, sandbox, svcplane string
	services, endpoints, writers  int
	rounds, seconds, connects     int
	realtime                      bool
	settleLoad                    float64
	settleMax                     time.Duration
}

type bench struct {
	options
	client   kubernetes.Interface
	podNetNS string // /proc/<pid>/ns/net of the client Pod's holder process
	self     string // this program, for the probe
	hostNS   string
}

// scaleResult is everything measured at one number of Services.
type scaleResult struct {
	services, programmed int
	load                 string
	gbps, cpuPerGB       map[string][]float64
	connect              map[string][]float64 // µs
}

func run(o options) error {
	if o.kubeconfig == "" || o.sandbox == "" {
		return errors.New("-kubeconfig and -sandbox are required (bench/proxy-dataplane/run.sh sets them)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = -1, 0 // creating Services fast is part of the job
	b := &bench{options: o, client: kubernetes.NewForConfigOrDie(cfg)}
	b.self, _ = os.Executable()
	b.hostNS, _ = os.Readlink("/proc/self/ns/net")
	ctx := context.Background()

	podIP, clusterIP, err := b.startPods(ctx)
	if err != nil {
		return err
	}
	paths := []struct{ name, addr string }{{"direct", podIP}, {"clusterip", clusterIP}}

	var results []*scaleResult
	for _, target := range []int{10, o.services} {
		existing, err := b.countServices(ctx)
		if err != nil {
			return err
		}
		if missing := target - existing; missing > 0 {
			start := time.Now()
			created, err := b.createFillers(ctx, existing, missing)
			if err != nil {
				return err
			}
			elapsed := time.Since(start)
			fmt.Printf("created %d Services + EndpointSlices in %.1f s (%.0f Services/s, %.0f objects/s), load %s\n",
				created, elapsed.Seconds(), float64(created)/elapsed.Seconds(), 2*float64(created)/elapsed.Seconds(), loadavg())
		}
		want, err := b.wantedServiceIPs(ctx)
		if err != nil {
			return err
		}
		start := time.Now()
		programmed, err := b.waitProgrammed(want, 5*time.Minute)
		if err != nil {
			return err
		}
		fmt.Printf("node1's @service-ips holds %d elements (%d wanted), %.1f s after the last create\n", programmed, want, time.Since(start).Seconds())
		settle(o.settleLoad, o.settleMax)
		r := &scaleResult{services: target, programmed: programmed, load: loadavg(),
			gbps: map[string][]float64{}, cpuPerGB: map[string][]float64{}, connect: map[string][]float64{}}
		for round := range o.rounds {
			order := slices.Clone(paths)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, p := range order {
				g, c, err := b.iperf(p.addr)
				// The iperf3 server may still be closing the previous test on a busy machine.
				for try := 0; err != nil && strings.Contains(err.Error(), "busy") && try < 10; try++ {
					time.Sleep(time.Second)
					g, c, err = b.iperf(p.addr)
				}
				if err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
				r.gbps[p.name] = append(r.gbps[p.name], g)
				r.cpuPerGB[p.name] = append(r.cpuPerGB[p.name], c)
				fmt.Fprintf(os.Stderr, "%d Services, round %d, %s: %.2f Gbit/s, %.3f CPU s/GB\n", target, round+1, p.name, g, c)
			}
		}
		lat, err := b.probe(podIP, clusterIP)
		if err != nil {
			return err
		}
		r.connect["direct"], r.connect["clusterip"] = lat[0], lat[1]
		r.load += " → " + loadavg()
		fmt.Fprintf(os.Stderr, "%d Services: connect p50/p99 direct %.1f/%.1f µs, ClusterIP %.1f/%.1f µs\n", target,
			percentile(lat[0], 50), percentile(lat[0], 99), percentile(lat[1], 50), percentile(lat[1], 99))
		results = append(results, r)
	}
	printSummary(results, o)
	return nil
}

// startPods creates the client Pod (node1) and the backend Pod (node2: iperf3 server and the
// test server, whose listener accepts the probe's connections) and a ClusterIP Service for the
// backend; it returns the backend's Pod address and ClusterIP once both Pods run and the
// client's network namespace is found.
func (b *bench) startPods(ctx context.Context) (podIP, clusterIP string, err error) {
	onNode := func(n string) map[string]string { return map[string]string{"kubernetes.io/hostname": n} }
	podSpecs := []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "pdp-client"}, Spec: corev1.PodSpec{NodeSelector: onNode("node1"),
			Containers: []corev1.Container{{Name: "idle", Image: "debian", Command: []string{"sleep", "infinity"}}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "pdp-backend", Labels: map[string]string{"app": "pdp-backend"}}, Spec: corev1.PodSpec{NodeSelector: onNode("node2"),
			Containers: []corev1.Container{
				{Name: "iperf3", Image: "debian", Command: []string{"iperf3", "-s", "-p", strconv.Itoa(iperfPort)}},
				{Name: "accept", Image: "svcplane/testserver", Args: []string{"--port", strconv.Itoa(connectPort)}},
			}}},
	}
	for _, p := range podSpecs {
		if _, err := b.client.CoreV1().Pods(benchNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return "", "", err
		}
	}
	svc, err := b.client.CoreV1().Services(benchNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "pdp-backend"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "pdp-backend"}, Ports: []corev1.ServicePort{
			{Name: "iperf", Port: iperfPort, TargetPort: intstr.FromInt32(iperfPort)},
			{Name: "connect", Port: connectPort, TargetPort: intstr.FromInt32(connectPort)},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", "", err
	}
	var client *corev1.Pod
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		c, err1 := b.client.CoreV1().Pods(benchNS).Get(ctx, "pdp-client", metav1.GetOptions{})
		s, err2 := b.client.CoreV1().Pods(benchNS).Get(ctx, "pdp-backend", metav1.GetOptions{})
		if err1 == nil && err2 == nil && running(c) && running(s) && s.Status.PodIP != "" {
			client, podIP = c, s.Status.PodIP
			break
		}
		if time.Now().After(deadline) {
			return "", "", fmt.Errorf("the benchmark Pods did not run within 60 s (%v, %v)", err1, err2)
		}
	}
	b.podNetNS, err = b.clientNetNS(client)
	if err != nil {
		return "", "", err
	}
	fmt.Printf("client Pod %s on node1, backend Pod %s on node2, ClusterIP %s\n", client.Status.PodIP, podIP, svc.Spec.ClusterIP)
	return podIP, svc.Spec.ClusterIP, nil
}

func running(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Running == nil {
			return false
		}
	}
	return len(p.Status.ContainerStatuses) == len(p.Spec.Containers)
}

// clientNetNS finds the client Pod's network namespace through the agent's record of the
// process that holds it, checked to still be that process (pid and start time).
func (b *bench) clientNetNS(p *corev1.Pod) (string, error) {
	path := filepath.Join(sandbox.AgentDataDir(sandbox.StateDir(b.sandbox), 1), "pods", string(p.UID), "state.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	// Only the holder's pid and start time are read from the agent's per-Pod record.
	var rec struct {
		Pause agentruntime.Proc `json:"pause"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if !rec.Pause.Alive() {
		return "", fmt.Errorf("the client Pod's namespace holder (pid %d) is gone", rec.Pause.PID)
	}
	ns := fmt.Sprintf("/proc/%d/ns/net", rec.Pause.PID)
	if target, _ := os.Readlink(ns); target == b.hostNS || target == "" {
		return "", fmt.Errorf("%s is not a Pod's own network namespace", ns)
	}
	return ns, nil
}

// inPod runs a command inside the client Pod's network namespace.
func (b *bench) inPod(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + b.podNetNS, "--", name}, args...)...)
	cmd.Env = append(os.Environ(), hostNSEnv+"="+b.hostNS)
	cmd.Stderr = os.Stderr
	return cmd
}

// iperf returns the received rate in Gbit/s and the CPU both iperf3 processes used per GB
// received (their user+system time, which includes the network stack's work done in their
// context): a figure that, unlike the rate, does not shrink when other processes take CPU.
func (b *bench) iperf(addr string) (gbps, cpuPerGB float64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(b.seconds+30)*time.Second)
	defer cancel()
	out, err := b.inPod(ctx, "iperf3", "-c", addr, "-p", strconv.Itoa(iperfPort), "-O", "1", "-t", strconv.Itoa(b.seconds), "-J").Output()
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				Seconds       float64 `json:"seconds"`
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				Host   float64 `json:"host_total"`
				Remote float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(out, &r); jerr != nil || r.Error != "" || err != nil {
		return 0, 0, fmt.Errorf("iperf3 to %s: %v %s %v", addr, err, r.Error, jerr)
	}
	recv, cpu := r.End.SumReceived, r.End.CPU
	return recv.BitsPerSecond / 1e9, (cpu.Host + cpu.Remote) / 100 * recv.Seconds / (recv.Bytes / 1e9), nil
}

// probe runs the connect probe in the client Pod against both addresses.
func (b *bench) probe(podIP, clusterIP string) ([][]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	port := strconv.Itoa(connectPort)
	args := []string{b.self, "probe", "-n", strconv.Itoa(b.connects), "-target", podIP + ":" + port, "-target", clusterIP + ":" + port}
	if b.realtime {
		// A shared machine's other processes would otherwise decide the p99 (a preempted
		// connect() waits a scheduler tick). Everything a connect does — the SYN through both
		// nodes, the SYN-ACK back — runs in the probe's own context (softirqs of the veth
		// sends), so a real-time probe is not delayed by others, only by the data path.
		args = append([]string{"chrt", "--fifo", "10"}, args...)
	}
	out, err := b.inPod(ctx, args[0], args[1:]...).Output()
	if err != nil {
		return nil, fmt.Errorf("connect probe: %w", err)
	}
	var lat [][]float64
	if err := json.Unmarshal(out, &lat); err != nil || len(lat) != 2 {
		return nil, fmt.Errorf("connect probe output: %v", err)
	}
	return lat, nil
}

// runProbe times -n blocking connect() calls per target, in blocks of -block alternating
// between the targets (so both see the same machine), after -warmup untimed ones each. Each
// connection is closed with a reset: no TIME_WAIT piles up, and if a later connection reuses
// the port, conntrack drops the reset entry and NATs the new SYN afresh. Prints the
// latencies in µs as JSON, one array per target.
func runProbe(args []string) error {
	self, err := os.Readlink("/proc/self/ns/net")
	if host := os.Getenv(hostNSEnv); err != nil || host == "" || self == host {
		return errors.New("refusing to run outside the client Pod's namespace")
	}
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	n := fs.Int("n", 10000, "timed connects per target")
	block := fs.Int("block", 10, "connects to one target before switching")
	warmup := fs.Int("warmup", 500, "untimed connects per target first")
	var targets []netip.AddrPort
	fs.Func("target", "address:port (repeatable)", func(s string) error {
		ap, err := netip.ParseAddrPort(s)
		targets = append(targets, ap)
		return err
	})
	fs.Parse(args)
	// One OS thread for the whole run: the blocking connect() is timed on the thread that
	// makes it, without the Go scheduler or netpoller in between.
	runtime.LockOSThread()
	lat := make([][]float64, len(targets))
	for i, t := range targets {
		for range *warmup {
			if _, err := connectOnce(t); err != nil {
				return err
			}
		}
		lat[i] = make([]float64, 0, *n)
	}
	for done := 0; done < *n; done += *block {
		for i, t := range targets {
			for range min(*block, *n-done) {
				d, err := connectOnce(t)
				if err != nil {
					return err
				}
				lat[i] = append(lat[i], float64(d.Nanoseconds())/1e3)
			}
		}
	}
	return json.NewEncoder(os.Stdout).Encode(lat)
}

func connectOnce(target netip.AddrPort) (time.Duration, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrInet4{Port: int(target.Port()), Addr: target.Addr().As4()}
	start := time.Now()
	if err := unix.Connect(fd, sa); err != nil {
		return 0, fmt.Errorf("connect %s: %w", target, err)
	}
	d := time.Since(start)
	return d, unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}

func (b *bench) countServices(ctx context.Context) (int, error) {
	list, err := b.client.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	return len(list.Items), nil
}

// wantedServiceIPs is the number of @service-ips elements node1 should hold: one per
// ClusterIP Service port whose Service has endpoints (here, every Service's).
func (b *bench) wantedServiceIPs(ctx context.Context) (int, error) {
	list, err := b.client.CoreV1().Services(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range list.Items {
		if s.Spec.ClusterIP != "" && s.Spec.ClusterIP != corev1.ClusterIPNone {
			n += len(s.Spec.Ports)
		}
	}
	return n, nil
}

// createFillers creates n selector-less Services, fill-<first>…, each with one EndpointSlice
// of b.endpoints ready addresses in 10.244.128.0/17 (no node's pod range: never dialled).
func (b *bench) createFillers(ctx context.Context, first, n int) (int, error) {
	if _, err := b.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fillNS}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return 0, err
	}
	var next, created atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range b.writers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := b.createFiller(ctx, first+i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				if c := created.Add(1); c%5000 == 0 {
					fmt.Fprintf(os.Stderr, "  %d Services created, load %s\n", c, loadavg())
				}
			}
		})
	}
	wg.Wait()
	return int(created.Load()), firstErr
}

func (b *bench) createFiller(ctx context.Context, i int) error {
	name := fmt.Sprintf("fill-%05d", i)
	_, err := b.client.CoreV1().Services(fillNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating Service %s: %w", name, err)
	}
	var eps []discoveryv1.Endpoint
	for e := range b.endpoints {
		// Host number k in 10.244.128.0/17, skipping .0 and .255 of each /24.
		k := i*b.endpoints + e
		addr := fmt.Sprintf("10.244.%d.%d", 128+k/254, 1+k%254)
		eps = append(eps, discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	_, err = b.client.DiscoveryV1().EndpointSlices(fillNS).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "proxy-dataplane-bench"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To[int32](80), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating EndpointSlice of %s: %w", name, err)
	}
	return nil
}

// waitProgrammed polls the size of node1's @service-ips map (nft, run inside node1) until it
// holds want elements.
func (b *bench) waitProgrammed(want int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		got, err := b.serviceIPElements()
		if err == nil && got >= want {
			return got, nil
		}
		if time.Now().After(deadline) {
			return got, fmt.Errorf("node1's proxy programmed %d of %d Service ports within %v (%v)", got, want, timeout, err)
		}
		time.Sleep(time.Second)
	}
}

func (b *bench) serviceIPElements() (int, error) {
	out, err := exec.Command(b.svcplane, "sandbox", "exec", "--name", b.sandbox, "node1", "--",
		"nft", "-j", "list", "map", "ip", "svcplane", "service-ips").Output()
	if err != nil {
		return 0, fmt.Errorf("nft list map in node1: %w", err)
	}
	var doc struct {
		Nftables []struct {
			Map *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"map"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return 0, err
	}
	for _, o := range doc.Nftables {
		if o.Map != nil {
			return len(o.Map.Elem), nil
		}
	}
	return 0, errors.New("no map in nft's output")
}

// settle waits until the machine is about as quiet at one scale as at the other: creating
// 30,000 Services leaves the API server, the controllers and every node's proxy busy for a while
// after the last element is programmed, and a probe run then measures them, not the rules.
func settle(maxLoad float64, limit time.Duration) {
	start := time.Now()
	for {
		l, err := strconv.ParseFloat(loadavg(), 64)
		if err != nil || l <= maxLoad || time.Since(start) >= limit {
			fmt.Printf("settled for %.0f s: load %s (waiting for ≤ %.1f, at most %v)\n", time.Since(start).Seconds(), loadavg(), maxLoad, limit)
			return
		}
		time.Sleep(5 * time.Second)
	}
}

func loadavg() string {
	raw, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(raw)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}

func median(v []float64) float64 { return percentile(v, 50) }

func printSummary(results []*scaleResult, o options) {
	host, _ := os.Hostname()
	fmt.Printf("\n%s, %s, %d CPUs; iperf3 -t %d (+1 s omitted), median of %d rounds; %d connects per path, blocks of 10 interleaved, probe SCHED_FIFO %v\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), o.seconds, o.rounds, o.connects, o.realtime)
	fmt.Println("| Services (@service-ips elements) | load 1 min | direct Gbit/s | ClusterIP Gbit/s | ClusterIP/direct, median of per-round ratios | CPU s/GB direct / ClusterIP | direct connect p50 / p99 µs | ClusterIP connect p50 / p99 µs | ClusterIP/direct p99 |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		// Each round ran both paths back to back: their ratio is steadier than the ratio of
		// two medians when the machine's load drifts.
		var ratios []float64
		for i := range min(len(r.gbps["direct"]), len(r.gbps["clusterip"])) {
			ratios = append(ratios, r.gbps["clusterip"][i]/r.gbps["direct"][i])
		}
		dp99, cp99 := percentile(r.connect["direct"], 99), percentile(r.connect["clusterip"], 99)
		fmt.Printf("| %d (%d) | %s | %.2f | %.2f | %.1f%% | %.3f / %.3f | %.1f / %.1f | %.1f / %.1f | %.2f |\n", r.services, r.programmed, r.load,
			median(r.gbps["direct"]), median(r.gbps["clusterip"]), 100*median(ratios),
			median(r.cpuPerGB["direct"]), median(r.cpuPerGB["clusterip"]),
			percentile(r.connect["direct"], 50), dp99, percentile(r.connect["clusterip"], 50), cp99, cp99/dp99)
	}
	if len(results) == 2 {
		small, large := results[0].connect["clusterip"], results[1].connect["clusterip"]
		dSmall, dLarge := results[0].connect["direct"], results[1].connect["direct"]
		fmt.Printf("\nClusterIP connect p99 at %d Services / at %d: %.2f (p50: %.2f); bar ≤ 1.10\n", results[1].services, results[0].services,
			percentile(large, 99)/percentile(small, 99), percentile(large, 50)/percentile(small, 50))
		// The direct path crosses the same hooks and lookups (a miss in @service-ips), so its
		// own change between the two scales is the machine's, not the Service count's.
		fmt.Printf("the same for the direct path (the machine's drift): p99 %.2f, p50 %.2f\n",
			percentile(dLarge, 99)/percentile(dSmall, 99), percentile(dLarge, 50)/percentile(dSmall, 50))
	}
}
