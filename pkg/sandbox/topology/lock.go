package topology

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LockDir holds one lock file per topology. Whoever owns a topology holds an exclusive flock on
// its file for as long as the topology should live: the building process, and for a sandbox
// the background processes it hands the file to. The kernel drops the lock when the last holder
// exits, however it exits, which is how CleanupStale tells a killed run's leftovers from a
// topology still in use. It lives on /run (tmpfs) like /run/netns, so both vanish on reboot.
var LockDir = "/run/svcplane-sandbox/.locks"

var errLocked = errors.New("locked")

// lockTopology takes the exclusive lock for name without waiting; errLocked means another
// live process owns the topology.
func lockTopology(name string) (*os.File, error) {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating lock directory: %w", err)
	}
	path := filepath.Join(LockDir, name+".lock")
	for attempt := 0; attempt < 10; attempt++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("opening lock file: %w", err)
		}
		if err := flockExclusive(f); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, errLocked
			}
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		// A cleaner may have removed the file between our open and our flock; then we hold a
		// lock on an orphaned inode and must start over on the new file.
		if sameFile(f, path) {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("locking %s: the lock file keeps being replaced", path)
}

// lockContention is how long a lock may be busy before its topology counts as in use. Other
// processes hold a topology's lock for moments too: `status` and stale cleanup probe it, and a
// cleanup holds it while it checks. Without the grace, such a probe would make a concurrent
// Create fail or a teardown keep its lock file.
const lockContention = 250 * time.Millisecond

func flockExclusive(f *os.File) error {
	deadline := time.Now().Add(lockContention)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sameFile(f *os.File, path string) bool {
	opened, err := f.Stat()
	if err != nil {
		return false
	}
	current, err := os.Stat(path)
	return err == nil && os.SameFile(opened, current)
}

// unlockTopology removes the lock file and then releases the lock, in that order, so that a
// waiting locker never ends up holding a lock on a file that is about to disappear.
func unlockTopology(name string, f *os.File) {
	os.Remove(filepath.Join(LockDir, name+".lock"))
	f.Close()
}

// lockFileNames lists the names that have lock files, held or not.
func lockFileNames() ([]string, error) {
	entries, err := os.ReadDir(LockDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", LockDir, err)
	}
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".lock"); ok && name != "" {
			names = append(names, name)
		}
	}
	return names, nil
}
