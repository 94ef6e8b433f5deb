package pods

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/agent/runtime"
	"github.com/svcplane/svcplane/pkg/envvars"
	"github.com/svcplane/svcplane/pkg/netexec"
)

// ReasonImageUnsupported is the waiting reason of a container whose image the agent cannot
// run: there is no container runtime, only the built-in test server and explicit commands.
const ReasonImageUnsupported = "ErrImageUnsupported"

// podRuntime is one running Pod.
type podRuntime struct {
	agent *Agent
	key   string
	uid   types.UID

	mu          sync.Mutex
	pod         *corev1.Pod
	pause       runtime.Started
	ip          netip.Addr   // the primary address: status.podIP, probes
	ips         []netip.Addr // one per pod CIDR of the node, primary first: status.podIPs
	startTime   time.Time
	containers  []*containerRuntime
	terminating bool
	probeCtx    context.Context
	cancel      context.CancelFunc
	// lastSent is the status this agent last wrote. The informer's copy may lag behind our
	// own writes; comparing against it could skip a write that is needed (a newer state equal
	// to an older cached one), so, as the kubelet's status manager does, we compare against
	// what we sent.
	lastSent *corev1.PodStatus
}

type containerRuntime struct {
	spec *corev1.Container
	sup  *runtime.Supervisor
	// unsupported is set when the container cannot run at all.
	unsupported string

	// Probe results, guarded by podRuntime.mu. started gates readiness and liveness, as
	// upstream's startupProbe does.
	ready   bool
	started bool
	runID   int // bumped on every (re)start, so results of an old run are dropped
}

func (pr *podRuntime) setPod(pod *corev1.Pod) {
	pr.mu.Lock()
	pr.pod = pod
	pr.mu.Unlock()
}

// beginTermination reports whether the caller is the one to stop the Pod.
func (pr *podRuntime) beginTermination() bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.terminating {
		return false
	}
	pr.terminating = true
	return true
}

func (pr *podRuntime) stopProbes() {
	if pr.cancel != nil {
		pr.cancel()
	}
}

