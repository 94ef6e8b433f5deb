package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// series names one histogram: a metric name and the labels that select its series.
type series struct {
	name   string
	labels map[string]string
}

// proxyUnderTest is one proxy process, always started inside its own network namespace
// through `ip netns exec` (which also gives it that namespace's /proc/sys/net and /sys).
type proxyUnderTest struct {
	name    string
	netns   string
	binary  string
	args    []string
	logPath string
	// metricsURL is on the namespace's loopback, read through metricsClient.
	metricsURL string
	// fullSync, partialSync and programming are the histograms the comparison reads.
	fullSync, partialSync, programming series
	// lastSync is the gauge holding when the last sync finished (Unix seconds).
	lastSync series

	client *http.Client
	cmd    *exec.Cmd
	exited chan struct{}
}

func (p *proxyUnderTest) start() error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "==== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), p.binary, strings.Join(p.args, " "))
	// `ip netns exec` execs the proxy in place, so cmd's PID is the proxy's own.
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", p.netns, p.binary}, p.args...)...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	p.exited = make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return nil
}

// stop ends the proxy: SIGTERM, then SIGKILL after 10 s. The rules it programmed stay in its
// namespace (both proxies leave them on exit), and the namespace goes at the end of the run.
func (p *proxyUnderTest) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

func (p *proxyUnderTest) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *proxyUnderTest) scrape(ctx context.Context) (scrape, error) {
	return fetch(ctx, p.client, p.metricsURL)
}

// waitFor scrapes every interval until done says so, the proxy exits or timeout passes; it
// returns the last scrape (nil when none succeeded) and whether done was reached.
func (p *proxyUnderTest) waitFor(ctx context.Context, timeout, interval time.Duration, done func(scrape) bool) (scrape, bool) {
	deadline := time.Now().Add(timeout)
	var last scrape
	for {
		if s, err := p.scrape(ctx); err == nil {
			last = s
			if done(s) {
				return s, true
			}
		}
		if !p.running() || time.Now().After(deadline) || ctx.Err() != nil {
			return last, false
		}
		time.Sleep(interval)
	}
}

// memory returns the proxy's resident set now and its peak (VmRSS, VmHWM) in MiB.
func (p *proxyUnderTest) memory() (rss, peak float64) {
	if p.cmd == nil {
		return 0, 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return rss, peak
}

// cpuSeconds is the user+system CPU the proxy has used since it started, with that of its
// children that have exited: kube-proxy hands every transaction to an `nft` process, whose
// parsing is part of its sync's cost.
func (p *proxyUnderTest) cpuSeconds() float64 {
	if p.cmd == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 15 {
		return 0
	}
	total := 0.0
	for _, i := range []int{11, 12, 13, 14} { // utime, stime, cutime, cstime
		v, _ := strconv.ParseFloat(f[i], 64)
		total += v
	}
	return total / 100 // USER_HZ is 100 on Linux
}

// forwardAPI makes the API server, which listens on the host's loopback, reachable on the same
// address inside netns: a listener opened from a thread in that namespace relays each
// connection to the host's loopback. Nothing is configured in either namespace's network, so
// the proxies can use the server's own kubeconfig unchanged.
func forwardAPI(ctx context.Context, netns, addr string) error {
	ln, err := topology.Listen(netns, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s in %s: %w", addr, netns, err)
	}
	context.AfterFunc(ctx, func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go relay(ctx, c, addr)
		}
	}()
	return nil
}

func relay(ctx context.Context, in net.Conn, addr string) {
	defer in.Close()
	var d net.Dialer
	out, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return
	}
	defer out.Close()
	stop := context.AfterFunc(ctx, func() { in.Close(); out.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
}

// schedSample is the proxy's threads' scheduler accounting at one moment.
type schedSample struct {
	at   time.Time
	cpu  float64 // cpuSeconds: the process and its exited children
	wait float64 // runnable but waiting for a CPU, summed over the process's threads
}

// sched reads the CPU used and sums /proc/PID/task/*/schedstat's time spent runnable on a run
// queue. On a shared machine the second tells how much of a sync's wall time was waiting for
// a core rather than work (for the proxy's own threads; an `nft` child's wait is not seen).
func (p *proxyUnderTest) sched() schedSample {
	s := schedSample{at: time.Now(), cpu: p.cpuSeconds()}
	if p.cmd == nil {
		return s
	}
	dir := fmt.Sprintf("/proc/%d/task", p.cmd.Process.Pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return s
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		wait, _ := strconv.ParseFloat(f[1], 64)
		s.wait += wait / 1e9
	}
	return s
}
