package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
	"github.com/svcplane/svcplane/test/netns"
)

func TestFailedUpLeavesNothingButLogs(t *testing.T) {
	netns.Require(t)
	t.Setenv("SVCPLANE_SANDBOX_DIR", t.TempDir())
	name := "failup-" + strconv.Itoa(os.Getpid())
	t.Cleanup(func() { topology.Remove(name) })

	// A "server" that dies at once, as a broken build or a bad flag would.
	var progress strings.Builder
	_, err := Up(context.Background(), UpOptions{
		Name:         name,
		Nodes:        1,
		Executable:   "/bin/false",
		ReadyTimeout: 20 * time.Second,
		Progress:     &progress,
	})
	if err == nil || !strings.Contains(err.Error(), "exited before the API server became ready") {
		t.Fatalf("Up with a failing server = %v, want it to report the exit\nprogress:\n%s", err, progress.String())
	}
	for _, m := range []string{topology.MemberNetwork, topology.MemberControlPlane, "node1"} {
		if ns := topology.NamespaceName(name, m); topology.NamespaceExists(ns) {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	if _, err := os.Stat(filepath.Join(topology.LockDir, name+".lock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file left behind (%v)", err)
	}
	if st, err := loadState(name); st != nil || err != nil {
		t.Errorf("state left behind: %+v, %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(StateDir(name), "server.log")); err != nil {
		t.Errorf("the server's log should stay for the user: %v", err)
	}
}

func TestProcessRunningTellsOurProcessFromAReusedPid(t *testing.T) {
	start, _, err := procStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !(Process{PID: os.Getpid(), StartTime: start}).Running() {
		t.Error("this process is not reported running")
	}
	if (Process{PID: os.Getpid(), StartTime: start + 1}).Running() {
		t.Error("a different start time should mean another process that reused the pid")
	}
}