// startPod creates the Pod's namespace, network, resolv.conf and containers.
func (a *Agent) startPod(ctx context.Context, pod *corev1.Pod) error {
	key := pod.Namespace + "/" + pod.Name
	dir := a.podDir(pod.UID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	ips, err := a.cfg.Network.Allocate(string(pod.UID))
	if err != nil {
		return err
	}
	ip := ips[0]
	pause, err := a.cfg.Runtime.Start(runtime.Spec{NewNetNS: true, LogPath: filepath.Join(dir, "pause.log")})
	if err != nil {
		a.cfg.Network.Release(string(pod.UID))
		return fmt.Errorf("creating the network namespace of pod %s: %w", key, err)
	}
	fail := func(err error) error {
		runtime.Stop(pause, time.Second)
		a.cfg.Network.Detach(string(pod.UID))
		a.cfg.Network.Release(string(pod.UID))
		return err
	}
	if err := a.cfg.Network.Attach(pause.NetNSPath(), string(pod.UID), ips); err != nil {
		return fail(fmt.Errorf("attaching pod %s to the node network: %w", key, err))
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(a.resolvConf(pod)), 0o644); err != nil {
		return fail(fmt.Errorf("writing resolv.conf of pod %s: %w", key, err))
	}
	pr := &podRuntime{agent: a, key: key, uid: pod.UID, pod: pod, pause: pause, ip: ip, ips: ips, startTime: time.Now()}
	rec := &record{UID: pod.UID, Namespace: pod.Namespace, Name: pod.Name, Pause: pause.Proc, IP: ip.String(), IPs: addrStrings(ips), StartTime: pr.startTime}
	if err := a.saveRecord(rec); err != nil {
		return fail(err)
	}
	a.mu.Lock()
	a.running[key] = pr
	a.mu.Unlock()
	// Service variables are those of the Services that exist now, as upstream: a Service
	// created later does not appear in a running Pod's environment.
	services, _ := a.services.List(labels.Everything())
	serviceEnv := envvars.ForPod(pod.Namespace, pod.Spec.EnableServiceLinks, services)
	pr.launch(serviceEnv, nil)
	klog.InfoS("pod started", "pod", key, "ips", ips)
	return nil
}

// adoptPod resumes supervision of a Pod a previous agent started.
func (a *Agent) adoptPod(_ context.Context, pod *corev1.Pod, r *record) error {
	key := pod.Namespace + "/" + pod.Name
	ips := r.addrs()
	var ip netip.Addr
	if len(ips) > 0 {
		ip = ips[0]
	}
	pr := &podRuntime{agent: a, key: key, uid: pod.UID, pod: pod, pause: runtime.Adopt(r.Pause), ip: ip, ips: ips, startTime: r.StartTime}
	a.mu.Lock()
	a.running[key] = pr
	a.mu.Unlock()
	services, _ := a.services.List(labels.Everything())
	serviceEnv := envvars.ForPod(pod.Namespace, pod.Spec.EnableServiceLinks, services)
	adopted := map[string]containerRecord{}
	for _, c := range r.Containers {
		adopted[c.Name] = c
	}
	pr.launch(serviceEnv, adopted)
	klog.InfoS("pod adopted from an earlier agent", "pod", key, "ip", ip)
	return nil
}

// launch starts (or adopts) the supervisors and probes of every container.
func (pr *podRuntime) launch(serviceEnv []corev1.EnvVar, adopted map[string]containerRecord) {
	a := pr.agent
	pod := pr.pod
	pr.probeCtx, pr.cancel = context.WithCancel(context.Background())
	policy := runtime.RestartPolicy(pod.Spec.RestartPolicy)
	if policy == "" {
		policy = runtime.RestartAlways
	}
	// A restarted agent keeps the readiness the API already shows, so that Endpoints do not
	// flap while the first probes run again.
	wasReady := map[string]bool{}
	for _, s := range pod.Status.ContainerStatuses {
		wasReady[s.Name] = s.Ready
	}
	for i := range pod.Spec.Containers {
		spec := &pod.Spec.Containers[i]
		c := &containerRuntime{spec: spec}
		pr.containers = append(pr.containers, c)
		argv, err := a.commandFor(pod, spec, serviceEnv)
		if err != nil {
			c.unsupported = err.Error()
			continue
		}
		env := a.containerEnv(pod, spec, serviceEnv, pr.ips)
		startSpec := runtime.Spec{
			Path: argv[0], Args: argv[1:], Env: env, Dir: spec.WorkingDir,
			NetNS: pr.pause.NetNSPath(), Hostname: podHostname(pod),
			ResolvConf: filepath.Join(a.podDir(pr.uid), "resolv.conf"),
			LogPath:    LogPath(a.cfg.DataDir, pr.uid, spec.Name),
		}
		c.sup = &runtime.Supervisor{
			Start:          func() (runtime.Started, error) { return a.cfg.Runtime.Start(startSpec) },
			Policy:         policy,
			BackoffInitial: a.cfg.BackoffInitial,
			BackoffMax:     a.cfg.BackoffMax,
			OnChange:       func(runtime.State) { pr.containerChanged(c) },
		}
		var adopt *runtime.Started
		restarts, startedAt := 0, time.Time{}
		if rec, ok := adopted[spec.Name]; ok {
			restarts, startedAt = rec.RestartCount, rec.StartedAt
			if rec.Proc.Alive() {
				s := runtime.Adopt(rec.Proc)
				adopt = &s
				c.ready = wasReady[spec.Name] && spec.ReadinessProbe != nil
				c.started = true
			} else {
				// It died while no agent watched: count the restart about to happen.
				restarts++
			}
		}
		go c.sup.Run(adopt, restarts, startedAt)
		pr.startProbes(c)
	}
	pr.changed()
}

// containerChanged runs after every supervisor state change: a new run starts unready and
// unstarted until its probes say otherwise.
func (pr *podRuntime) containerChanged(c *containerRuntime) {
	st := c.sup.State()
	pr.mu.Lock()
	if st.Running == nil || int(st.Running.StartTime) != c.runID {
		if st.Running != nil {
			c.runID = int(st.Running.StartTime)
		} else {
			c.runID = -1
		}
		// Adoption marks the adopted run ready before the supervisor reports it: keep that.
		if st.Running == nil || !c.started {
			c.ready = false
			c.started = c.spec.StartupProbe == nil && st.Running != nil
		}
	}
	pr.mu.Unlock()
	pr.persist()
	pr.changed()
}

// persist records the containers' processes for a restarted agent.
func (pr *podRuntime) persist() {
	pr.mu.Lock()
	rec := &record{UID: pr.uid, Pause: pr.pause.Proc, IP: pr.ip.String(), IPs: addrStrings(pr.ips), StartTime: pr.startTime}
	rec.Namespace, rec.Name, _ = strings.Cut(pr.key, "/")
	terminating := pr.terminating
	for _, c := range pr.containers {
		if c.sup == nil {
			continue
		}
		st := c.sup.State()
		cr := containerRecord{Name: c.spec.Name, StartedAt: st.StartedAt, RestartCount: st.RestartCount}
		if st.Running != nil {
			cr.Proc = *st.Running
		}
		rec.Containers = append(rec.Containers, cr)
	}
	pr.mu.Unlock()
	if terminating {
		return
	}
	if err := pr.agent.saveRecord(rec); err != nil {
		klog.ErrorS(err, "recording pod state", "pod", pr.key)
	}
}

// changed asks for a status update.
func (pr *podRuntime) changed() { pr.agent.status.Add(pr.key) }

// commandFor decides what a container runs: the test server for its images, otherwise the
// container's own command and args with $(VAR) references expanded.
func (a *Agent) commandFor(pod *corev1.Pod, c *corev1.Container, serviceEnv []corev1.EnvVar) ([]string, error) {
	lookup := envLookup(a.containerEnv(pod, c, serviceEnv, nil))
	expand := func(in []string) []string {
		out := make([]string, len(in))
		for i, s := range in {
			out[i] = envvars.Expand(s, lookup)
		}
		return out
	}
	cfg, isTestServer, err := netexec.ForImage(c.Image, expand(c.Command), expand(c.Args))
	if isTestServer {
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", c.Image, err)
		}
		if cfg.Hostname == "" {
			cfg.Hostname = pod.Name
		}
		return append(append([]string{}, a.cfg.TestServer...), cfg.Args()...), nil
	}
	if len(c.Command) == 0 {
		return nil, fmt.Errorf("image %q cannot be run: svcplane has no container runtime; use image %s (or agnhost netexec/serve-hostname), or give the container a command that exists on the node", c.Image, netexec.TestServerImage)
	}
	return append(expand(c.Command), expand(c.Args)...), nil
}

