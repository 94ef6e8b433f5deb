// Package kubernetesservice keeps the `kubernetes` Service in `default` and its Endpoints and
// EndpointSlice pointing at every API server that shares the etcd, as upstream's lease endpoint
// reconciler does.
//
// Each API server holds one etcd key, <prefix>/svcplane/apiserverleases/<advertise IP>, bound to an
// etcd lease with a TTL and kept alive while the server runs. Every reconcile lists those keys
// and writes the addresses they name into the Endpoints and EndpointSlice. A server that stops
// cleanly revokes its lease and rewrites the endpoints without itself; one that crashes drops out
// when its lease expires and the next reconcile of any remaining server runs.
package kubernetesservice

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

const (
	name      = "kubernetes"
	namespace = metav1.NamespaceDefault
	portName  = "https"
)

// Reconciler keeps the kubernetes Service and its endpoints.
type Reconciler struct {
	Client kubernetes.Interface
	Etcd   *clientv3.Client
	// LeasePrefix is where the servers' leases live, e.g. /registry/svcplane/apiserverleases/.
	LeasePrefix string
	// ServiceIP is the first address of the primary service range.
	ServiceIP netip.Addr
	// Advertise and Port are where clients reach this server.
	Advertise netip.Addr
	Port      int
	// TTL is how long a crashed server stays in the endpoints; Interval how often each server
	// renews its lease and rewrites the endpoints.
	TTL      time.Duration
	Interval time.Duration

	mu      sync.Mutex
	lease   clientv3.LeaseID
	stopped bool
}

// firstRetry is the wait after a failed reconcile, doubled on each further failure up to
// Interval. At start the first one fails as a rule: the server creates the default namespace
// in a hook of its own, and waiting a whole Interval would leave clients without the
// kubernetes Service for that long.
const firstRetry = 100 * time.Millisecond

// Run reconciles now and every Interval until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	retry := firstRetry
	for {
		r.mu.Lock()
		var err error
		if !r.stopped {
			err = r.reconcile(ctx, true)
		}
		r.mu.Unlock()
		wait := r.Interval
		if err != nil && ctx.Err() == nil {
			wait = min(retry, r.Interval)
			retry *= 2
			// The first two failures are expected at start; only later ones are errors.
			if retry > 4*firstRetry {
				klog.ErrorS(err, "Reconciling the kubernetes Service failed; retrying", "after", wait)
			} else {
				klog.V(1).InfoS("Reconciling the kubernetes Service failed; retrying", "err", err, "after", wait)
			}
		} else {
			retry = firstRetry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Stop removes this server from the endpoints; call it while the API still serves.
func (r *Reconciler) Stop(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	if r.lease != 0 {
		if _, err := r.Etcd.Revoke(ctx, r.lease); err != nil {
			return fmt.Errorf("revoking this server's endpoint lease: %w", err)
		}
		r.lease = 0
	} else if _, err := r.Etcd.Delete(ctx, r.leaseKey()); err != nil {
		return fmt.Errorf("deleting this server's endpoint lease: %w", err)
	}
	return r.reconcile(ctx, false)
}

func (r *Reconciler) leaseKey() string { return r.LeasePrefix + r.Advertise.String() }

// reconcile ensures the Service, renews this server's lease when self is set, and writes the
// endpoints from the leases that exist.
func (r *Reconciler) reconcile(ctx context.Context, self bool) error {
	if self {
		if err := r.ensureService(ctx); err != nil {
			return err
		}
		if err := r.renew(ctx); err != nil {
			return err
		}
	}
	resp, err := r.Etcd.Get(ctx, r.LeasePrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("listing API server leases: %w", err)
	}
	var addrs []netip.Addr
	for _, kv := range resp.Kvs {
		a, err := netip.ParseAddr(strings.TrimPrefix(string(kv.Key), r.LeasePrefix))
		if err != nil {
			continue
		}
		// Endpoints may not name loopback or link-local addresses (upstream validation), and
		// nothing outside the host could use them: a server advertising one is left out.
		if a.IsLoopback() || a.IsLinkLocalUnicast() {
			klog.V(1).InfoS("Not publishing an API server in the kubernetes Service's endpoints: its advertise address is not reachable from elsewhere", "address", a)
			continue
		}
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	if err := r.writeEndpoints(ctx, addrs); err != nil {
		return err
	}
	return r.writeEndpointSlice(ctx, addrs)
}

// renew keeps this server's lease key; a lost lease (etcd restarted, TTL passed while the
// server stalled) is granted anew.
func (r *Reconciler) renew(ctx context.Context) error {
	if r.lease != 0 {
		if _, err := r.Etcd.KeepAliveOnce(ctx, r.lease); err == nil {
			return nil
		}
		r.lease = 0
	}
	grant, err := r.Etcd.Grant(ctx, int64(r.TTL/time.Second))
	if err != nil {
		return fmt.Errorf("granting this server's endpoint lease: %w", err)
	}
	if _, err := r.Etcd.Put(ctx, r.leaseKey(), strconv.Itoa(r.Port), clientv3.WithLease(grant.ID)); err != nil {
		return fmt.Errorf("writing this server's endpoint lease: %w", err)
	}
	r.lease = grant.ID
	return nil
}

// Service is the kubernetes Service as upstream creates it.
func (r *Reconciler) Service() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
			Labels: map[string]string{"component": "apiserver", "provider": "kubernetes"}},
		Spec: corev1.ServiceSpec{
			Type:            corev1.ServiceTypeClusterIP,
			ClusterIP:       r.ServiceIP.String(),
			ClusterIPs:      []string{r.ServiceIP.String()},
			SessionAffinity: corev1.ServiceAffinityNone,
			Ports: []corev1.ServicePort{{Name: portName, Protocol: corev1.ProtocolTCP, Port: 443,
				TargetPort: intstr.FromInt32(int32(r.Port))}},
		},
	}
}

