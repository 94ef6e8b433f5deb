package userspace

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/svcplane/svcplane/pkg/proxy"
	"github.com/svcplane/svcplane/pkg/proxy/schedule"
)

// Annotations a Service sets to tune how this mode serves it.
const (
	// annotationScheduler names the scheduler of the Service's ports (rr, wrr, lc, wlc, sed,
	// nq, dh, sh, random), overriding the proxy's --scheduler.
	annotationScheduler = "svcplane.io/scheduler"
	// annotationSchedulerFlags takes ipvsadm's scheduler flags: sh-fallback, sh-port.
	annotationSchedulerFlags = "svcplane.io/scheduler-flags"
	// annotationProxyProtocol is v1 or v2: send a PROXY protocol header to each backend.
	annotationProxyProtocol = "svcplane.io/proxy-protocol"
	// annotationCloseOnRemoval "true" closes TCP connections to an endpoint when the endpoint
	// leaves the Service; by default they run on (UDP flows always move).
	annotationCloseOnRemoval = "svcplane.io/close-on-endpoint-removal"
)

// serviceConfig is what a Service port's annotations and affinity ask of the data path,
// swapped atomically so connections in progress read a consistent version.
type serviceConfig struct {
	scheduler      string
	schedulerOpts  schedule.Options
	proxyProtocol  proxyProtocolVersion
	closeOnRemoval bool
	sticky         time.Duration
}

// configFor reads a ServicePort's settings; an annotation it cannot use is reported and the
// proxy default kept, so one bad annotation never stops a Service from working.
func configFor(p *proxy.ServicePort, defaultScheduler string) (serviceConfig, []error) {
	cfg := serviceConfig{scheduler: defaultScheduler, sticky: p.StickyTimeout}
	var errs []error
	if name := p.Annotations[annotationScheduler]; name != "" {
		if _, err := schedule.New(name, schedule.Options{}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", annotationScheduler, err))
		} else {
			cfg.scheduler = name
		}
	}
	for _, flag := range strings.Split(p.Annotations[annotationSchedulerFlags], ",") {
		switch strings.TrimSpace(flag) {
		case "":
		case "sh-fallback":
			cfg.schedulerOpts.Fallback = true
		case "sh-port":
			cfg.schedulerOpts.SourcePort = true
		default:
			errs = append(errs, fmt.Errorf("%s: unknown flag %q: use sh-fallback, sh-port", annotationSchedulerFlags, flag))
		}
	}
	v, err := parseProxyProtocol(p.Annotations[annotationProxyProtocol])
	if err != nil {
		errs = append(errs, err)
	}
	cfg.proxyProtocol = v
	if s, ok := p.Annotations[annotationCloseOnRemoval]; ok {
		b, err := strconv.ParseBool(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a boolean", annotationCloseOnRemoval, s))
		}
		cfg.closeOnRemoval = b
	}
	return cfg, errs
}

// service is the data-path state of one ServicePort. Its pools outlive the Service's
// listeners while connections still reference them.
type service struct {
	name proxy.ServicePortName
	cfg  atomic.Pointer[serviceConfig]
	// cluster serves the ClusterIP; external serves NodePorts, external and LoadBalancer IPs.
	// They are one pool unless a traffic policy is Local, when they hold different endpoints.
	cluster  *schedule.Pool
	external atomic.Pointer[schedule.Pool]

	mu sync.Mutex
	// sessions holds the open connections and UDP flows per backend, to close them when the
	// backend goes away.
	sessions map[*schedule.Backend]map[session]struct{}
}

// session is a proxied TCP connection or UDP flow.
type session interface {
	io.Closer
	udp() bool
}

func (s *service) pool(external bool) *schedule.Pool {
	if external {
		return s.external.Load()
	}
	return s.cluster
}

// track records sess as using b. If b has already left the Service and sess is of a kind
// that must not outlive its backend, sess is closed instead: it chose b just before the
// removal, or was moving between relays (tcploop.go's handOver) while backendsRemoved looked
// for it. Pool.Update marks b removed before backendsRemoved takes s.mu, so every session
// is either found there or sees the mark here.
func (s *service) track(b *schedule.Backend, sess session) {
	s.mu.Lock()
	if b.Removed() && (sess.udp() || s.cfg.Load().closeOnRemoval) {
		s.mu.Unlock()
		sess.Close()
		return
	}
	defer s.mu.Unlock()
	m := s.sessions[b]
	if m == nil {
		m = map[session]struct{}{}
		s.sessions[b] = m
	}
	m[sess] = struct{}{}
}

func (s *service) untrack(b *schedule.Backend, sess session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.sessions[b]; m != nil {
		delete(m, sess)
		if len(m) == 0 {
			delete(s.sessions, b)
		}
	}
}

// backendsRemoved closes what must not outlive removed backends: UDP flows always (a client
// would otherwise stay pinned to a dead endpoint, the userspace twin of flushing conntrack),
// TCP connections when the Service asks for it.
func (s *service) backendsRemoved(removed []*schedule.Backend) {
	if len(removed) == 0 {
		return
	}
	closeTCP := s.cfg.Load().closeOnRemoval
	var doomed []session
	s.mu.Lock()
	for _, b := range removed {
		for sess := range s.sessions[b] {
			if sess.udp() || closeTCP {
				doomed = append(doomed, sess)
			}
		}
	}
	s.mu.Unlock()
	for _, sess := range doomed {
		sess.Close()
	}
}
