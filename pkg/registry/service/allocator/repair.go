package allocator

import (
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"
)

// EventRecorder is the part of client-go's record.EventRecorder the repair loop uses.
type EventRecorder interface {
	Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any)
}

// Repair reconciles the allocation keys with the Services that exist, as upstream's repair
// controllers do: it records allocations missing for a Service's IP or port, warns about IPs or
// ports two Services claim or that lie outside the ranges, and frees keys no Service holds. A key
// is freed only after it has looked leaked for Grace, because a create or update in flight has
// allocated before its Service is stored.
type Repair struct {
	Set          *Set
	ListServices func(ctx context.Context) ([]corev1.Service, error)
	Events       EventRecorder
	Interval     time.Duration
	Grace        time.Duration

	now    func() time.Time
	leaked map[string]leak
}

type leak struct {
	modRevision int64
	since       time.Time
}

// Run repairs at once and then every Interval until ctx ends.
func (r *Repair) Run(ctx context.Context) {
	for {
		if err := r.RunOnce(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Repairing Service allocations failed; retrying at the next interval")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.Interval):
		}
	}
}

// claim is one Service's hold on one IP or port.
type claim struct {
	svc   *corev1.Service
	owner Owner
}

// RunOnce does one repair pass.
func (r *Repair) RunOnce(ctx context.Context) error {
	if r.now == nil {
		r.now = time.Now
	}
	if r.leaked == nil {
		r.leaked = map[string]leak{}
	}
	if err := r.Set.Start(ctx); err != nil {
		return err
	}
	// Allocations first, Services second: a Service stored after the allocation list has its
	// allocation in etcd already, so it can only look unrecorded, which claim() tolerates.
	var anyIP *IPRange
	for _, ip := range r.Set.IPs {
		anyIP = ip
	}
	ipKeys, _, err := anyIP.pool.list(ctx)
	if err != nil {
		return err
	}
	portKeys, _, err := r.Set.Ports.pool.list(ctx)
	if err != nil {
		return err
	}
	services, err := r.ListServices(ctx)
	if err != nil {
		return err
	}
	slices.SortFunc(services, func(a, b corev1.Service) int {
		return a.CreationTimestamp.Compare(b.CreationTimestamp.Time)
	})
	live := map[Owner]bool{}
	ipClaims := map[string][]claim{}
	portClaims := map[string][]claim{}
	for i := range services {
		svc := &services[i]
		o := Owner{Namespace: svc.Namespace, Name: svc.Name, UID: svc.UID}
		live[o] = true
		for _, ip := range clusterIPsOf(svc) {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				continue
			}
			if r.Set.ForIP(a) == nil {
				r.warn(svc, "ClusterIPOutOfRange", "Cluster IP [%s]: %s is not within any configured Service CIDR; please recreate service", familyName(a), ip)
				continue
			}
			ipClaims[a.String()] = append(ipClaims[a.String()], claim{svc, o})
		}
		for _, port := range nodePortsOf(svc) {
			if !r.Set.Ports.spec.Contains(port) {
				r.warn(svc, "PortOutOfRange", "Port %d is not within the port range %s; please recreate service", port, r.Set.Ports.spec)
				continue
			}
			key := strconv.Itoa(port)
			// Ports of one Service that share a node port are one claim.
			if c := portClaims[key]; len(c) == 0 || c[len(c)-1].owner != o {
				portClaims[key] = append(portClaims[key], claim{svc, o})
			}
		}
	}
	r.reconcile(ctx, anyIP.pool, ipKeys, ipClaims, live, "ClusterIP")
	r.reconcile(ctx, r.Set.Ports.pool, portKeys, portClaims, live, "Port")
	return nil
}