func (r *Reconciler) ensureService(ctx context.Context) error {
	services := r.Client.CoreV1().Services(namespace)
	want := r.Service()
	got, err := services.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = services.Create(ctx, want, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating the kubernetes Service: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the kubernetes Service: %w", err)
	}
	// Like upstream, only the ports are kept in line; a changed cluster IP needs a re-create.
	if len(got.Spec.Ports) == 1 && got.Spec.Ports[0].Port == 443 && got.Spec.Ports[0].TargetPort == want.Spec.Ports[0].TargetPort &&
		got.Spec.Ports[0].Name == portName && got.Spec.Ports[0].Protocol == corev1.ProtocolTCP {
		return nil
	}
	got.Spec.Ports = want.Spec.Ports
	if _, err := services.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating the kubernetes Service's ports: %w", err)
	}
	return nil
}

func (r *Reconciler) writeEndpoints(ctx context.Context, addrs []netip.Addr) error {
	want := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
			// The mirroring controller must not copy these into a second slice.
			Labels: map[string]string{discoveryv1.LabelSkipMirror: "true"}},
	}
	if len(addrs) > 0 {
		subset := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: portName, Port: int32(r.Port), Protocol: corev1.ProtocolTCP}}}
		for _, a := range addrs {
			subset.Addresses = append(subset.Addresses, corev1.EndpointAddress{IP: a.String()})
		}
		want.Subsets = []corev1.EndpointSubset{subset}
	}
	client := r.Client.CoreV1().Endpoints(namespace)
	got, err := client.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = client.Create(ctx, want, metav1.CreateOptions{})
		return wrap(err, "creating the kubernetes Endpoints")
	}
	if err != nil {
		return fmt.Errorf("reading the kubernetes Endpoints: %w", err)
	}
	if apiequality.Semantic.DeepEqual(got.Subsets, want.Subsets) && got.Labels[discoveryv1.LabelSkipMirror] == "true" {
		return nil
	}
	got.Subsets = want.Subsets
	if got.Labels == nil {
		got.Labels = map[string]string{}
	}
	got.Labels[discoveryv1.LabelSkipMirror] = "true"
	_, err = client.Update(ctx, got, metav1.UpdateOptions{})
	return wrap(err, "updating the kubernetes Endpoints")
}

func (r *Reconciler) writeEndpointSlice(ctx context.Context, addrs []netip.Addr) error {
	addressType := discoveryv1.AddressTypeIPv4
	if r.Advertise.Is6() {
		addressType = discoveryv1.AddressTypeIPv6
	}
	want := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: addressType,
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To(portName), Port: ptr.To(int32(r.Port)),
			Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		if a.Is6() != r.Advertise.Is6() {
			continue
		}
		want.Endpoints = append(want.Endpoints, discoveryv1.Endpoint{Addresses: []string{a.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	client := r.Client.DiscoveryV1().EndpointSlices(namespace)
	got, err := client.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = client.Create(ctx, want, metav1.CreateOptions{})
		return wrap(err, "creating the kubernetes EndpointSlice")
	}
	if err != nil {
		return fmt.Errorf("reading the kubernetes EndpointSlice: %w", err)
	}
	if got.AddressType != want.AddressType {
		// addressType is immutable.
		if err := client.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("replacing the kubernetes EndpointSlice: %w", err)
		}
		_, err = client.Create(ctx, want, metav1.CreateOptions{})
		return wrap(err, "creating the kubernetes EndpointSlice")
	}
	if apiequality.Semantic.DeepEqual(got.Endpoints, want.Endpoints) && apiequality.Semantic.DeepEqual(got.Ports, want.Ports) &&
		got.Labels[discoveryv1.LabelServiceName] == name {
		return nil
	}
	got.Endpoints, got.Ports = want.Endpoints, want.Ports
	if got.Labels == nil {
		got.Labels = map[string]string{}
	}
	got.Labels[discoveryv1.LabelServiceName] = name
	_, err = client.Update(ctx, got, metav1.UpdateOptions{})
	return wrap(err, "updating the kubernetes EndpointSlice")
}

// wrap adds what was being done; a conflict with another server's write is retried next round.
func wrap(err error, doing string) error {
	if err == nil || apierrors.IsAlreadyExists(err) {
		return nil
	}
	return fmt.Errorf("%s: %w", doing, err)
}
