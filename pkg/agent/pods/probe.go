package pods

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcplane/svcplane/pkg/agent/runtime"
)

type probeKind string

const (
	readiness probeKind = "readiness"
	liveness  probeKind = "liveness"
	startup   probeKind = "startup"
)

// probeClient never follows redirects off the Pod and accepts any certificate, as kubelet.
var probeClient = &http.Client{
	Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		DisableKeepAlives: true,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func (pr *podRuntime) startProbes(c *containerRuntime) {
	for _, p := range []struct {
		kind  probeKind
		probe *corev1.Probe
	}{{startup, c.spec.StartupProbe}, {readiness, c.spec.ReadinessProbe}, {liveness, c.spec.LivenessProbe}} {
		if p.probe != nil {
			go pr.probeLoop(c, p.kind, p.probe)
		}
	}
}

// probeLoop runs one probe of one container with upstream's timing: initialDelaySeconds after
// the container starts, then every periodSeconds, each attempt bounded by timeoutSeconds, and
// a result flips only after successThreshold / failureThreshold equal results in a row.
func (pr *podRuntime) probeLoop(c *containerRuntime, kind probeKind, p *corev1.Probe) {
	ctx := pr.probeCtx
	period := seconds(p.PeriodSeconds, 10)
	timeout := seconds(p.TimeoutSeconds, 1)
	successes, failures := int(max(p.SuccessThreshold, 1)), int(max(p.FailureThreshold, 3))
	okRun, failRun := 0, 0
	lastRun := 0
	// Probing often at first makes Pods Ready soon after they start; the period applies once
	// the first success is in.
	fast := 50 * time.Millisecond
	wait := fast
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		st := c.sup.State()
		pr.mu.Lock()
		run, started := c.runID, c.started
		pr.mu.Unlock()
		if st.Running == nil || run <= 0 {
			okRun, failRun, wait = 0, 0, fast
			continue
		}
		if run != lastRun {
			lastRun, okRun, failRun = run, 0, 0
			if delay := time.Duration(p.InitialDelaySeconds)*time.Second - time.Since(st.StartedAt); delay > 0 {
				wait = delay
				continue
			}
		}
		if kind != startup && !started {
			wait = fast
			continue
		}
		if kind == startup && started {
			return
		}
		err := pr.probeOnce(ctx, c, p, timeout)
		if err == nil {
			okRun, failRun = okRun+1, 0
		} else {
			okRun, failRun = 0, failRun+1
		}
		wait = period
		pr.mu.Lock()
		current := c.runID == run
		pr.mu.Unlock()
		if !current {
			continue
		}
		switch kind {
		case readiness:
			if okRun >= successes {
				pr.setReady(c, run, true)
			} else if failRun >= failures {
				pr.setReady(c, run, false)
			}
			pr.mu.Lock()
			isReady := c.ready
			pr.mu.Unlock()
			if !isReady {
				wait = fastRetry(period)
			}
		case startup:
			if okRun >= 1 {
				pr.mu.Lock()
				c.started = true
				pr.mu.Unlock()
				pr.changed()
			} else if failRun >= failures {
				pr.restartContainer(c, p)
				failRun = 0
			}
			if !c.started {
				wait = period
			}
		case liveness:
			if failRun >= failures {
				pr.restartContainer(c, p)
				failRun = 0
			}
		}
	}
}

// fastRetry is how often an unready container's readiness is probed. Upstream probes every
// period, so a Pod becomes Ready up to a period after it could; becoming unready still takes
// failureThreshold periods, as upstream.
func fastRetry(period time.Duration) time.Duration {
	return min(period, 200*time.Millisecond)
}

func seconds(v int32, def int) time.Duration {
	if v <= 0 {
		return time.Duration(def) * time.Second
	}
	return time.Duration(v) * time.Second
}

func (pr *podRuntime) setReady(c *containerRuntime, run int, ready bool) {
	pr.mu.Lock()
	changed := c.ready != ready && c.runID == run
	if changed {
		c.ready = ready
	}
	pr.mu.Unlock()
	if changed {
		pr.changed()
	}
}

// restartContainer kills a container a liveness or startup probe gave up on; the restart
// policy decides what follows.
func (pr *podRuntime) restartContainer(c *containerRuntime, p *corev1.Probe) {
	grace := 30 * time.Second
	pr.mu.Lock()
	if pr.pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pr.pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	pr.mu.Unlock()
	if p.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
	}
	c.sup.Restart(grace)
}

func (pr *podRuntime) probeOnce(ctx context.Context, c *containerRuntime, p *corev1.Probe, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host := pr.ip.String()
	switch {
	case p.HTTPGet != nil:
		g := p.HTTPGet
		if g.Host != "" {
			host = g.Host
		}
		port, err := resolvePort(g.Port, c.spec)
		if err != nil {
			return err
		}
		scheme := strings.ToLower(string(g.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		path := g.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "svcplane-probe")
		for _, h := range g.HTTPHeaders {
			if strings.EqualFold(h.Name, "host") {
				req.Host = h.Value
				continue
			}
			req.Header.Add(h.Name, h.Value)
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
		resp.Body.Close()
		// Upstream: 2xx and 3xx succeed.
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case p.TCPSocket != nil:
		if p.TCPSocket.Host != "" {
			host = p.TCPSocket.Host
		}
		port, err := resolvePort(p.TCPSocket.Port, c.spec)
		if err != nil {
			return err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		conn.Close()
		return nil
	case p.Exec != nil:
		if len(p.Exec.Command) == 0 {
			return fmt.Errorf("exec probe without a command")
		}
		a := pr.agent
		spec := runtime.Spec{
			Path: p.Exec.Command[0], Args: p.Exec.Command[1:],
			Env:      a.containerEnv(pr.pod, c.spec, nil, pr.ips),
			Dir:      c.spec.WorkingDir,
			NetNS:    pr.pause.NetNSPath(),
			Hostname: podHostname(pr.pod), ResolvConf: filepath.Join(a.podDir(pr.uid), "resolv.conf"),
		}
		s, err := a.cfg.Runtime.Start(spec)
		if err != nil {
			return err
		}
		select {
		case e := <-s.Exited:
			if e.Code != 0 {
				return fmt.Errorf("command exited %d", e.Code)
			}
			return nil
		case <-ctx.Done():
			runtime.Stop(s, 0)
			return fmt.Errorf("command timed out after %v", timeout)
		}
	case p.GRPC != nil:
		return fmt.Errorf("grpc probes are not supported")
	}
	return fmt.Errorf("probe has no handler")
}

// resolvePort turns a number or a container port name into a number.
func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, p.StrVal)
}
