package topology

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces live; `ip netns` uses the same place, so
// `ip netns list` and `ip netns exec` see ours.
const netnsDir = "/run/netns"

// nsID identifies a network namespace: the nsfs device and inode of its handle.
type nsID struct{ dev, ino uint64 }

func statNamespace(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

// hostNS is the namespace this process started in: the one we must never change. Package
// initialisation runs before any goroutine of ours could have moved a thread.
var hostNS, hostNSErr = statNamespace("/proc/thread-self/ns/net")

func hostNamespace() (nsID, error) {
	if hostNSErr != nil {
		return nsID{}, fmt.Errorf("reading this process's network namespace: %w", hostNSErr)
	}
	return hostNS, nil
}

// onThreadIn runs fn on a locked OS thread after enter has moved that thread into another
// network namespace, then moves the thread back. Only when the thread is back home is it
// unlocked and returned to the scheduler; if anything fails it stays locked and the runtime
// retires it with the goroutine, so no goroutine can ever run on a thread left in a sandbox.
func onThreadIn(enter func() error, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("opening this thread's network namespace: %w", err)
			return
		}
		defer home.Close()
		if err := enter(); err != nil {
			errc <- err
			return
		}
		err = fn()
		if rerr := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); rerr != nil {
			errc <- errors.Join(err, fmt.Errorf("returning to the host namespace: %w", rerr))
			return
		}
		if id, serr := statNamespace("/proc/thread-self/ns/net"); serr != nil || id != hostNS {
			errc <- errors.Join(err, errors.New("thread did not return to the host namespace"))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// ensureNetnsDir makes /run/netns a shared mount point the way `ip netns add` does, so that
// namespace bind mounts made later propagate into mount namespaces created earlier.
func ensureNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", netnsDir, err)
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("making %s a shared mount: %w", netnsDir, err)
	}
	// EINVAL: not a mount point yet. Bind it onto itself first, as iproute2 does.
	if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting %s onto itself: %w", netnsDir, err)
	}
	if err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making %s a shared mount: %w", netnsDir, err)
	}
	return nil
}

// createNamespace creates an empty network namespace and pins it at /run/netns/<ns>.
func createNamespace(ns string) error {
	path := filepath.Join(netnsDir, ns)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("creating namespace file %s: %w", path, err)
	}
	f.Close()

	unshare := func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
		}
		return nil
	}
	pin := func() error {
		self := "/proc/thread-self/ns/net"
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting the new namespace on %s: %w", path, err)
		}
		return nil
	}
	if err := onThreadIn(unshare, pin); err != nil {
		unix.Unmount(path, unix.MNT_DETACH)
		os.Remove(path)
		return fmt.Errorf("creating network namespace %s: %w", ns, err)
	}
	return nil
}

// deleteNamespace unpins a namespace. The kernel frees it, and with it every interface inside,
// once no process or socket still uses it.
func deleteNamespace(ns string) error {
	path := filepath.Join(netnsDir, ns)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	return nil
}

// listNamespaces returns the names under /run/netns.
func listNamespaces() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", netnsDir, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

// killProcessesIn sends SIGKILL to every process whose main thread is in one of the given
// namespaces (a server, agent or test helper left running) so that nothing outlives teardown.
// This process is never killed.
func killProcessesIn(namespaces []string) error {
	targets := map[nsID]bool{}
	for _, ns := range namespaces {
		// Held open until the scan ends: a namespace that another remover deletes meanwhile
		// would free its inode number, which the kernel hands to the next new namespace (a
		// test's, a Pod's), and its processes would be killed instead. An open namespace
		// cannot go away.
		f, err := os.Open(filepath.Join(netnsDir, ns))
		if err != nil {
			continue
		}
		defer f.Close()
		var fs unix.Statfs_t
		var st unix.Stat_t
		// Already unmounted by someone else: the path is now a plain file of /run/netns.
		if unix.Fstatfs(int(f.Fd()), &fs) != nil || fs.Type != unix.NSFS_MAGIC || unix.Fstat(int(f.Fd()), &st) != nil {
			continue
		}
		targets[nsID{dev: st.Dev, ino: st.Ino}] = true
	}
	if len(targets) == 0 {
		return nil
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("listing processes: %w", err)
	}
	self := os.Getpid()
	var errs []error
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self || pid == 1 {
			continue
		}
		id, err := statNamespace("/proc/" + p.Name() + "/ns/net")
		if err != nil || !targets[id] {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("killing pid %d (%s) left in the sandbox: %w", pid, processName(pid), err))
		}
	}
	return errors.Join(errs...)
}

// killLockHolders sends SIGKILL to every process holding topology name's lock file open:
// whatever the sandbox's processes started outside its namespaces. A node agent runs each Pod
// in a network namespace of its own, in a session of its own (so Pods outlive an agent
// restart, as containers outlive a kubelet's), and every Pod inherits the lock from its agent;
// only the lock still tells them apart from the host's processes once the agent is gone.
// It repeats until none is left (a shell in a Pod may fork between one scan and its kill) and
// a killed process has closed its files, or a few seconds have passed.
func killLockHolders(name string) error {
	var errs []error
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		pids, err := LockHolders(name)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for _, pid := range pids {
				errs = append(errs, fmt.Errorf("pid %d (%s) still holds the sandbox's lock after SIGKILL", pid, processName(pid)))
			}
			return errors.Join(errs...)
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("killing pid %d (%s), which holds the sandbox's lock: %w", pid, processName(pid), err)
			}
		}
	}
}

// LockHolders lists the processes other than this one (and init) that hold topology name's
// lock file open, also once the file has been removed: while a sandbox runs, its server,
// forwarder and agents and every Pod they started; after `down`, none.
func LockHolders(name string) ([]int, error) {
	return Holders(filepath.Join(LockDir, name+".lock"))
}

// Holders lists the processes other than this one (and init) that have the file at path open,
// also once it has been removed. Tests mark what they start with a file this way: the mark is
// inherited by everything started from it, Pods included.
func Holders(path string) ([]int, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	self := os.Getpid()
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err == nil && pid != self && pid != 1 && holds(pid, path) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// holds reports whether process pid has path open.
func holds(pid int, path string) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		target, err := os.Readlink(dir + "/" + fd.Name())
		if err == nil && (target == path || target == path+" (deleted)") {
			return true
		}
	}
	return false
}

func processName(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// NamespaceExists reports whether named network namespace ns exists.
func NamespaceExists(ns string) bool {
	_, err := os.Stat(NamespacePath(ns))
	return err == nil
}

// NamespacePath is the file that pins named network namespace ns.
func NamespacePath(ns string) string { return filepath.Join(netnsDir, ns) }
