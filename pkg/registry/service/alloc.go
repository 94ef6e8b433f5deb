package service

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/svcplane/svcplane/pkg/registry/service/allocator"
)

// The rules in this file follow upstream's pkg/registry/core/service/storage (alloc.go and the
// REST hooks): which Services get cluster IPs, node ports and health-check node ports, how IP
// families are inferred, and what type changes allocate or release. Comments name upstream's
// cases where the reason is not obvious.

// txn records what one create or update took and what it will give back, so that a failed write
// undoes its allocations and a successful one releases what the old object no longer holds.
type txn struct {
	set    *allocator.Set
	owner  allocator.Owner
	dryRun bool

	takenIPs, droppedIPs     []netip.Addr
	takenPorts, droppedPorts []int
}

// revert gives back what this operation took.
func (t *txn) revert(ctx context.Context) {
	if t.dryRun {
		return
	}
	t.release(ctx, t.takenIPs, t.takenPorts, "undoing the allocations of a failed write")
	t.takenIPs, t.takenPorts = nil, nil
}

// commit gives back what the old object held and the new one does not.
func (t *txn) commit(ctx context.Context) {
	if t.dryRun {
		return
	}
	t.release(ctx, t.droppedIPs, t.droppedPorts, "releasing what an update dropped")
	t.droppedIPs, t.droppedPorts = nil, nil
}

func (t *txn) release(ctx context.Context, ips []netip.Addr, ports []int, why string) {
	for _, ip := range ips {
		if r := t.set.ForIP(ip); r != nil {
			if err := r.Release(ctx, ip, t.owner); err != nil {
				// The repair loop frees what is left behind.
				klog.ErrorS(err, "Releasing a ClusterIP failed", "service", t.owner.String(), "ip", ip, "while", why)
			}
		}
	}
	for _, port := range ports {
		if err := t.set.Ports.Release(ctx, port, t.owner); err != nil {
			klog.ErrorS(err, "Releasing a node port failed", "service", t.owner.String(), "port", port, "while", why)
		}
	}
}

func ownerOf(svc *corev1.Service) allocator.Owner {
	return allocator.Owner{Namespace: svc.Namespace, Name: svc.Name, UID: svc.UID}
}

func invalid(svc *corev1.Service, errs field.ErrorList) error {
	return apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Service").GroupKind(), svc.Name, errs)
}

func needsClusterIP(svc *corev1.Service) bool { return svc.Spec.Type != corev1.ServiceTypeExternalName }

func needsNodePorts(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
}

// needsHealthCheckNodePort is upstream's NeedsHealthCheck: only LoadBalancers with
// externalTrafficPolicy Local get one (a NodePort Service with Local does not).
func needsHealthCheckNodePort(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeLoadBalancer &&
		svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
}

// shouldAllocateNodePorts: LoadBalancers may opt out with allocateLoadBalancerNodePorts=false,
// though ports they ask for by number are still honoured.
func shouldAllocateNodePorts(svc *corev1.Service) bool {
	switch svc.Spec.Type {
	case corev1.ServiceTypeNodePort:
		return true
	case corev1.ServiceTypeLoadBalancer:
		return ptr.Deref(svc.Spec.AllocateLoadBalancerNodePorts, true)
	}
	return false
}

func isHeadless(svc *corev1.Service) bool {
	return len(svc.Spec.ClusterIPs) > 0 && svc.Spec.ClusterIPs[0] == corev1.ClusterIPNone
}

