package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcplane/svcplane/pkg/sandbox/hostguard"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// UpOptions configures Up.
type UpOptions struct {
	Name  string
	Nodes int
	// Agent asks for `svcplane agent` in every node namespace; see startAgent.
	Agent bool
	// ProxyMode is the agents' --proxy-mode; empty keeps the agent's default (nftables).
	ProxyMode string
	// IPFamily is the cluster's: IPv4 (the default), dual-stack, or IPv6-only; see IPFamily.
	IPFamily IPFamily
	// ReadyTimeout bounds the wait for the API server to answer /readyz.
	ReadyTimeout time.Duration
	// Executable is the svcplane binary started as server and forwarder; empty means this one.
	Executable string
	// Progress receives one line per step.
	Progress io.Writer
}

// ForwarderArgs are the arguments that make the svcplane binary run the loopback forwarder:
// the hidden `svcplane sandbox serve-forward`. cmd/svcplane must mount pkg/cmd/sandbox as
// "sandbox" for this to resolve.
var ForwarderArgs = []string{"sandbox", "serve-forward"}

// Up builds sandbox opts.Name and starts its processes. It returns once the API server answers
// through the host's loopback port, with the state that `down`, `exec` and `status` use. On
// error everything it created is removed again, except the logs in the state directory.
func Up(ctx context.Context, opts UpOptions) (*State, error) {
	if err := topology.ValidateName(opts.Name); err != nil {
		return nil, err
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 90 * time.Second
	}
	exe := opts.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("finding the svcplane binary: %w", err)
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("svcplane sandbox needs root to create network namespaces: run it with sudo")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("svcplane sandbox needs the ip command: install iproute2")
	}
	if prev, err := loadState(opts.Name); err == nil && prev != nil && anyRunning(prev) {
		return nil, fmt.Errorf("sandbox %q is already up (see `svcplane sandbox status --name %s`): run `svcplane sandbox down --name %s` first", opts.Name, opts.Name, opts.Name)
	}

	u := &upRun{opts: opts, exe: exe, dir: StateDir(opts.Name)}
	st, err := u.run(ctx)
	if err != nil {
		u.undo()
		return nil, err
	}
	return st, nil
}

// upRun holds what Up has created so far, so that a failure can undo exactly that.
type upRun struct {
	opts   UpOptions
	exe    string
	dir    string
	topo   *topology.Topology
	state  *State // saved after every change, once the state directory is ours
	procs  []Process
	exited []<-chan error // Wait results of procs, index for index
	// agentTokens[n-1] is node n's token, written to the server's tokens.csv before it starts.
	agentTokens []string
}

func (u *upRun) step(format string, args ...any) {
	fmt.Fprintf(u.opts.Progress, format+"\n", args...)
}

