// Package sandbox runs a whole svcplane cluster inside network namespaces on this machine:
// `svcplane sandbox up|down|exec|status`. It builds the namespace topology (package
// topology), starts `svcplane server` in the control-plane namespace and a loopback forwarder
// on the host, and keeps what it started in a state directory so that later commands can find,
// inspect and stop it. See docs/sandbox.md for the topology, the state directory and the safety
// rules.
package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/svcplane/svcplane/pkg/sandbox/hostguard"
)

// DefaultName is the sandbox name when none is given.
const DefaultName = "default"

// StateRoot is where sandboxes keep their state: SVCPLANE_SANDBOX_DIR if set, otherwise
// /run/svcplane-sandbox (tmpfs, so a reboot, which also drops every namespace, drops it too).
func StateRoot() string {
	if dir := os.Getenv("SVCPLANE_SANDBOX_DIR"); dir != "" {
		return dir
	}
	return "/run/svcplane-sandbox"
}

// StateDir is sandbox name's directory: state.json, logs, the server's data dir, kubeconfig.
func StateDir(name string) string { return filepath.Join(StateRoot(), name) }

// State is what `up` records for the other subcommands.
type State struct {
	Name       string    `json:"name"`
	Nodes      int       `json:"nodes"`
	IPFamily   IPFamily  `json:"ipFamily,omitempty"` // --ip-family; "" is ipv4
	Created    time.Time `json:"created"`
	APIServer  string    `json:"apiServer"`  // https://127.0.0.1:<port>, the forwarder
	Kubeconfig string    `json:"kubeconfig"` // points at APIServer
	Processes  []Process `json:"processes"`
	// Ready is set once the API answered through the forwarder; a state that is not ready
	// belongs to an `up` still running, or one that was killed.
	Ready bool `json:"ready"`
	// HostBefore is the host's network configuration before `up`; `down` compares against it.
	HostBefore *hostguard.Snapshot `json:"hostBefore"`
}

// Process is a background process the sandbox started.
type Process struct {
	Role   string `json:"role"`             // server, forwarder, agent
	Member string `json:"member,omitempty"` // namespace member it runs in; empty for the host
	PID    int    `json:"pid"`
	// StartTime (clock ticks after boot, /proc/<pid>/stat) tells our process from a later one
	// that reused the pid.
	StartTime uint64 `json:"startTime"`
	Log       string `json:"log"`
}

const stateFile = "state.json"

func saveState(s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(StateDir(s.Name), stateFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing sandbox state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing sandbox state: %w", err)
	}
	return nil
}

// loadState returns nil, nil when the sandbox has no state.
func loadState(name string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(StateDir(name), stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading sandbox state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("reading sandbox state %s: %w", filepath.Join(StateDir(name), stateFile), err)
	}
	return &s, nil
}

// Running reports whether the recorded process is still the one we started and not a zombie.
func (p Process) Running() bool {
	start, state, err := procStat(p.PID)
	return err == nil && start == p.StartTime && state != "Z" && state != "X"
}

// procStat reads a process's start time and state letter from /proc/<pid>/stat.
func procStat(pid int) (startTime uint64, state string, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", err
	}
	// The command name (field 2) may contain spaces and parentheses; fields after the last ')'
	// are plain: state is field 3, starttime field 22.
	rest := string(b)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	fields := strings.Fields(rest)
	if len(fields) < 20 {
		return 0, "", fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	startTime, err = strconv.ParseUint(fields[19], 10, 64)
	return startTime, fields[0], err
}

// stop ends a background process and everything in its session (each was started with
// setsid, so its pid is its process group): SIGTERM, then SIGKILL after grace.
func (p Process) stop(grace time.Duration) error {
	if !p.Running() {
		return nil
	}
	if err := syscall.Kill(-p.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stopping %s (pid %d): %w", p.Role, p.PID, err)
	}
	for deadline := time.Now().Add(grace); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !p.Running() {
			return nil
		}
	}
	if err := syscall.Kill(-p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing %s (pid %d): %w", p.Role, p.PID, err)
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !p.Running() {
			return nil
		}
	}
	return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Role, p.PID)
}
