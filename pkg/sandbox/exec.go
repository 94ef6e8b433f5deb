package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// Exec runs argv inside member's namespace of sandbox name (cp, ext, net or nodeN) with the
// given standard streams and returns its exit code. err is only for failing to run it at all.
// Cancelling ctx sends the command SIGTERM (and SIGKILL 10 s later), like a polite shell.
func Exec(ctx context.Context, name, member string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if err := topology.ValidateName(name); err != nil {
		return 0, err
	}
	if _, err := topology.MemberAddr(member); err != nil {
		return 0, err
	}
	if len(argv) == 0 {
		return 0, errors.New("no command given: use `svcplane sandbox exec NODE -- CMD ARGS…`")
	}
	ns := topology.NamespaceName(name, member)
	if !topology.NamespaceExists(ns) {
		return 0, fmt.Errorf("sandbox %q has no %s (namespace %s not found): is it up with enough nodes? see `svcplane sandbox status`", name, member, ns)
	}
	// `ip netns exec` reports a missing command with exit status 1, indistinguishable from the
	// command's own failure; shells use 127, and scripts test for it. The lookup here sees the
	// same PATH and files as the command will.
	if _, err := exec.LookPath(argv[0]); err != nil {
		fmt.Fprintf(stderr, "svcplane sandbox exec: %s: command not found\n", argv[0])
		return 127, nil
	}
	cmd := topology.Command(ctx, ns, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if code := exitErr.ExitCode(); code >= 0 {
			return code, nil
		}
		// Killed by a signal: report it the way shells do.
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("running %s in %s: %w", argv[0], ns, err)
	}
	return 0, nil
}