func envLookup(env []string) func(string) (string, bool) {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return func(name string) (string, bool) { v, ok := m[name]; return v, ok }
}

// defaultPath is the PATH an image would usually bring; there is no image here.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// containerEnv is the process environment: the container's env and the service variables as
// kubelet builds them, plus HOSTNAME and PATH that a container runtime would add.
func (a *Agent) containerEnv(pod *corev1.Pod, c *corev1.Container, serviceEnv []corev1.EnvVar, ips []netip.Addr) []string {
	field := func(path string) string {
		switch path {
		case "metadata.name":
			return pod.Name
		case "metadata.namespace":
			return pod.Namespace
		case "metadata.uid":
			return string(pod.UID)
		case "spec.nodeName":
			return pod.Spec.NodeName
		case "spec.serviceAccountName":
			return pod.Spec.ServiceAccountName
		case "status.hostIP":
			return a.cfg.NodeIPs[0].String()
		case "status.hostIPs":
			// As the kubelet: every node IP, primary first, comma-separated.
			return strings.Join(addrStrings(a.cfg.NodeIPs), ",")
		case "status.podIP":
			if len(ips) > 0 {
				return ips[0].String()
			}
		case "status.podIPs":
			// As the kubelet: every address, primary first, comma-separated.
			return strings.Join(addrStrings(ips), ",")
		}
		if k, ok := strings.CutPrefix(path, "metadata.labels['"); ok {
			return pod.Labels[strings.TrimSuffix(k, "']")]
		}
		if k, ok := strings.CutPrefix(path, "metadata.annotations['"); ok {
			return pod.Annotations[strings.TrimSuffix(k, "']")]
		}
		return ""
	}
	env := envvars.ContainerEnv(c, serviceEnv, field)
	has := map[string]bool{}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		has[k] = true
	}
	if !has["HOSTNAME"] {
		env = append(env, "HOSTNAME="+podHostname(pod))
	}
	if !has["PATH"] {
		env = append(env, "PATH="+defaultPath)
	}
	return env
}

