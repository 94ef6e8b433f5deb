// Package runtime starts and supervises a Pod's processes: the holder process whose network
// namespace the Pod lives in, and one process per container, each started through a small
// init shim (the svcplane binary itself, see InitMain) that joins the Pod's network namespace,
// gives the container its own mount and UTS namespaces with the Pod's resolv.conf and host
// name, and then execs the container's command. Output goes straight to a per-container log
// file, so processes keep running, and logging, while the agent restarts.
package runtime

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc names a process across agent restarts: a pid alone could be reused by the kernel, the
// start time (clock ticks since boot) could not be.
type Proc struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
}

// Alive reports whether p is still the process it was and has not exited.
func (p Proc) Alive() bool {
	if p.PID <= 0 {
		return false
	}
	start, state, err := procStat(p.PID)
	return err == nil && start == p.StartTime && state != "Z" && state != "X"
}

// NetNSPath is where p's network namespace can be opened.
func (p Proc) NetNSPath() string { return "/proc/" + strconv.Itoa(p.PID) + "/ns/net" }

// Signal sends sig to p's whole process group (every process is a session leader), so that
// children the container forked stop with it.
func (p Proc) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return nil
	}
	err := syscall.Kill(-p.PID, sig)
	if errors.Is(err, syscall.ESRCH) {
		err = syscall.Kill(p.PID, sig)
	}
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling pid %d: %w", p.PID, err)
	}
	return nil
}

// procStat reads start time and state letter of pid from /proc/<pid>/stat.
func procStat(pid int) (uint64, string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", err
	}
	// The command name may hold spaces and ')'; the fields after the last ')' are plain.
	rest := string(b)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 20 {
		return 0, "", fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return start, f[0], err
}

// Exit is how a process ended. Code is -1 when it is unknown: the process was adopted after an
// agent restart and is not our child, so its status went to someone else.
type Exit struct {
	Code     int
	Signal   string
	Finished time.Time
}

// Spec describes one process to start.
type Spec struct {
	Path string
	Args []string
	Env  []string
	Dir  string
	// NetNS is the network namespace to join (a /proc/<pid>/ns/net path); empty keeps the
	// agent's. NewNetNS instead gives the process a fresh, empty one (the Pod holder).
	NetNS    string
	NewNetNS bool
	// Hostname and ResolvConf, when set, give the process private UTS and mount namespaces
	// with this host name and this file on /etc/resolv.conf.
	Hostname   string
	ResolvConf string
	// LogPath receives stdout and stderr, appended.
	LogPath string
}

// Runtime starts processes through the init shim.
type Runtime struct {
	// Init is the argv prefix that runs InitMain; the rest of the shim's arguments follow.
	Init []string
}

// Started is a running process and, for a child of this agent, its exit.
type Started struct {
	Proc
	Exited <-chan Exit
}

// startedFrom is this process's network namespace as it started: read by package
// initialisation on the main thread, before any goroutine could move a thread elsewhere. A
// pause process refuses to run in it.
var startedFrom, _ = os.Readlink("/proc/thread-self/ns/net")

// Start starts spec.
func (r *Runtime) Start(spec Spec) (Started, error) {
	if len(r.Init) == 0 {
		return Started{}, errors.New("runtime: no init shim configured")
	}
	args := append([]string{}, r.Init[1:]...)
	if spec.NetNS != "" {
		args = append(args, "--netns="+spec.NetNS)
	}
	if spec.Hostname != "" {
		args = append(args, "--hostname="+spec.Hostname)
	}
	if spec.ResolvConf != "" {
		args = append(args, "--resolv-conf="+spec.ResolvConf)
	}
	if spec.Dir != "" {
		args = append(args, "--dir="+spec.Dir)
	}
	if spec.Path == "" {
		args = append(args, "--pause")
		if startedFrom != "" {
			args = append(args, "--not-netns="+startedFrom)
		}
	} else {
		args = append(append(args, "--", spec.Path), spec.Args...)
	}
	cmd := exec.Command(r.Init[0], args...)
	cmd.Env = spec.Env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	if spec.LogPath != "" {
		f, err := os.OpenFile(spec.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return Started{}, fmt.Errorf("opening log %s: %w", spec.LogPath, err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	attr := &syscall.SysProcAttr{Setsid: true}
	if spec.NewNetNS {
		attr.Cloneflags |= syscall.CLONE_NEWNET | syscall.CLONE_NEWNS
	}
	if spec.NetNS != "" {
		attr.Cloneflags |= syscall.CLONE_NEWNS
	}
	if spec.Hostname != "" {
		attr.Cloneflags |= syscall.CLONE_NEWUTS
	}
	if spec.ResolvConf != "" {
		attr.Cloneflags |= syscall.CLONE_NEWNS
	}
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		return Started{}, fmt.Errorf("starting %s: %w", strings.Join(cmd.Args, " "), err)
	}
	// Read before anyone reaps it: a reaped pid's /proc entry is gone.
	start, _, err := procStat(cmd.Process.Pid)
	exited := make(chan Exit, 1)
	go func() {
		werr := cmd.Wait()
		exited <- exitOf(cmd.ProcessState, werr)
	}()
	if err != nil {
		cmd.Process.Kill()
		return Started{}, fmt.Errorf("inspecting pid %d: %w", cmd.Process.Pid, err)
	}
	return Started{Proc: Proc{PID: cmd.Process.Pid, StartTime: start}, Exited: exited}, nil
}

func exitOf(ps *os.ProcessState, err error) Exit {
	e := Exit{Code: -1, Finished: time.Now()}
	if ps == nil {
		return e
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		// The shell convention kubelet reports too: 128 + signal number.
		e.Code = 128 + int(ws.Signal())
		e.Signal = ws.Signal().String()
		return e
	}
	e.Code = ps.ExitCode()
	return e
}

// Adopt watches a process that is not our child (it survived an agent restart): its exit is
// noticed by polling, with an unknown exit code.
func Adopt(p Proc) Started {
	exited := make(chan Exit, 1)
	go func() {
		for p.Alive() {
			time.Sleep(500 * time.Millisecond)
		}
		exited <- Exit{Code: -1, Finished: time.Now()}
	}()
	return Started{Proc: p, Exited: exited}
}

// Stop sends SIGTERM, waits up to grace for exited, then SIGKILLs the process group.
func Stop(s Started, grace time.Duration) Exit {
	s.Signal(syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case e := <-s.Exited:
		return e
	case <-timer.C:
	}
	s.Signal(syscall.SIGKILL)
	return <-s.Exited
}

const (
	sigterm = syscall.SIGTERM
	sigkill = syscall.SIGKILL
)