func familyOf(ip string) corev1.IPFamily {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	if a.Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

func otherFamily(f corev1.IPFamily) corev1.IPFamily {
	if f == corev1.IPv4Protocol {
		return corev1.IPv6Protocol
	}
	return corev1.IPv4Protocol
}

// wellFormed reports whether the IP fields are sane enough to allocate from. When they are not,
// nothing is allocated and validation rejects the object with upstream's messages.
func wellFormed(svc *corev1.Service) bool {
	s := &svc.Spec
	if len(s.ClusterIPs) > 2 || len(s.IPFamilies) > 2 {
		return false
	}
	if len(s.ClusterIPs) > 0 && s.ClusterIP != s.ClusterIPs[0] {
		return false
	}
	for i, ip := range s.ClusterIPs {
		if ip == "" || (ip == corev1.ClusterIPNone && i == 0) {
			continue
		}
		a, err := netip.ParseAddr(ip)
		if err != nil || a.Zone() != "" || a.Is4In6() {
			return false
		}
		if i < len(s.IPFamilies) && s.IPFamilies[i] != familyOf(ip) {
			return false
		}
	}
	if len(s.ClusterIPs) == 2 && familyOf(s.ClusterIPs[0]) == familyOf(s.ClusterIPs[1]) {
		return false
	}
	for _, f := range s.IPFamilies {
		if f != corev1.IPv4Protocol && f != corev1.IPv6Protocol {
			return false
		}
	}
	if len(s.IPFamilies) == 2 && s.IPFamilies[0] == s.IPFamilies[1] {
		return false
	}
	if p := s.IPFamilyPolicy; p != nil && *p != corev1.IPFamilyPolicySingleStack &&
		*p != corev1.IPFamilyPolicyPreferDualStack && *p != corev1.IPFamilyPolicyRequireDualStack {
		return false
	}
	// Node ports outside the range are not malformed: the allocator refuses them with
	// upstream's "provided port is not in the valid range" on spec.ports[i].nodePort.
	return true
}

// normalizeClusterIPs keeps clusterIP and clusterIPs in step when a client set only one, as
// upstream does before anything else looks at them.
func normalizeClusterIPs(svc, old *corev1.Service) {
	if old == nil {
		if svc.Spec.ClusterIP != "" && len(svc.Spec.ClusterIPs) == 0 {
			svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
		}
		return
	}
	// An old client that knows only clusterIP sent an update without clusterIPs.
	if len(old.Spec.ClusterIPs) > 0 && len(svc.Spec.ClusterIPs) == 0 && old.Spec.ClusterIP == svc.Spec.ClusterIP {
		svc.Spec.ClusterIPs = old.Spec.ClusterIPs
	}
	if old.Spec.ClusterIP != svc.Spec.ClusterIP && slices.Equal(old.Spec.ClusterIPs, svc.Spec.ClusterIPs) {
		if svc.Spec.ClusterIP == "" {
			svc.Spec.ClusterIPs = nil
		} else {
			svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
		}
	}
}

// patchAllocatedValues lets a client re-send the manifest it created a Service from (without
// the allocated IP and ports) and succeed, as upstream does.
func patchAllocatedValues(svc, old *corev1.Service) {
	if needsClusterIP(old) && needsClusterIP(svc) {
		if svc.Spec.ClusterIP == "" {
			svc.Spec.ClusterIP = old.Spec.ClusterIP
		}
		if len(svc.Spec.ClusterIPs) == 0 && len(old.Spec.ClusterIPs) > 0 {
			svc.Spec.ClusterIPs = old.Spec.ClusterIPs
		}
	}
	if needsNodePorts(old) && needsNodePorts(svc) {
		inNew := map[int32]bool{}
		for _, p := range svc.Spec.Ports {
			inNew[p.NodePort] = true
		}
		byName := map[string]int32{}
		for _, p := range old.Spec.Ports {
			byName[p.Name] = p.NodePort
		}
		for i := range svc.Spec.Ports {
			p := &svc.Spec.Ports[i]
			// A port the new spec already uses elsewhere cannot be patched in twice.
			if oldPort := byName[p.Name]; p.NodePort == 0 && !inNew[oldPort] {
				p.NodePort = oldPort
			}
		}
	}
	if needsHealthCheckNodePort(old) && needsHealthCheckNodePort(svc) && svc.Spec.HealthCheckNodePort == 0 {
		svc.Spec.HealthCheckNodePort = old.Spec.HealthCheckNodePort
	}
}

// unchangedPreferDualStack is upstream's rule that a PreferDualStack Service is neither upgraded
// nor downgraded just because the cluster's families changed: only an explicit edit does that.
func unchangedPreferDualStack(svc, old *corev1.Service) bool {
	if old == nil || svc.Spec.IPFamilyPolicy == nil || old.Spec.Type != svc.Spec.Type || !needsClusterIP(svc) {
		return false
	}
	prefer := corev1.IPFamilyPolicyPreferDualStack
	return *svc.Spec.IPFamilyPolicy == prefer && ptr.Deref(old.Spec.IPFamilyPolicy, "") == prefer &&
		slices.Equal(svc.Spec.ClusterIPs, old.Spec.ClusterIPs) && slices.Equal(svc.Spec.IPFamilies, old.Spec.IPFamilies)
}

// initIPFamilies fills ipFamilyPolicy and ipFamilies from what the user gave and what the
// cluster offers, refusing families the cluster does not have (upstream's initIPFamilyFields).
func initIPFamilies(set *allocator.Set, svc, old *corev1.Service) error {
	if !needsClusterIP(svc) || unchangedPreferDualStack(svc, old) {
		return nil
	}
	s := &svc.Spec
	headlessNoSelector := s.ClusterIP == corev1.ClusterIPNone && len(s.Selector) == 0
	if s.IPFamilyPolicy == nil {
		switch {
		case old != nil && old.Spec.IPFamilyPolicy != nil:
			s.IPFamilyPolicy = ptr.To(*old.Spec.IPFamilyPolicy)
		case headlessNoSelector:
			// Its endpoints may be of either family, so upstream makes it dual-stack.
			s.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
		default:
			s.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
		}
	}
	policy := *s.IPFamilyPolicy
	policyPath := field.NewPath("spec", "ipFamilyPolicy")
	var errs field.ErrorList

	if old != nil {
		if policy == corev1.IPFamilyPolicySingleStack {
			// Setting SingleStack without touching the IP fields asks to drop the secondary.
			if slices.Equal(old.Spec.ClusterIPs, s.ClusterIPs) && len(s.ClusterIPs) > 1 {
				s.ClusterIPs = s.ClusterIPs[:1]
			}
			if slices.Equal(old.Spec.IPFamilies, s.IPFamilies) && len(s.IPFamilies) > 1 {
				s.IPFamilies = s.IPFamilies[:1]
			}
		} else {
			if len(s.ClusterIPs) > 0 && len(s.ClusterIPs) < len(old.Spec.ClusterIPs) {
				errs = append(errs, field.Invalid(policyPath, s.IPFamilyPolicy, "must be 'SingleStack' to release the secondary cluster IP"))
			}
			if len(s.IPFamilies) > 0 && len(s.IPFamilies) < len(old.Spec.IPFamilies) {
				errs = append(errs, field.Invalid(policyPath, s.IPFamilyPolicy, "must be 'SingleStack' to release the secondary IP family"))
			}
		}
	}
	if policy == corev1.IPFamilyPolicySingleStack {
		if len(s.ClusterIPs) == 2 {
			errs = append(errs, field.Invalid(policyPath, s.IPFamilyPolicy, "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"))
		}
		if len(s.IPFamilies) == 2 {
			errs = append(errs, field.Invalid(policyPath, s.IPFamilyPolicy, "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"))
		}
	}
	// Families follow from requested IPs where the user named none.
	for i, ip := range s.ClusterIPs {
		if ip == corev1.ClusterIPNone {
			break
		}
		if i < len(s.IPFamilies) || ip == "" {
			continue
		}
		fam := familyOf(ip)
		if _, ok := set.IPs[fam]; !ok {
			errs = append(errs, field.Invalid(field.NewPath("spec", "clusterIPs").Index(i), s.ClusterIPs, fmt.Sprintf("%s is not configured on this cluster", fam)))
		} else {
			s.IPFamilies = append(s.IPFamilies, fam)
		}
	}
	if len(errs) > 0 {
		return invalid(svc, errs)
	}

	if headlessNoSelector {
		// Upstream allows such a Service every family, even on a single-stack cluster.
		if len(s.IPFamilies) == 0 {
			s.IPFamilies = []corev1.IPFamily{set.Primary}
		}
		if len(s.IPFamilies) < 2 && policy != corev1.IPFamilyPolicySingleStack {
			s.IPFamilies = append(s.IPFamilies, otherFamily(s.IPFamilies[0]))
		}
		return nil
	}
	if policy == corev1.IPFamilyPolicyRequireDualStack && len(set.IPs) < 2 {
		errs = append(errs, field.Invalid(policyPath, s.IPFamilyPolicy, "this cluster is not configured for dual-stack services"))
	}
	for i, fam := range s.IPFamilies {
		if _, ok := set.IPs[fam]; !ok {
			errs = append(errs, field.Invalid(field.NewPath("spec", "ipFamilies").Index(i), fam, "not configured on this cluster"))
		}
	}
	if len(errs) > 0 {
		return invalid(svc, errs)
	}
	if len(s.IPFamilies) == 0 {
		s.IPFamilies = []corev1.IPFamily{set.Primary}
	}
	if policy != corev1.IPFamilyPolicySingleStack && len(s.IPFamilies) == 1 && len(set.IPs) == 2 {
		s.IPFamilies = append(s.IPFamilies, otherFamily(s.IPFamilies[0]))
	}
	return nil
}

// allocIPs allocates, for each family index in want, the IP clusterIPs names there or a free
// one, and writes the results back into clusterIPs (and clusterIP for the primary).
func (t *txn) allocIPs(ctx context.Context, svc *corev1.Service, want []int) error {
	s := &svc.Spec
	for len(s.ClusterIPs) < len(s.IPFamilies) {
		s.ClusterIPs = append(s.ClusterIPs, "")
	}
	for _, i := range want {
		r := t.set.IPs[s.IPFamilies[i]]
		if r == nil {
			return apierrors.NewInternalError(fmt.Errorf("no %s service range is configured", s.IPFamilies[i]))
		}
		if s.ClusterIPs[i] == "" {
			a, err := r.AllocateNext(ctx, t.owner, t.dryRun)
			if err != nil {
				return apierrors.NewInternalError(fmt.Errorf("failed to allocate a serviceIP: %v", err))
			}
			s.ClusterIPs[i] = a.String()
			if !t.dryRun {
				t.takenIPs = append(t.takenIPs, a)
			}
			continue
		}
		a := netip.MustParseAddr(s.ClusterIPs[i]) // wellFormed checked it
		if err := r.Allocate(ctx, a, t.owner, t.dryRun); err != nil {
			if !isAllocationRefusal(err) {
				return apierrors.NewInternalError(err)
			}
			return invalid(svc, field.ErrorList{field.Invalid(field.NewPath("spec", "clusterIPs"), s.ClusterIPs,
				fmt.Sprintf("failed to allocate IP %s: %v", s.ClusterIPs[i], err))})
		}
		if !t.dryRun {
			t.takenIPs = append(t.takenIPs, a)
		}
	}
	if len(s.ClusterIPs) > 0 {
		s.ClusterIP = s.ClusterIPs[0]
	}
	return nil
}

func isAllocationRefusal(err error) bool {
	switch err.(type) {
	case *allocator.ErrIPNotInRange, *allocator.ErrPortNotInRange:
		return true
	}
	return err == allocator.ErrIPAllocated || err == allocator.ErrPortAllocated
}

func (t *txn) allocPort(ctx context.Context, svc *corev1.Service, path *field.Path, port int32) error {
	if err := t.set.Ports.Allocate(ctx, int(port), t.owner, t.dryRun); err != nil {
		if !isAllocationRefusal(err) {
			return apierrors.NewInternalError(err)
		}
		return invalid(svc, field.ErrorList{field.Invalid(path, port, err.Error())})
	}
	if !t.dryRun {
		t.takenPorts = append(t.takenPorts, int(port))
	}
	return nil
}

func (t *txn) nextPort(ctx context.Context, what string) (int32, error) {
	port, err := t.set.Ports.AllocateNext(ctx, t.owner, t.dryRun)
	if err != nil {
		return 0, apierrors.NewInternalError(fmt.Errorf("failed to allocate a %s: %v", what, err))
	}
	if !t.dryRun {
		t.takenPorts = append(t.takenPorts, port)
	}
	return int32(port), nil
}

// allocNodePortsOnCreate gives each port a node port. Ports with the same number (e.g. 53/TCP
// and 53/UDP) share one, as upstream does, unless the user asked for different ones.
func (t *txn) allocNodePortsOnCreate(ctx context.Context, svc *corev1.Service) error {
	ports := svc.Spec.Ports
	byServicePort := map[int32]int32{}
	for i := range ports {
		p := &ports[i]
		if p.NodePort == 0 && !shouldAllocateNodePorts(svc) {
			continue
		}
		path := field.NewPath("spec", "ports").Index(i).Child("nodePort")
		shared := byServicePort[p.Port]
		switch {
		case shared == 0:
			requested := p.NodePort
			for j := i; j < len(ports) && requested == 0; j++ {
				if ports[j].Port == p.Port {
					requested = ports[j].NodePort
				}
			}
			if requested != 0 {
				if err := t.allocPort(ctx, svc, path, requested); err != nil {
					return err
				}
			} else {
				var err error
				if requested, err = t.nextPort(ctx, "nodePort"); err != nil {
					return err
				}
			}
			p.NodePort = requested
			byServicePort[p.Port] = requested
		case p.NodePort == 0:
			p.NodePort = shared
		case p.NodePort != shared:
			if err := t.allocPort(ctx, svc, path, p.NodePort); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t *txn) allocHealthCheckNodePort(ctx context.Context, svc *corev1.Service) error {
	if hc := svc.Spec.HealthCheckNodePort; hc != 0 {
		if err := t.set.Ports.Allocate(ctx, int(hc), t.owner, t.dryRun); err != nil {
			return apierrors.NewInternalError(fmt.Errorf("failed to allocate requested HealthCheck NodePort %d: %v", hc, err))
		}
		if !t.dryRun {
			t.takenPorts = append(t.takenPorts, int(hc))
		}
		return nil
	}
	port, err := t.nextPort(ctx, "HealthCheck NodePort")
	if err != nil {
		return err
	}
	svc.Spec.HealthCheckNodePort = port
	return nil
}

// allocateCreate fills in and allocates everything a new Service needs. On error nothing stays
// allocated.
func allocateCreate(ctx context.Context, set *allocator.Set, svc *corev1.Service, dryRun bool) (*txn, error) {
	t := &txn{set: set, owner: ownerOf(svc), dryRun: dryRun}
	normalizeClusterIPs(svc, nil)
	if !wellFormed(svc) {
		return t, nil
	}
	err := func() error {
		if err := initIPFamilies(set, svc, nil); err != nil {
			return err
		}
		if needsClusterIP(svc) && !isHeadless(svc) {
			if err := t.allocIPs(ctx, svc, familyIndexes(svc)); err != nil {
				return err
			}
		}
		if needsNodePorts(svc) {
			if err := t.allocNodePortsOnCreate(ctx, svc); err != nil {
				return err
			}
		}
		if needsHealthCheckNodePort(svc) {
			return t.allocHealthCheckNodePort(ctx, svc)
		}
		return nil
	}()
	if err != nil {
		t.revert(ctx)
		return nil, err
	}
	return t, nil
}

func familyIndexes(svc *corev1.Service) []int {
	out := make([]int, len(svc.Spec.IPFamilies))
	for i := range out {
		out[i] = i
	}
	return out
}

// allocateUpdate allocates what an update adds and notes what it drops; the caller releases the
// dropped members only once the update is stored.
func allocateUpdate(ctx context.Context, set *allocator.Set, svc, old *corev1.Service, dryRun bool) (*txn, error) {
	t := &txn{set: set, owner: ownerOf(old), dryRun: dryRun}
	patchAllocatedValues(svc, old)
	normalizeClusterIPs(svc, old)
	if !wellFormed(svc) {
		return t, nil
	}
	err := func() error {
		if err := initIPFamilies(set, svc, old); err != nil {
			return err
		}
		if err := t.updateClusterIPs(ctx, svc, old); err != nil {
			return err
		}
		if err := t.updateNodePorts(ctx, svc, old); err != nil {
			return err
		}
		switch had, needs := needsHealthCheckNodePort(old), needsHealthCheckNodePort(svc); {
		case !had && needs:
			return t.allocHealthCheckNodePort(ctx, svc)
		case had && !needs && old.Spec.HealthCheckNodePort != 0:
			t.droppedPorts = append(t.droppedPorts, int(old.Spec.HealthCheckNodePort))
		}
		return nil
	}()
	if err != nil {
		t.revert(ctx)
		return nil, err
	}
	dropTypeDependentFields(svc, old)
	return t, nil
}

// updateClusterIPs covers upstream's four cases: ExternalName → a type with cluster IPs
// allocates; the reverse releases; a single-stack Service gaining a second family allocates one
// IP; one losing it releases one.
func (t *txn) updateClusterIPs(ctx context.Context, svc, old *corev1.Service) error {
	if unchangedPreferDualStack(svc, old) {
		return nil
	}
	switch {
	case !needsClusterIP(old) && needsClusterIP(svc):
		if isHeadless(svc) {
			return nil
		}
		return t.allocIPs(ctx, svc, familyIndexes(svc))
	case isHeadless(old):
		return nil
	case needsClusterIP(old) && !needsClusterIP(svc):
		t.dropIPs(old.Spec.ClusterIPs...)
	case len(old.Spec.IPFamilies) == 1 && len(svc.Spec.IPFamilies) == 2:
		return t.allocIPs(ctx, svc, []int{1})
	case len(old.Spec.IPFamilies) == 2 && len(svc.Spec.IPFamilies) == 1 && len(old.Spec.ClusterIPs) == 2:
		t.dropIPs(old.Spec.ClusterIPs[1])
	}
	return nil
}

func (t *txn) dropIPs(ips ...string) {
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			t.droppedIPs = append(t.droppedIPs, a)
		}
	}
}

func nodePortsOf(svc *corev1.Service) []int {
	var out []int
	for _, p := range svc.Spec.Ports {
		if p.NodePort != 0 {
			out = append(out, int(p.NodePort))
		}
	}
	return out
}

func (t *txn) updateNodePorts(ctx context.Context, svc, old *corev1.Service) error {
	oldPorts := nodePortsOf(old)
	if needsNodePorts(old) && !needsNodePorts(svc) {
		t.droppedPorts = append(t.droppedPorts, oldPorts...)
		return nil
	}
	if !needsNodePorts(svc) {
		return nil
	}
	taken := map[int32]bool{}
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if p.NodePort == 0 && !shouldAllocateNodePorts(svc) {
			continue
		}
		if p.NodePort == 0 {
			port, err := t.nextPort(ctx, "nodePort")
			if err != nil {
				return err
			}
			p.NodePort = port
			continue
		}
		if slices.Contains(oldPorts, int(p.NodePort)) || taken[p.NodePort] {
			continue
		}
		if err := t.allocPort(ctx, svc, field.NewPath("spec", "ports").Index(i).Child("nodePort"), p.NodePort); err != nil {
			return err
		}
		taken[p.NodePort] = true
	}
	kept := nodePortsOf(svc)
	for _, port := range oldPorts {
		if !slices.Contains(kept, port) {
			t.droppedPorts = append(t.droppedPorts, port)
		}
	}
	return nil
}