func (r *Repair) reconcile(ctx context.Context, p *pool, keys []Allocation, claims map[string][]claim, live map[Owner]bool, what string) {
	stored := map[string]Allocation{}
	for _, a := range keys {
		stored[a.Suffix] = a
	}
	for suffix, cs := range claims {
		for _, c := range cs[1:] {
			r.warn(c.svc, what+"AlreadyAllocated", "%s %s was assigned to multiple services; please recreate service", what, suffix)
		}
		first := cs[0]
		a, ok := stored[suffix]
		if !ok {
			holder, created, err := p.claim(ctx, suffix, first.owner)
			if err != nil {
				klog.ErrorS(err, "Recording an allocation failed", "what", what, "value", suffix)
				continue
			}
			if created {
				if m, ok := p.member(suffix); ok {
					p.mu.Lock()
					p.index.set(m)
					p.mu.Unlock()
				}
				r.warn(first.svc, what+"NotAllocated", "%s %s is not allocated; repairing", what, suffix)
			} else if o, _ := ParseOwner(holder); o != first.owner {
				r.warn(first.svc, what+"AlreadyAllocated", "%s %s was assigned to multiple services; please recreate service", what, suffix)
			}
			continue
		}
		o, _ := ParseOwner(a.Owner)
		if o != first.owner && !live[o] {
			// The recorded owner is gone (its release failed); hand the key to the Service that holds it.
			r.reown(ctx, p, a, first.owner)
		}
	}
	// Leak candidates of this pool replace those of the last pass: a key held again, or
	// rewritten since, starts its grace period over.
	previous := r.leaked
	r.leaked = map[string]leak{}
	for key, l := range previous {
		if !strings.HasPrefix(key, p.prefix) {
			r.leaked[key] = l
		}
	}
	for suffix, a := range stored {
		if _, held := claims[suffix]; held {
			continue
		}
		key := p.prefix + suffix
		seen, ok := previous[key]
		if !ok || seen.modRevision != a.ModRevision {
			r.leaked[key] = leak{modRevision: a.ModRevision, since: r.now()}
			continue
		}
		if r.now().Sub(seen.since) < r.Grace {
			r.leaked[key] = seen
			continue
		}
		freed, err := p.releaseIfUnchanged(ctx, a)
		if err != nil {
			klog.ErrorS(err, "Freeing a leaked allocation failed", "what", what, "value", suffix)
			r.leaked[key] = seen
			continue
		}
		if freed {
			klog.InfoS("Freed an allocation no Service holds", "what", what, "value", suffix, "lastOwner", a.Owner)
		}
	}
}

func (r *Repair) reown(ctx context.Context, p *pool, a Allocation, to Owner) {
	key := p.prefix + a.Suffix
	_, err := p.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", a.ModRevision)).
		Then(clientv3.OpPut(key, to.String())).
		Commit()
	if err != nil {
		klog.ErrorS(err, "Re-owning an allocation failed", "key", key)
	}
}

func (r *Repair) warn(svc *corev1.Service, reason, format string, args ...any) {
	klog.InfoS("Service allocation problem", "service", svc.Namespace+"/"+svc.Name, "reason", reason)
	if r.Events != nil {
		r.Events.Eventf(svc, corev1.EventTypeWarning, reason, format, args...)
	}
}

func familyName(a netip.Addr) string {
	if a.Is4() {
		return string(corev1.IPv4Protocol)
	}
	return string(corev1.IPv6Protocol)
}

// clusterIPsOf are the IPs a Service holds: none for ExternalName or headless Services.
func clusterIPsOf(svc *corev1.Service) []string {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	if len(ips) > 0 && ips[0] == corev1.ClusterIPNone {
		return nil
	}
	return ips
}

// nodePortsOf are the node ports and health-check node port a Service holds.
func nodePortsOf(svc *corev1.Service) []int {
	var out []int
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			out = append(out, int(p.NodePort))
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal &&
		svc.Spec.HealthCheckNodePort != 0 {
		out = append(out, int(svc.Spec.HealthCheckNodePort))
	}
	return out
}
