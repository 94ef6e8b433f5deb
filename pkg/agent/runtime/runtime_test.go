package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain lets the test binary act as the init shim, as the svcplane binary does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "pod-init" {
		if err := InitMain(os.Args[2:]); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(127)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testRuntime(t *testing.T) *Runtime {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: containers get their own mount, UTS and network namespaces")
	}
	return &Runtime{Init: []string{os.Args[0], "pod-init"}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func readLog(path string) string { b, _ := os.ReadFile(path); return string(b) }

func TestProcessGetsEnvDirHostnameAndResolvConf(t *testing.T) {
	r := testRuntime(t)
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 10.96.0.10\n"), 0o644)
	log := filepath.Join(dir, "c.log")
	hostBefore, _ := os.Hostname()
	resolvBefore, _ := os.ReadFile("/etc/resolv.conf")

	p, err := r.Start(Spec{
		Path: "/bin/sh", Args: []string{"-c", `echo "x=$X"; pwd; hostname; cat /etc/resolv.conf; echo err >&2`},
		Env: []string{"X=1", "PATH=/usr/bin:/bin"}, Dir: dir,
		Hostname: "pod-a", ResolvConf: resolv, LogPath: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	if e := <-p.Exited; e.Code != 0 {
		t.Fatalf("exit %+v, log:\n%s", e, readLog(log))
	}
	want := "x=1\n" + dir + "\npod-a\nnameserver 10.96.0.10\nerr\n"
	if got := readLog(log); got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
	// Nothing leaked into the agent's namespaces.
	if h, _ := os.Hostname(); h != hostBefore {
		t.Errorf("host name changed to %q", h)
	}
	if b, _ := os.ReadFile("/etc/resolv.conf"); string(b) != string(resolvBefore) {
		t.Errorf("/etc/resolv.conf of the agent changed")
	}
}

func TestPauseHoldsANetworkNamespaceContainersJoin(t *testing.T) {
	r := testRuntime(t)
	pause, err := r.Start(Spec{NewNetNS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer Stop(pause, time.Second)
	own, _ := os.Readlink("/proc/self/ns/net")
	held, _ := os.Readlink(pause.NetNSPath())
	if held == "" || held == own {
		t.Fatalf("pause namespace %q, ours %q", held, own)
	}
	log := filepath.Join(t.TempDir(), "c.log")
	p, err := r.Start(Spec{Path: "/bin/sh", Args: []string{"-c", "readlink /proc/self/ns/net"}, NetNS: pause.NetNSPath(), LogPath: log})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Exited
	if got := strings.TrimSpace(readLog(log)); got != held {
		t.Errorf("container in %q, want %q", got, held)
	}
}

func TestStopEscalatesToSIGKILLAfterGrace(t *testing.T) {
	r := testRuntime(t)
	log := filepath.Join(t.TempDir(), "c.log")
	p, err := r.Start(Spec{Path: "/bin/sh", Args: []string{"-c", `trap "echo got TERM" TERM; echo ready; while :; do sleep 0.05; done`}, LogPath: log})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ready", func() bool { return strings.Contains(readLog(log), "ready") })
	start := time.Now()
	e := Stop(p, 300*time.Millisecond)
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("stopped after %v, before the grace period", took)
	}
	if e.Code != 137 || e.Signal != "killed" {
		t.Errorf("exit %+v, want 137 killed", e)
	}
	if !strings.Contains(readLog(log), "got TERM") {
		t.Errorf("SIGTERM was not delivered first; log:\n%s", readLog(log))
	}
}

func TestAdoptedProcessExitIsNoticed(t *testing.T) {
	r := testRuntime(t)
	p, err := r.Start(Spec{Path: "/bin/sleep", Args: []string{"0.3"}})
	if err != nil {
		t.Fatal(err)
	}
	a := Adopt(p.Proc)
	<-p.Exited
	select {
	case e := <-a.Exited:
		if e.Code != -1 {
			t.Errorf("adopted exit code %d, want -1 (unknown)", e.Code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("adopted process's exit not noticed")
	}
	if p.Alive() {
		t.Error("exited process reported alive")
	}
}

func TestSupervisorRestartPolicies(t *testing.T) {
	r := testRuntime(t)
	cases := []struct {
		policy       RestartPolicy
		script       string
		wantRestarts int
	}{
		{RestartNever, "exit 1", 0},
		{RestartOnFailure, "exit 0", 0},
		{RestartOnFailure, `n=$(cat $F 2>/dev/null || echo 0); echo $((n+1)) > $F; [ $n -ge 2 ]`, 2},
		{RestartAlways, `n=$(cat $F 2>/dev/null || echo 0); echo $((n+1)) > $F; [ $n -ge 3 ] && exec sleep 100; exit 0`, 3},
	}
	for _, tc := range cases {
		t.Run(string(tc.policy)+"/"+tc.script, func(t *testing.T) {
			counter := filepath.Join(t.TempDir(), "n")
			var mu sync.Mutex
			var states []State
			s := &Supervisor{
				Start: func() (Started, error) {
					return r.Start(Spec{Path: "/bin/sh", Args: []string{"-c", tc.script}, Env: []string{"F=" + counter}})
				},
				Policy:         tc.policy,
				BackoffInitial: 10 * time.Millisecond,
				BackoffMax:     40 * time.Millisecond,
				OnChange:       func(st State) { mu.Lock(); states = append(states, st); mu.Unlock() },
			}
			go s.Run(nil, 0, time.Time{})
			waitFor(t, "the policy to settle", func() bool {
				st := s.State()
				return st.RestartCount == tc.wantRestarts && (st.Done || st.Running != nil)
			})
			time.Sleep(100 * time.Millisecond)
			s.Stop(time.Second)
			if st := s.State(); st.RestartCount != tc.wantRestarts {
				t.Errorf("restarts %d, want %d", st.RestartCount, tc.wantRestarts)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.wantRestarts > 0 {
				sawBackoff := false
				for _, st := range states {
					sawBackoff = sawBackoff || st.Waiting == "CrashLoopBackOff"
				}
				if !sawBackoff {
					t.Error("never reported CrashLoopBackOff between restarts")
				}
			}
		})
	}
}

// TestPauseRefusesTheNamespaceItWasStartedFrom: a pause process kills its namespace mates when
// the Pod's network goes, so it must never run in the agent's own namespace. It learns that
// namespace from Start, not from the agent's /proc entry, which names whatever namespace the
// agent's main thread is in at that moment.
func TestPauseRefusesTheNamespaceItWasStartedFrom(t *testing.T) {
	r := testRuntime(t)
	log := filepath.Join(t.TempDir(), "pause.log")
	p, err := r.Start(Spec{LogPath: log}) // a pause without a namespace of its own
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-p.Exited:
		if e.Code != 127 || !strings.Contains(readLog(log), "must run in a network namespace of its own") ||
			!strings.Contains(readLog(log), startedFrom) {
			t.Errorf("pause in the test's namespace exited %+v with %q; want 127 naming %s", e, readLog(log), startedFrom)
		}
	case <-time.After(10 * time.Second):
		Stop(p, time.Second)
		t.Fatal("a pause process runs in the namespace it was started from")
	}
	if startedFrom == "" || !strings.HasPrefix(startedFrom, "net:[") {
		t.Errorf("startedFrom = %q, want this process's net:[...] namespace", startedFrom)
	}
}