// dropTypeDependentFields clears what a type change made meaningless, where the user left the
// old value in place (upstream does this in the strategy's PrepareForUpdate; it is here so that
// it runs with the allocations it matches).
func dropTypeDependentFields(svc, old *corev1.Service) {
	s := &svc.Spec
	if needsClusterIP(old) && !needsClusterIP(svc) {
		if slices.Equal(old.Spec.ClusterIPs, s.ClusterIPs) {
			s.ClusterIP, s.ClusterIPs = "", nil
		}
		if slices.Equal(old.Spec.IPFamilies, s.IPFamilies) {
			s.IPFamilies = nil
		}
		if ptr.Equal(old.Spec.IPFamilyPolicy, s.IPFamilyPolicy) {
			s.IPFamilyPolicy = nil
		}
	}
	if needsNodePorts(old) && !needsNodePorts(svc) && slices.Equal(nodePortsOf(old), nodePortsOf(svc)) {
		for i := range s.Ports {
			s.Ports[i].NodePort = 0
		}
	}
	if needsHealthCheckNodePort(old) && !needsHealthCheckNodePort(svc) && old.Spec.HealthCheckNodePort == s.HealthCheckNodePort {
		s.HealthCheckNodePort = 0
	}
	if old.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Type != corev1.ServiceTypeLoadBalancer {
		if ptr.Equal(old.Spec.AllocateLoadBalancerNodePorts, s.AllocateLoadBalancerNodePorts) {
			s.AllocateLoadBalancerNodePorts = nil
		}
		if ptr.Equal(old.Spec.LoadBalancerClass, s.LoadBalancerClass) {
			s.LoadBalancerClass = nil
		}
	}
	if needsNodePorts(old) && !needsNodePorts(svc) && old.Spec.ExternalTrafficPolicy == s.ExternalTrafficPolicy {
		s.ExternalTrafficPolicy = ""
	}
}

// releaseAll gives back everything a deleted Service held.
func releaseAll(ctx context.Context, set *allocator.Set, svc *corev1.Service) {
	t := &txn{set: set, owner: ownerOf(svc)}
	if needsClusterIP(svc) && !isHeadless(svc) {
		t.dropIPs(svc.Spec.ClusterIPs...)
	}
	t.droppedPorts = nodePortsOf(svc)
	if needsHealthCheckNodePort(svc) && svc.Spec.HealthCheckNodePort > 0 {
		t.droppedPorts = append(t.droppedPorts, int(svc.Spec.HealthCheckNodePort))
	}
	t.commit(ctx)
}