func (u *upRun) run(ctx context.Context) (*State, error) {
	if removed, err := topology.CleanupStale(); err != nil {
		u.step("removing leftovers of killed runs: %v (continuing)", err)
	} else if len(removed) > 0 {
		u.step("removed leftovers of killed runs: %s", strings.Join(removed, ", "))
	}
	before, err := hostguard.Take(ctx)
	if err != nil {
		return nil, err
	}
	u.step("host network recorded (routes, rules, links, namespaces, nftables); it will not be changed")
	for _, note := range before.Notes {
		u.step("  note: %s", note)
	}

	start := time.Now()
	u.topo, err = topology.Create(topology.Options{Name: u.opts.Name, Nodes: u.opts.Nodes, DualStack: u.opts.IPFamily.hasIPv6()})
	if err != nil {
		return nil, err
	}
	nodes := "node1"
	if u.opts.Nodes > 1 {
		nodes = fmt.Sprintf("node1..node%d", u.opts.Nodes)
	}
	family := ""
	switch u.opts.IPFamily {
	case FamilyDual:
		family = ", dual-stack (IPv6 " + topology.NodeNetworkV6.String() + ")"
	case FamilyIPv6:
		family = ", IPv6-only cluster (" + topology.NodeNetworkV6.String() + "; IPv4 only for the host's forwarder)"
	}
	u.step("namespaces %s{net,cp,ext,%s} built in %v%s",
		topology.NamespaceName(u.opts.Name, ""), nodes, time.Since(start).Round(time.Millisecond), family)
	after, err := hostguard.Take(ctx)
	if err != nil {
		return nil, err
	}
	if err := hostguard.Unchanged(before, after, topology.IgnoreNamespaces); err != nil {
		return nil, fmt.Errorf("refusing to continue, the host's network changed while the namespaces were built: %w", err)
	}
	u.step("host network checked: unchanged")

	// Only now, holding the topology's lock, is the state directory ours to clear: a
	// concurrent `up` of the same name has failed in Create above.
	if err := os.RemoveAll(u.dir); err != nil {
		return nil, fmt.Errorf("clearing old state in %s: %w", u.dir, err)
	}
	if err := os.MkdirAll(u.dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	u.state = &State{
		Name:       u.opts.Name,
		Nodes:      u.opts.Nodes,
		IPFamily:   u.opts.IPFamily,
		Created:    time.Now().UTC(),
		HostBefore: before,
	}
	if err := saveState(u.state); err != nil {
		return nil, err
	}

	// Listening here, before the forwarder exists, reserves the port with no race; the
	// forwarder inherits the socket.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("opening a loopback port for the API: %w", err)
	}
	lnFile, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		return nil, fmt.Errorf("handing the loopback port to the forwarder: %w", err)
	}
	defer lnFile.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	hostURL := "https://127.0.0.1:" + strconv.Itoa(port)

	apiAddr := net.JoinHostPort(topology.ControlPlaneAddr.String(), strconv.Itoa(topology.APIServerPort))
	dataDir := filepath.Join(u.dir, "data")
	if u.opts.Agent {
		if err := u.writeTokens(dataDir); err != nil {
			return nil, err
		}
	}
	serverArgs := append([]string{"server",
		"--data-dir", dataDir,
		// The serving certificate covers loopback already; naming it keeps the forwarder's
		// address valid whatever the server's defaults become. The forwarder reaches the
		// server at its IPv4 address, which an IPv6-only cluster does not advertise.
		"--tls-san", "127.0.0.1",
		"--tls-san", topology.ControlPlaneAddr.String(),
	}, u.opts.IPFamily.serverArgs()...)
	server := topology.Command(context.Background(), u.topo.Namespace(topology.MemberControlPlane), u.exe, serverArgs...)
	p, err := u.start("server", topology.MemberControlPlane, server, u.topo.LockFile())
	if err != nil {
		return nil, err
	}
	u.step("server: svcplane server in cp at %s (pid %d, log %s)", apiAddr, p.PID, p.Log)

	forwarder := exec.Command(u.exe, append(append([]string{}, ForwarderArgs...),
		"--namespace", u.topo.Namespace(topology.MemberControlPlane),
		"--target", apiAddr,
		"--listen-fd", "3")...)
	p, err = u.start("forwarder", "", forwarder, lnFile, u.topo.LockFile())
	if err != nil {
		return nil, err
	}
	u.step("forwarder: 127.0.0.1:%d → %s (pid %d, log %s)", port, apiAddr, p.PID, p.Log)

	if err := u.startAgents(); err != nil {
		return nil, err
	}

	start = time.Now()
	admin := filepath.Join(dataDir, "admin.kubeconfig")
	u.step("waiting up to %v for the API server to be ready", u.opts.ReadyTimeout)
	if err := u.waitReady(ctx, admin, hostURL); err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(u.dir, "kubeconfig")
	if err := hostKubeconfig(admin, u.opts.Name, hostURL, kubeconfig); err != nil {
		return nil, err
	}
	u.step("API server ready at %s after %v; kubeconfig %s", hostURL, time.Since(start).Round(time.Millisecond), kubeconfig)
	if u.opts.Agent {
		start = time.Now()
		if err := u.waitNodesReady(ctx, kubeconfig); err != nil {
			return nil, err
		}
		u.step("nodes: %d Ready after %v", u.opts.Nodes, time.Since(start).Round(time.Millisecond))
	}

	u.state.APIServer = hostURL
	u.state.Kubeconfig = kubeconfig
	u.state.Ready = true
	if err := saveState(u.state); err != nil {
		return nil, err
	}
	// From here on the background processes own the topology through the inherited lock.
	u.topo.Detach()
	return u.state, nil
}

// startAgents starts `svcplane agent` in every node namespace (see agents.go). Each holds the
// topology's lock, and passes it on to every Pod it starts (an inherited descriptor stays open
// across exec): `down` finds the Pods by it (topology.Remove).
func (u *upRun) startAgents() error {
	if !u.opts.Agent {
		u.step("nodes: %d bare namespaces (no --agent)", u.opts.Nodes)
		return nil
	}
	for n := 1; n <= u.opts.Nodes; n++ {
		member := topology.NodeMember(n)
		cmd := topology.Command(context.Background(), u.topo.Namespace(member), u.exe, agentArgs(u.dir, n, u.agentTokens[n-1], u.topo.Namespace(member), u.opts.ProxyMode, u.opts.IPFamily)...)
		p, err := u.start("agent", member, cmd, u.topo.LockFile())
		if err != nil {
			return err
		}
		u.step("agent: svcplane agent in %s at %s, pods %s (pid %d, log %s)", member, u.opts.IPFamily.nodeIPs(n), u.opts.IPFamily.podCIDRs(n), p.PID, p.Log)
	}
	return nil
}

