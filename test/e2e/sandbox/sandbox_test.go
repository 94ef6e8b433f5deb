// Package sandbox_test drives `svcplane sandbox` as a user does: the real binary, its stdout
// contract, kubectl through the forwarded loopback port, exec exit codes, status and down. It
// lives apart from package e2e so that it builds on its own.
//
// Addresses used (see ARCHITECTURE.md, "Test topology"): the API server at 10.250.0.2:6443 in
// the cp namespace, reached from the host only through 127.0.0.1:<port>; nodes 10.250.0.1N.
package sandbox_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/svcplane/svcplane/pkg/sandbox"
	"github.com/svcplane/svcplane/pkg/sandbox/hostguard"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
	"github.com/svcplane/svcplane/test/netns"
)

// namePrefix marks sandboxes of this test; the pid after it tells a live run from a killed one.
const namePrefix = "e2e-"

func TestSandboxUpKubectlExecStatusDown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the svcplane binary and runs a sandbox; skipped with -short")
	}
	netns.Require(t)
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("needs kubectl in PATH")
	}
	removeSandboxesOfKilledRuns(t)
	bin := buildSvcplane(t)
	name := fmt.Sprintf("%s%d", namePrefix, os.Getpid())

	before, err := hostguard.Take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Registered before `up`, so a failure anywhere below still takes the sandbox down.
	var recorded []sandbox.Process
	t.Cleanup(func() {
		if t.Failed() {
			logSandboxLogs(t, name)
		}
		if out, err := run(bin, "sandbox", "down", "--name", name); err != nil {
			t.Errorf("cleanup: sandbox down: %v\n%s", err, out)
		}
		assertNothingLeft(t, name, recorded, before)
	})

	start := time.Now()
	out, err := run(bin, "sandbox", "up", "--name", name, "--nodes", "3")
	upTime := time.Since(start)
	if err != nil {
		t.Fatalf("sandbox up: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	last := lines[len(lines)-1]
	kubeconfig, ok := strings.CutPrefix(last, "export KUBECONFIG=")
	if !ok || !filepath.IsAbs(kubeconfig) {
		t.Fatalf("last line of `sandbox up` = %q, want export KUBECONFIG=<absolute path>; output:\n%s", last, out)
	}
	if len(lines) < 4 {
		t.Errorf("sandbox up printed %d lines, want a progress line per step:\n%s", len(lines), out)
	}
	if summaries, err := sandbox.Status(name); err == nil && len(summaries) == 1 && summaries[0].State != nil {
		recorded = summaries[0].State.Processes
	} else {
		t.Errorf("sandbox.Status(%q) = %+v, %v; want one sandbox with state", name, summaries, err)
	}

	t.Run("kubectl reaches the API through the loopback port", func(t *testing.T) {
		out, err := run(kubectl, "--kubeconfig", kubeconfig, "get", "ns")
		if err != nil {
			t.Fatalf("kubectl get ns: %v\n%s", err, out)
		}
		if !strings.Contains(out, "default") || !strings.Contains(out, "kube-system") {
			t.Errorf("kubectl get ns:\n%s\nwant default and kube-system", out)
		}
		server, err := run(kubectl, "--kubeconfig", kubeconfig, "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
		if err != nil || !strings.HasPrefix(server, "https://127.0.0.1:") {
			t.Errorf("kubeconfig server = %q, %v; want https://127.0.0.1:<port>", server, err)
		}
	})

	t.Run("a node reaches the API server on the node network", func(t *testing.T) {
		out, err := run(bin, "sandbox", "exec", "--name", name, "node3", "--",
			kubectl, "--kubeconfig", kubeconfig, "--server", "https://10.250.0.2:6443", "get", "ns", "default", "-o", "name")
		if err != nil || strings.TrimSpace(out) != "namespace/default" {
			t.Errorf("kubectl from node3 to 10.250.0.2:6443: %v\n%s", err, out)
		}
	})

	t.Run("exec runs inside the member and passes on its exit code", func(t *testing.T) {
		cases := []struct {
			member string
			argv   []string
			code   int
			out    string
		}{
			{"node1", []string{"sh", "-c", "exit 7"}, 7, ""},
			{"node2", []string{"cat", "/proc/sys/net/ipv4/ip_forward"}, 0, "1"},
			{"cp", []string{"cat", "/proc/sys/net/ipv4/ip_forward"}, 0, "0"},
			{"ext", []string{"sh", "-c", "ip -4 -o addr show dev eth0 | grep -o '10.250.0.200/24'"}, 0, "10.250.0.200/24"},
			{"node3", []string{"svcplane-no-such-command"}, 127, ""},
		}
		for _, tc := range cases {
			cmd := exec.Command(bin, append([]string{"sandbox", "exec", "--name", name, tc.member, "--"}, tc.argv...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				code = exitErr.ExitCode()
			} else if err != nil {
				t.Fatalf("exec %s %v: %v", tc.member, tc.argv, err)
			}
			if code != tc.code {
				t.Errorf("exec %s %v: exit code %d, want %d (stderr %q)", tc.member, tc.argv, code, tc.code, stderr.String())
			}
			if tc.out != "" && strings.TrimSpace(stdout.String()) != tc.out {
				t.Errorf("exec %s %v: output %q, want %q", tc.member, tc.argv, stdout.String(), tc.out)
			}
		}
	})

	t.Run("status lists the sandbox and its processes", func(t *testing.T) {
		out, err := run(bin, "sandbox", "status", "--name", name)
		if err != nil {
			t.Fatalf("sandbox status: %v\n%s", err, out)
		}
		for _, want := range []string{name + ": 3 nodes", kubeconfig, "server", "forwarder", topology.NamespaceName(name, "node3")} {
			if !strings.Contains(out, want) {
				t.Errorf("sandbox status does not mention %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "NOT RUNNING") {
			t.Errorf("sandbox status reports a dead process:\n%s", out)
		}
	})

	start = time.Now()
	if out, err := run(bin, "sandbox", "down", "--name", name); err != nil {
		t.Fatalf("sandbox down: %v\n%s", err, out)
	}
	downTime := time.Since(start)
	t.Logf("sandbox up --nodes 3 (to API ready): %v; down: %v", upTime.Round(time.Millisecond), downTime.Round(time.Millisecond))
	// The bars are 5 s and 2 s; a loaded CI machine gets slack before this fails, the figures
	// above are what to watch.
	if upTime > 15*time.Second || downTime > 6*time.Second {
		t.Errorf("too slow: up %v (bar 5s), down %v (bar 2s)", upTime, downTime)
	}
	assertNothingLeft(t, name, recorded, before)

	if out, err := run(bin, "sandbox", "status", "--name", name); err != nil || !strings.Contains(out, "not up") {
		t.Errorf("sandbox status after down: %v\n%s", err, out)
	}
	if out, err := run(bin, "sandbox", "down", "--name", name); err != nil {
		t.Errorf("a second down should be a no-op: %v\n%s", err, out)
	}
}

// assertNothingLeft checks that sandbox name left no namespace, process, state or lock behind
// and that the host's network is as it was.
func assertNothingLeft(t *testing.T, name string, procs []sandbox.Process, before *hostguard.Snapshot) {
	t.Helper()
	for _, p := range procs {
		if p.Running() {
			t.Errorf("%s (pid %d) still runs after down", p.Role, p.PID)
		}
	}
	out, err := run("ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	if prefix := topology.NamespaceName(name, ""); strings.Contains(out, prefix) {
		t.Errorf("namespaces %s* left behind:\n%s", prefix, out)
	}
	for _, path := range []string{sandbox.StateDir(name), filepath.Join(topology.LockDir, name+".lock")} {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", path, err)
		}
	}
	after, err := hostguard.Take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := hostguard.Unchanged(before, after, topology.IgnoreNamespaces); err != nil {
		t.Error(err)
	}
}

// removeSandboxesOfKilledRuns takes down sandboxes of earlier runs of this test whose process
// is gone. Their server and forwarder keep running (and keep the topology in use) after the
// test binary was killed, so the topology's stale-cleanup does not see them as leftovers.
func removeSandboxesOfKilledRuns(t *testing.T) {
	summaries, err := sandbox.Status("")
	if err != nil {
		t.Logf("listing sandboxes: %v", err)
		return
	}
	for _, s := range summaries {
		pid, err := strconv.Atoi(strings.TrimPrefix(s.Name, namePrefix))
		if !strings.HasPrefix(s.Name, namePrefix) || err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		if err := sandbox.Down(context.Background(), s.Name, nil); err != nil {
			t.Logf("removing sandbox %s of a killed run: %v", s.Name, err)
		} else {
			t.Logf("removed sandbox %s of a killed run", s.Name)
		}
	}
}

// buildSvcplane builds the binary under test, as users get it.
func buildSvcplane(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "svcplane")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/svcplane/svcplane/cmd/svcplane").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// run returns a command's stdout; on failure the error includes its stderr.
func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// logSandboxLogs shows the tail of the sandbox's process logs when the test failed.
func logSandboxLogs(t *testing.T, name string) {
	logs, _ := filepath.Glob(filepath.Join(sandbox.StateDir(name), "*.log"))
	for _, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		var lines []string
		for sc := bufio.NewScanner(f); sc.Scan(); {
			lines = append(lines, sc.Text())
		}
		f.Close()
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		t.Logf("%s:\n  %s", path, strings.Join(lines, "\n  "))
	}
}