// podHostname is spec.hostname or the Pod's name, cut to a DNS label as upstream does.
func podHostname(pod *corev1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// resolvConf builds the Pod's /etc/resolv.conf from dnsPolicy and dnsConfig, as kubelet.
func (a *Agent) resolvConf(pod *corev1.Pod) string {
	var nameservers, searches []string
	options := []string{}
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork {
		// Upstream: ClusterFirst on the host network falls back to the node's resolver.
		policy = corev1.DNSDefault
	}
	if policy == corev1.DNSClusterFirstWithHostNet {
		policy = corev1.DNSClusterFirst
	}
	switch policy {
	case corev1.DNSClusterFirst:
		if a.cfg.ClusterDNS != "" {
			d := a.cfg.ClusterDomain
			nameservers = []string{a.cfg.ClusterDNS}
			searches = []string{pod.Namespace + ".svc." + d, "svc." + d, d}
			options = []string{"ndots:5"}
			break
		}
		fallthrough
	case corev1.DNSDefault:
		nameservers, searches, options = parseResolvConf(a.cfg.HostResolvConf)
	}
	if cfg := pod.Spec.DNSConfig; cfg != nil {
		nameservers = appendUnique(nameservers, cfg.Nameservers...)
		searches = appendUnique(searches, cfg.Searches...)
		for _, o := range cfg.Options {
			opt := o.Name
			if o.Value != nil {
				opt += ":" + *o.Value
			}
			options = mergeOption(options, opt)
		}
	}
	// The resolver reads at most 3 nameservers and 32 search domains.
	if len(nameservers) > 3 {
		nameservers = nameservers[:3]
	}
	if len(searches) > 32 {
		searches = searches[:32]
	}
	var b strings.Builder
	for _, ns := range nameservers {
		b.WriteString("nameserver " + ns + "\n")
	}
	if len(searches) > 0 {
		b.WriteString("search " + strings.Join(searches, " ") + "\n")
	}
	if len(options) > 0 {
		b.WriteString("options " + strings.Join(options, " ") + "\n")
	}
	return b.String()
}

func parseResolvConf(path string) (nameservers, searches, options []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			nameservers = append(nameservers, f[1])
		case "search", "domain":
			searches = f[1:]
		case "options":
			options = append(options, f[1:]...)
		}
	}
	return nameservers, searches, options
}

func appendUnique(list []string, more ...string) []string {
	for _, m := range more {
		found := false
		for _, l := range list {
			found = found || l == m
		}
		if !found {
			list = append(list, m)
		}
	}
	return list
}

// mergeOption replaces an option of the same name (ndots:5 then ndots:2 gives ndots:2).
func mergeOption(options []string, opt string) []string {
	name, _, _ := strings.Cut(opt, ":")
	for i, o := range options {
		if n, _, _ := strings.Cut(o, ":"); n == name {
			options[i] = opt
			return options
		}
	}
	return append(options, opt)
}