// start launches a background process that outlives `up`: its own session (so a terminal's
// signals do not reach it and `down` can signal its whole process group), output to a log in
// the state directory, and the given files as fd 3, 4, …
func (u *upRun) start(role, member string, cmd *exec.Cmd, files ...*os.File) (Process, error) {
	logName := role + ".log"
	if member != "" && role != "server" {
		logName = role + "-" + member + ".log"
	}
	logPath := filepath.Join(u.dir, logName)
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return Process{}, fmt.Errorf("opening %s log: %w", role, err)
	}
	defer logFile.Close()
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Process{}, fmt.Errorf("starting %s (%s): %w", role, strings.Join(cmd.Args, " "), err)
	}
	// Read before anything waits for the child: until it is reaped, /proc keeps its entry
	// even if it has already exited.
	startTime, _, statErr := procStat(cmd.Process.Pid)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if statErr != nil {
		// Not recorded: it is in a sandbox namespace, where undo kills everything, or it is
		// the forwarder, which exits when the namespaces go.
		return Process{}, fmt.Errorf("inspecting %s (pid %d): %w", role, cmd.Process.Pid, statErr)
	}
	p := Process{Role: role, Member: member, PID: cmd.Process.Pid, StartTime: startTime, Log: logPath}
	u.procs = append(u.procs, p)
	u.exited = append(u.exited, exited)
	// Recorded at once, so that `down` finds it even if this `up` is killed before the end.
	u.state.Processes = u.procs
	if err := saveState(u.state); err != nil {
		return p, err
	}
	return p, nil
}

// waitReady polls GET <hostURL>/readyz through the forwarder, trusting the CA from the
// server's admin.kubeconfig once it appears, and fails early if a process we started exits.
func (u *upRun) waitReady(ctx context.Context, adminPath, hostURL string) error {
	ctx, cancel := context.WithTimeout(ctx, u.opts.ReadyTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var client *http.Client
	lastProblem := "the server has not written " + adminPath + " yet"
	for {
		for i, p := range u.procs {
			select {
			case err := <-u.exited[i]:
				return fmt.Errorf("%s exited before the API server became ready (%v); last lines of %s:\n%s", p.Role, err, p.Log, tail(p.Log, 15))
			default:
			}
		}
		if client == nil {
			// The file may be missing or half-written for a while; keep trying until the timeout.
			if cfg, err := clientcmd.LoadFromFile(adminPath); err == nil {
				if client, err = readyzClient(cfg); err != nil {
					lastProblem = fmt.Sprintf("server kubeconfig %s: %v", adminPath, err)
				}
			}
		}
		if client != nil {
			lastProblem = probeReadyz(ctx, client, hostURL+"/readyz")
			if lastProblem == "" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return errors.New("interrupted while waiting for the API server")
			}
			server := u.procs[0]
			return fmt.Errorf("the API server did not become ready within %v (%s); last lines of %s:\n%s",
				u.opts.ReadyTimeout, lastProblem, server.Log, tail(server.Log, 15))
		case <-tick.C:
		}
	}
}

func probeReadyz(ctx context.Context, client *http.Client, url string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("/readyz answered %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	return ""
}

// undo stops what a failed Up started and removes the topology; logs stay for the user. It
// touches the state directory only if this run owned it: after a lost race with another `up`
// of the same name, the directory is the winner's.
func (u *upRun) undo() {
	for i := len(u.procs) - 1; i >= 0; i-- {
		if err := u.procs[i].stop(5 * time.Second); err != nil {
			u.step("cleanup after failure: %v", err)
		}
	}
	if u.topo == nil {
		return
	}
	if err := u.topo.Close(); err != nil {
		u.step("cleanup after failure: %v", err)
	}
	if u.state == nil {
		return
	}
	os.RemoveAll(filepath.Join(u.dir, "data"))
	os.Remove(filepath.Join(u.dir, stateFile))
	u.step("cleaned up after the failure; logs kept in %s", u.dir)
}

func anyRunning(s *State) bool {
	for _, p := range s.Processes {
		if p.Running() {
			return true
		}
	}
	return false
}

// tail returns the last n lines of a log file, indented for an error message.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "  (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
