package runtime

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// InitMain is the init shim, run as a fresh process by Start (as `svcplane agent pod-init`).
// It arrives already in new UTS and mount namespaces when asked for (the clone flags of
// Start), so everything it changes is private to the container:
//
//   - the mount tree is made private first, so the resolv.conf bind mount cannot propagate
//     back into the agent's or the host's mount namespace;
//   - /etc/resolv.conf is covered by the Pod's file (a bind mount of one file, the simplest way
//     to give a process its own resolver configuration without a root file system of its own);
//   - the thread joins the Pod's network namespace and then execs the command, which keeps the
//     thread's namespaces.
//
// With --pause it stays in the network namespace it was cloned with and sleeps until
// SIGTERM: that process is what keeps a Pod's network namespace alive between container
// restarts and agent restarts.
func InitMain(args []string) error {
	var netnsPath, hostname, resolvConf, dir, notNetNS string
	pause := false
	var command []string
	for i, a := range args {
		if a == "--" {
			command = args[i+1:]
			break
		}
		switch k, v, _ := strings.Cut(a, "="); k {
		case "--netns":
			netnsPath = v
		case "--hostname":
			hostname = v
		case "--resolv-conf":
			resolvConf = v
		case "--dir":
			dir = v
		case "--pause":
			pause = true
		case "--not-netns":
			notNetNS = v
		default:
			return fmt.Errorf("pod-init: unknown argument %q", a)
		}
	}
	if pause {
		return pauseMain(notNetNS)
	}
	if len(command) == 0 {
		return errors.New("pod-init: no command after --")
	}
	runtime.LockOSThread()
	if hostname != "" {
		if err := unix.Sethostname([]byte(hostname)); err != nil {
			return fmt.Errorf("setting host name %q: %w", hostname, err)
		}
	}
	privateMounts := resolvConf != "" || netnsPath != ""
	if privateMounts {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("making the container's mounts private: %w", err)
		}
	}
	if resolvConf != "" {
		if err := unix.Mount(resolvConf, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mounting %s on /etc/resolv.conf: %w", resolvConf, err)
		}
	}
	if netnsPath != "" {
		fd, err := unix.Open(netnsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening the Pod's network namespace %s: %w", netnsPath, err)
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("joining the Pod's network namespace %s: %w", netnsPath, err)
		}
		unix.Close(fd)
		// The inherited /sys belongs to the node's network namespace and would keep it alive
		// as long as the container runs; a fresh one shows the Pod's own interfaces.
		unix.Unmount("/sys", unix.MNT_DETACH)
		unix.Mount("sysfs", "/sys", "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
	if dir != "" {
		if err := os.Chdir(dir); err != nil {
			return fmt.Errorf("workingDir %s: %w", dir, err)
		}
	}
	path := command[0]
	if !strings.Contains(path, "/") {
		// Resolved after joining the mount namespace, against the container's PATH.
		found, err := exec.LookPath(path)
		if err != nil {
			return fmt.Errorf("command %q not found in PATH: %w", path, err)
		}
		path = found
	}
	// Exec from this locked thread: the new program inherits this thread's namespaces.
	if err := unix.Exec(path, command, os.Environ()); err != nil {
		return fmt.Errorf("executing %s: %w", path, err)
	}
	return nil
}

// pauseMain holds the Pod's network namespace. It lets go of the node's /sys (see InitMain),
// then waits for SIGTERM. It also ends the Pod when the node's network goes away without the
// agent's help — the node namespace deleted while the agent was down, as `sandbox down` does:
// the kernel then deletes the veth pair, eth0 vanishes here, and the Pod's processes, which
// live in no named namespace and would otherwise be missed, are killed.
//
// notNetNS is the namespace of the process that started it (Start passes it, see
// startedFrom). Reading the parent's /proc entry instead would name the namespace of its main
// thread at that moment, which may be this very one: the agent enters a Pod's namespace on
// some thread to wire it up, the main thread included.
func pauseMain(notNetNS string) error {
	// Killing namespace mates is only safe in a namespace of the Pod's own: refuse to run in
	// the namespace of init or of whoever started us.
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return fmt.Errorf("pod-init --pause: %w", err)
	}
	parent := notNetNS
	if parent == "" {
		parent, err = os.Readlink("/proc/" + strconv.Itoa(os.Getppid()) + "/ns/net")
	}
	// pid 1 may be unreadable inside a container; the parent never is.
	initNS, _ := os.Readlink("/proc/1/ns/net")
	if err != nil || parent == own || initNS == own {
		return fmt.Errorf("pod-init --pause must run in a network namespace of its own (clone it with CLONE_NEWNET): it is in %s, its parent in %q (%v), init in %q",
			own, parent, err, initNS)
	}
	unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	unix.Unmount("/sys", unix.MNT_DETACH)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	attached := false
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-sigs:
			return nil
		case <-tick.C:
		}
		_, err := net.InterfaceByName(podInterface)
		switch {
		case err == nil:
			attached = true
		case attached || time.Now().After(deadline):
			// Never attached in time means the agent died while creating the Pod; a
			// restarted agent creates it again from scratch.
			killNamespaceMates()
			return errors.New("pod network detached from its node; stopped the Pod's processes")
		}
	}
}

// podInterface is the Pod's end of its veth (package netns names it too).
const podInterface = "eth0"

// killNamespaceMates SIGKILLs every other process in this network namespace.
func killNamespaceMates() {
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return
	}
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && ns == own {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
