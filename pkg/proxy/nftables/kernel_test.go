package nftables

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/svcplane/svcplane/pkg/proxy"
)

// init pins the main goroutine to the main thread, which then runs nothing else. A test
// goroutine landing on the main thread and moving it to a fresh namespace (inFreshNetns) would
// otherwise move the process's own namespace, /proc/self/ns/net, which inProcessNetns compares
// threads with: TestNewChecksKernel failed that way now and then.
func init() { runtime.LockOSThread() }

// inFreshNetns moves the calling goroutine's thread into a new, empty network namespace for
// the rest of the test; the thread is never unlocked, so the runtime discards it afterwards
// and nothing we program outlives the test or touches the host's namespace. It returns the
// namespace's path for child processes (nsenter --net=PATH).
func inFreshNetns(t testing.TB) string {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("unshare(CLONE_NEWNET): %v", err)
	}
	return "/proc/" + strconv.Itoa(os.Getpid()) + "/task/" + strconv.Itoa(unix.Gettid()) + "/ns/net"
}

// runKernel programs a proxier in a fresh namespace and hands its nft listing to check.
func TestKernelAcceptsEveryRuleKind(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		ns := inFreshNetns(t)
		tr := proxy.NewTracker(corev1.IPv4Protocol, testNode, nil)
		for _, s := range ruleTestServices() {
			tr.OnServiceAdd(s.svc)
			if s.slice != nil {
				tr.OnEndpointSliceAdd(s.slice)
			}
		}
		p, err := kernelProxier(testConfig())
		if err != nil {
			t.Error(err)
			return
		}
		if err := p.Sync(tr.Snapshot(), true); err != nil {
			t.Errorf("full sync: %v", err)
			return
		}
		// A partial sync of a changed Service replaces its chains.
		tr.OnEndpointSliceUpdate(nil, makeSlice("affinity", 8080, corev1.ProtocolTCP, ep{ip: "10.244.1.9", node: testNode, ready: true}))
		tr.OnServiceDelete(makeService("udp", "10.96.0.5", 53, corev1.ProtocolUDP))
		if err := p.Sync(tr.Snapshot(), false); err != nil {
			t.Errorf("partial sync: %v", err)
		}
		out, err := exec.Command("nsenter", "--net="+ns, "nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			t.Logf("nft list: %v", err)
		}
		t.Logf("kernel ruleset:\n%s", out)
	}()
	<-done
}

// TestKernelScale is the control-plane bar: a full sync of 10,000 Services × 10 endpoints
// under 1 s, and one changed endpoint programmed in under 20 ms.
func TestKernelScale(t *testing.T) {
	// Opt-in: it takes a few seconds and most of a core (docs/benchmarks.md has figures).
	if os.Getenv("SVCPLANE_SCALE_SERVICES") == "" {
		t.Skip("set SVCPLANE_SCALE_SERVICES=N to run the kernel scale test")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		inFreshNetns(t)
		tr := scale(scaleN(), 10)
		p, err := kernelProxier(testConfig())
		if err != nil {
			t.Error(err)
			return
		}
		start := time.Now()
		snap := tr.Snapshot()
		snapDur := time.Since(start)
		syncStart := time.Now()
		if err := p.Sync(snap, true); err != nil {
			t.Errorf("full sync: %v", err)
			return
		}
		syncDur := time.Since(syncStart)
		full := time.Since(start)
		var times, snapTimes []time.Duration
		for i := 0; i < 20; i++ {
			tr.OnEndpointSliceUpdate(nil, makeSlice("svc05000", 8080, corev1.ProtocolTCP,
				ep{ip: "10.200.0.1", node: "node2", ready: true}, ep{ip: "10.200.0." + strconv.Itoa(i+2), node: "node2", ready: true}))
			s := time.Now()
			snap := tr.Snapshot()
			snapTimes = append(snapTimes, time.Since(s))
			if err := p.Sync(snap, false); err != nil {
				t.Errorf("partial sync: %v", err)
				return
			}
			times = append(times, time.Since(s))
		}
		med := median(times)
		// The periodic resync (and a restarted proxy's first sync): a full sync over the
		// existing table, emptied in place in the same transaction.
		s := time.Now()
		if err := p.Sync(tr.Snapshot(), true); err != nil {
			t.Errorf("full resync: %v", err)
			return
		}
		resync := time.Since(s)
		t.Logf("%d Services × 10 endpoints: full sync %v (Snapshot %v + Sync %v); one change: median %v over 20 (Snapshot median %v); full resync over the existing table %v",
			scaleN(), full.Round(time.Millisecond), snapDur.Round(time.Millisecond), syncDur.Round(time.Millisecond),
			med.Round(10*time.Microsecond), median(snapTimes).Round(10*time.Microsecond), resync.Round(time.Millisecond))
		if full > time.Second {
			t.Errorf("full sync took %v, bar is 1s", full)
		}
		if resync > time.Second {
			t.Errorf("full resync took %v, bar is 1s", resync)
		}
		if med > 20*time.Millisecond {
			t.Errorf("one-change sync median %v, bar is 20ms", med)
		}
	}()
	<-done
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func scaleN() int {
	if v, err := strconv.Atoi(os.Getenv("SVCPLANE_SCALE_SERVICES")); err == nil {
		return v
	}
	return 10000
}

// TestNewChecksKernel runs the start-up check: every feature is present here, and the probe
// table is gone afterwards.
func TestNewChecksKernel(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		ns := inFreshNetns(t)
		// New checks that the calling thread is in the process's namespace, which a test
		// thread in a fresh namespace is not: the check runs directly.
		k, err := NewNetlinkKernel(NewProxier(testConfig(), nil))
		if err != nil {
			t.Error(err)
			return
		}
		if err := checkKernel(ipv4, k.(*netlinkKernel).sock); err != nil {
			t.Errorf("kernel check: %v", err)
		}
		if err := checkKernel(ipv6, k.(*netlinkKernel).sock); err != nil {
			t.Errorf("kernel check (IPv6): %v", err)
		}
		out, _ := exec.Command("nsenter", "--net="+ns, "nft", "list", "tables").CombinedOutput()
		if len(out) != 0 {
			t.Errorf("probe left tables behind: %s", out)
		}
		if err := inProcessNetns(); err == nil {
			t.Error("inProcessNetns accepted a thread in another namespace")
		}
	}()
	<-done
}

// kernelProxier returns a proxier that programs the calling thread's namespace over netlink.
func kernelProxier(cfg Config) (*Proxier, error) {
	p := NewProxier(cfg, nil)
	k, err := NewNetlinkKernel(p)
	if err != nil {
		return nil, err
	}
	p.kernel = k
	return p, nil
}

// ipIn runs each `ip` command (its arguments) in the namespace at path ns.
func ipIn(ns string, commands [][]string) error {
	for _, args := range commands {
		if out, err := exec.Command("nsenter", append([]string{"--net=" + ns, "ip"}, args...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
	}
	return nil
}
