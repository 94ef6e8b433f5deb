// Command loadbalancer measures LoadBalancer Services in a sandbox (issue 11), from the outside
// client's side (the sandbox's ext namespace, which reaches the addresses through ARP only):
//
//   - apply → first connection: `kubectl apply` of a LoadBalancer Service, timed from the start
//     of kubectl to the first HTTP answer from ext at its address (the bar: under 1 s
//     median), after one uncounted apply that fills kubectl's discovery cache;
//   - fail-over: the agent of the node announcing an address is stopped (SIGTERM and SIGKILL in
//     turn), timed until ext's neighbour cache names the other node and a connection through it
//     works (the bar: under 2 s); the agent is then restarted and takes its address
//     back, also timed.
//
// bench/loadbalancer.sh builds a two-node sandbox and runs it; it needs root (namespaces).
package main

import (
	"bufio"
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
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcplane/svcplane/pkg/agent/announce"
	"github.com/svcplane/svcplane/pkg/sandbox"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

func main() {
	name := flag.String("name", "", "sandbox name (two nodes, agents running)")
	services := flag.Int("services", 10, "LoadBalancer Services applied one after another for the apply → first connection figure")
	failovers := flag.Int("failovers", 6, "fail-over rounds, SIGTERM and SIGKILL in turn")
	flag.Parse()
	b, err := os.ReadFile(filepath.Join(sandbox.StateDir(*name), "state.json"))
	must(err)
	var st sandbox.State
	must(json.Unmarshal(b, &st))
	cfg, err := clientcmd.BuildConfigFromFlags("", st.Kubeconfig)
	must(err)
	client := kubernetes.NewForConfigOrDie(cfg)
	r := &run{st: &st, client: client, ext: topology.NamespaceName(*name, topology.MemberExternal), agents: map[string]sandbox.Process{}}
	for _, p := range st.Processes {
		if p.Role == "agent" {
			r.agents[p.Member] = p
		}
	}
	for _, pod := range []string{"web-1", "web-2"} {
		_, err := client.CoreV1().Pods("default").Create(context.Background(), testServerPod(pod), metav1.CreateOptions{})
		must(err)
	}
	r.waitPodsReady()

	// Not counted: kubectl's first run against a new server fills its discovery cache (a
	// dozen requests), which says nothing about Services.
	r.applyAndReach("warm-up", netip.MustParseAddr("10.251.0.99"))
	var took []time.Duration
	for i := range *services {
		ip := netip.AddrFrom4([4]byte{10, 251, 0, byte(100 + i)})
		took = append(took, r.applyAndReach(fmt.Sprintf("lb-%d", i), ip))
	}
	report(fmt.Sprintf("kubectl apply → first answer from ext, %d Services one at a time", len(took)), took)

	if *failovers > 0 {
		r.failOvers(*failovers)
	}
}

type run struct {
	st     *sandbox.State
	client kubernetes.Interface
	ext    string
	// agents are the node agents by member, their PIDs updated on restarts.
	agents map[string]sandbox.Process
}

func (r *run) applyAndReach(name string, ip netip.Addr) time.Duration {
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %s
  annotations: {svcplane.io/load-balancer-ips: %s}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`, name, ip)
	start := time.Now()
	cmd := exec.Command("kubectl", "apply", "-f", "-")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+r.st.Kubeconfig)
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		fail("kubectl apply: %v\n%s", err, out)
	}
	for time.Since(start) < 30*time.Second {
		if r.reach(ip) {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fail("ext never reached %s at %s", name, ip)
	return 0
}

func (r *run) failOvers(rounds int) {
	ip := netip.MustParseAddr("10.251.0.250")
	r.applyAndReach("failover", ip)
	macs, nodeOfMAC := map[string]string{}, map[string]string{}
	for member := range r.agents {
		must(topology.Do(topology.NamespaceName(r.st.Name, member), func() error {
			iface, err := net.InterfaceByName(topology.UplinkName)
			if err == nil {
				macs[member] = iface.HardwareAddr.String()
				nodeOfMAC[iface.HardwareAddr.String()] = member
			}
			return err
		}))
	}
	// The node every agent chooses once all announce; until the last one has started, another
	// may hold the address.
	svc, err := r.client.CoreV1().Services("default").Get(context.Background(), "failover", metav1.GetOptions{})
	must(err)
	var members []string
	for m := range r.agents {
		members = append(members, m)
	}
	owner := announce.Assignments(announce.State{Services: []*corev1.Service{svc}, ReadyNodes: members})[ip]
	r.until(10*time.Second, func() bool { return r.neighbour(ip) == macs[owner] && r.reach(ip) })
	gaps := map[syscall.Signal][]time.Duration{}
	var backs []time.Duration
	for i := range rounds {
		sig := []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}[i%2]
		if got := nodeOfMAC[r.announcer(ip)]; got != owner {
			fail("%s answers ARP for %s, want the chosen %s", got, ip, owner)
		}
		var other string
		for m := range r.agents {
			if m != owner {
				other = m
			}
		}
		args := r.argv(owner)
		load := loadAverage()
		pid := r.agents[owner].PID
		must(syscall.Kill(pid, sig)) // the agent alone: its Pods keep running
		gap := r.until(10*time.Second, func() bool { return r.neighbour(ip) == macs[other] && r.reach(ip) })
		gaps[sig] = append(gaps[sig], gap)
		fmt.Printf("  round %d: %s to %s's agent: ext reaches %s through %s %v later (load %s)\n",
			i+1, signalName(sig), owner, ip, other, gap.Round(time.Millisecond), load)
		r.until(10*time.Second, func() bool {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			return err != nil || strings.Contains(string(b), ") Z ")
		})
		r.restart(owner, args)
		backs = append(backs, r.until(60*time.Second, func() bool { return r.neighbour(ip) == macs[owner] && r.reach(ip) }))
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if len(gaps[sig]) > 0 {
			report(fmt.Sprintf("fail-over after %s to the announcing agent (signal → ext reaches the address through the other node)", signalName(sig)), gaps[sig])
		}
	}
	report("fail-back: restarted agent start → it announces its address again (agent start-up included)", backs)
}

// until polls cond and returns how long it took to hold; it exits the program after within.
func (r *run) until(within time.Duration, cond func() bool) time.Duration {
	start := time.Now()
	for time.Since(start) < within {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	fail("timed out after %v", within)
	return 0
}

// reach asks the test server behind ip:80 for its name from ext; one try, a short dial timeout
// so that a SYN lost to the old path is retried by the caller rather than by TCP's back-off.
func (r *run) reach(ip netip.Addr) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	conn, err := topology.Dial(ctx, r.ext, "tcp", net.JoinHostPort(ip.String(), "80"))
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := fmt.Fprintf(conn, "GET /hostname HTTP/1.0\r\nHost: %s\r\n\r\n", ip); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strings.HasPrefix(string(body), "web-")
}

// announcer is the MAC of the one node answering ext's ARP for ip.
func (r *run) announcer(ip netip.Addr) string {
	var answers []net.HardwareAddr
	must(topology.Do(r.ext, func() error {
		var err error
		answers, err = announce.Query(context.Background(), topology.UplinkName, topology.ExternalAddr, ip, 300*time.Millisecond)
		return err
	}))
	if len(answers) != 1 {
		fail("ARP for %s from ext: answers %v, want exactly one", ip, answers)
	}
	return answers[0].String()
}

// neighbour is the MAC ext's kernel caches for ip.
func (r *run) neighbour(ip netip.Addr) string {
	var mac string
	must(topology.Do(r.ext, func() error {
		neighs, err := netlink.NeighList(0, netlink.FAMILY_V4)
		for _, n := range neighs {
			if n.IP.Equal(ip.AsSlice()) && n.HardwareAddr != nil && n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
				mac = n.HardwareAddr.String()
			}
		}
		return err
	}))
	return mac
}

func (r *run) argv(member string) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", r.agents[member].PID))
	must(err)
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// restart starts member's agent again inside the node's namespace; `sandbox down` kills it
// with the namespace.
func (r *run) restart(member string, args []string) {
	p := r.agents[member]
	cmd := topology.Command(context.Background(), topology.NamespaceName(r.st.Name, member), args[0], args[1:]...)
	logFile, err := os.OpenFile(p.Log, os.O_WRONLY|os.O_APPEND, 0)
	must(err)
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	must(cmd.Start())
	go cmd.Wait()
	p.PID = cmd.Process.Pid
	r.agents[member] = p
}

func (r *run) waitPodsReady() {
	r.until(60*time.Second, func() bool {
		pods, err := r.client.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false
		}
		ready := 0
		for _, p := range pods.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready == 2
	})
}

func testServerPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "srv", Image: "svcplane/testserver",
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
				PeriodSeconds: 1, FailureThreshold: 1,
			},
		}}},
	}
}

func report(what string, d []time.Duration) {
	slices.Sort(d)
	fmt.Printf("%s: median %v, p90 %v, min %v, max %v (n=%d; load now %s)\n", what,
		d[len(d)/2].Round(time.Millisecond), d[len(d)*9/10].Round(time.Millisecond),
		d[0].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond), len(d), loadAverage())
}

func signalName(s syscall.Signal) string {
	if s == syscall.SIGKILL {
		return "SIGKILL"
	}
	return "SIGTERM"
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

func must(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadbalancer bench: "+format+"\n", args...)
	os.Exit(1)
}
