package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/svcplane/svcplane/pkg/sandbox/hostguard"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// stopGrace is how long a process gets to exit after SIGTERM before SIGKILL. It is short on
// purpose: the server's data directory is deleted right after, so a graceful shutdown of the
// API server and etcd (1-2 s) would buy nothing; SIGTERM first only lets processes log why
// they end.
const stopGrace = 300 * time.Millisecond

// Down stops sandbox name's processes, deletes its namespaces and state directory, and then
// checks that the host's network configuration is as it was before `up`. Taking down a
// sandbox that is not up is not an error.
func Down(ctx context.Context, name string, progress io.Writer) error {
	if err := topology.ValidateName(name); err != nil {
		return err
	}
	if progress == nil {
		progress = io.Discard
	}
	st, err := loadState(name)
	if err != nil {
		return err
	}
	_, dirErr := os.Stat(StateDir(name))
	namespaces, err := namespacesOf(name)
	if err != nil {
		return err
	}
	if st == nil && len(namespaces) == 0 && dirErr != nil {
		fmt.Fprintf(progress, "sandbox %q is not up; nothing to do\n", name)
		return nil
	}

	var errs []error
	if st != nil {
		// Reverse start order: agents, then the forwarder, then the server they all talk to.
		for i := len(st.Processes) - 1; i >= 0; i-- {
			p := st.Processes[i]
			if !p.Running() {
				fmt.Fprintf(progress, "%s had already exited (pid %d)\n", p.Role, p.PID)
				continue
			}
			start := time.Now()
			if err := p.stop(stopGrace); err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Fprintf(progress, "%s stopped (pid %d) in %v\n", p.Role, p.PID, time.Since(start).Round(time.Millisecond))
		}
	}
	start := time.Now()
	if err := topology.Remove(name); err != nil {
		errs = append(errs, err)
	} else if len(namespaces) > 0 {
		fmt.Fprintf(progress, "namespaces removed in %v: %v\n", time.Since(start).Round(time.Millisecond), namespaces)
	}
	if err := os.RemoveAll(StateDir(name)); err != nil {
		errs = append(errs, fmt.Errorf("removing state directory: %w", err))
	}
	if left, err := namespacesOf(name); err != nil {
		errs = append(errs, err)
	} else if len(left) > 0 {
		errs = append(errs, fmt.Errorf("namespaces left behind: %s", strings.Join(left, " ")))
	}
	if st != nil && st.HostBefore != nil {
		after, err := hostguard.Take(ctx)
		if err == nil {
			// Namespaces come and go with other sandboxes and tests; ours were checked just above.
			err = hostguard.Unchanged(st.HostBefore, after, topology.IgnoreNamespaces)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%w\n(svcplane sandbox only ever changes its own namespaces: if this is not from a bug in it, something else on this host changed the network while the sandbox was up)", err))
		} else {
			fmt.Fprintln(progress, "host network checked: routes, rules, links, namespaces and nftables as before `up`")
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("taking down sandbox %q: %w", name, err)
	}
	fmt.Fprintf(progress, "sandbox %q is down\n", name)
	return nil
}

func namespacesOf(name string) ([]string, error) {
	found, err := topology.List()
	if err != nil {
		return nil, err
	}
	for _, f := range found {
		if f.Name == name {
			return f.Namespaces, nil
		}
	}
	return nil, nil
}
