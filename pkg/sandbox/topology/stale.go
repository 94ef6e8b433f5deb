package topology

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// Found describes a topology seen on this machine.
type Found struct {
	Name       string
	Namespaces []string // existing namespaces, e.g. svp-<name>-node1
	// InUse is true while some live process holds the topology's lock: a running test, or a
	// sandbox's background processes. A topology not in use is a leftover of a killed run.
	InUse bool
}

// List reports every topology that has namespaces or a lock file on this machine.
func List() ([]Found, error) {
	byName := map[string]*Found{}
	get := func(name string) *Found {
		if f, ok := byName[name]; ok {
			return f
		}
		f := &Found{Name: name}
		byName[name] = f
		return f
	}
	namespaces, err := listNamespaces()
	if err != nil {
		return nil, err
	}
	for _, ns := range namespaces {
		if name, _, ok := splitNamespaceName(ns); ok {
			f := get(name)
			f.Namespaces = append(f.Namespaces, ns)
		}
	}
	locks, err := lockFileNames()
	if err != nil {
		return nil, err
	}
	for _, name := range locks {
		if ValidateName(name) == nil {
			get(name)
		}
	}
	found := make([]Found, 0, len(byName))
	for _, f := range byName {
		f.InUse = inUse(f.Name)
		sort.Strings(f.Namespaces)
		found = append(found, *f)
	}
	sort.Slice(found, func(i, j int) bool { return found[i].Name < found[j].Name })
	return found, nil
}

// inUse probes the lock with a shared lock, which conflicts with an owner's exclusive one.
// It never creates a lock file, so that looking (`svcplane sandbox status`, also as non-root)
// leaves no trace.
func inUse(name string) bool {
	f, err := os.Open(filepath.Join(LockDir, name+".lock"))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	return false
}

// IgnoreNamespaces matches, in a hostguard snapshot, the list of network namespaces. A
// namespace is no part of the host's own network (its links, routes and rules are its own);
// sandboxes, tests and benchmarks create and remove theirs at any time, so a namespace that comes
// or goes says nothing about what a sandbox did. Each topology checks its own namespaces
// explicitly (List) when it is removed.
func IgnoreNamespaces(section, _ string) bool {
	return section == "netns"
}

// CleanupStale removes every topology whose owner has died (a killed test, a crashed sandbox)
// and returns their names. Topologies in use are left alone.
func CleanupStale() ([]string, error) {
	found, err := List()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, f := range found {
		if f.InUse {
			continue // checked without waiting, unlike lockTopology
		}
		lock, err := lockTopology(f.Name)
		if errors.Is(err, errLocked) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = removeNamespaces(f.Name)
		unlockTopology(f.Name, lock)
		if err != nil {
			errs = append(errs, fmt.Errorf("removing stale sandbox %q: %w", f.Name, err))
			continue
		}
		removed = append(removed, f.Name)
	}
	return removed, errors.Join(errs...)
}

// Remove tears down topology name whoever owns it: processes inside its namespaces are
// killed, the namespaces deleted and the lock file removed. It is for `svcplane sandbox down`,
// after the sandbox's own processes have been stopped.
func Remove(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	err := errors.Join(killLockHolders(name), removeNamespaces(name))
	if lock, lerr := lockTopology(name); lerr == nil {
		unlockTopology(name, lock)
	}
	if err != nil {
		return fmt.Errorf("removing sandbox %q: %w", name, err)
	}
	return nil
}
