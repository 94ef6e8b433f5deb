package dns

import (
	"context"
	"net"
	"net/netip"
	"reflect"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
)

// managedBy marks the EndpointSlice we write, so that no endpoint controller (the mirroring one
// included) takes it over.
const managedBy = "svcplane-dns"

// publish makes the DNS server reachable at the kube-dns ClusterIP: the Service, and — because
// the server is a process on the host, not a Pod a selector could find — an EndpointSlice with
// the advertise address, as the API server does for the kubernetes Service.
func (c *Component) publish(ctx context.Context) {
	c.retry(ctx, "creating the kube-dns Service", c.ensureService)
	if ep, ok := c.endpoint(); ok {
		c.retry(ctx, "publishing the kube-dns endpoint", func(ctx context.Context) error { return c.ensureEndpointSlice(ctx, ep) })
	}
}

// retry runs fn until it succeeds, the error is one retrying cannot fix, or ctx ends; the API may
// still be starting, or kube-system not created yet.
func (c *Component) retry(ctx context.Context, what string, fn func(context.Context) error) {
	_ = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		err := fn(ctx)
		switch {
		case err == nil:
			return true, nil
		case apierrors.IsInvalid(err) || apierrors.IsForbidden(err) && !apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
			// e.g. the ClusterIP is outside the service range or taken by another Service.
			klog.ErrorS(err, "Cannot publish the DNS server; Pods will not reach it through the kube-dns ClusterIP", "step", what)
			return true, nil
		}
		klog.V(2).InfoS("Will retry", "step", what, "err", err)
		return false, nil
	})
}

// ensureService creates the Service unless it exists. An existing one is left alone: an
// administrator may have changed it on purpose.
func (c *Component) ensureService(ctx context.Context) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:      ServiceName,
			Namespace: ServiceNamespace,
			Labels: map[string]string{
				"k8s-app":                       ServiceName,
				"kubernetes.io/name":            "CoreDNS",
				"kubernetes.io/cluster-service": "true",
			},
		},
		Spec: corev1.ServiceSpec{
			ClusterIP: c.opts.ServiceIP,
			Ports: []corev1.ServicePort{
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(53)},
			},
		},
	}
	_, err := c.client.CoreV1().Services(ServiceNamespace).Create(ctx, svc, metav1.CreateOptions{})
	if err == nil {
		klog.InfoS("Created the DNS Service", "service", ServiceNamespace+"/"+ServiceName, "clusterIP", c.opts.ServiceIP)
	}
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// endpoint is where Pods reach this server: the advertise address, on the port of a listener
// that covers it. Loopback addresses are of no use to Pods (and the API rejects them).
func (c *Component) endpoint() (netip.AddrPort, bool) {
	ip, err := netip.ParseAddr(c.opts.AdvertiseAddress)
	if err != nil || ip.IsLoopback() || ip.IsUnspecified() {
		return netip.AddrPort{}, false
	}
	for _, a := range c.server.Addrs() {
		udp, ok := a.(*net.UDPAddr)
		if !ok {
			continue
		}
		bound, _ := netip.AddrFromSlice(udp.IP)
		if bound.Unmap() == ip || bound.IsUnspecified() {
			return netip.AddrPortFrom(ip, uint16(udp.Port)), true
		}
	}
	return netip.AddrPort{}, false
}

// ensureEndpointSlice writes the slice, replacing an older one whose address or port differs
// (the server moved, or was restarted with another --dns-listen).
func (c *Component) ensureEndpointSlice(ctx context.Context, ep netip.AddrPort) error {
	family := discoveryv1.AddressTypeIPv4
	if ep.Addr().Is6() {
		family = discoveryv1.AddressTypeIPv6
	}
	port := int32(ep.Port())
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	ready := true
	want := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      ServiceName + "-" + managedBy,
			Namespace: ServiceNamespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: ServiceName,
				discoveryv1.LabelManagedBy:   managedBy,
			},
		},
		AddressType: family,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{ep.Addr().String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		}},
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr("dns"), Protocol: &udp, Port: &port},
			{Name: ptr("dns-tcp"), Protocol: &tcp, Port: &port},
		},
	}
	slices := c.client.DiscoveryV1().EndpointSlices(ServiceNamespace)
	have, err := slices.Get(ctx, want.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = slices.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if have.AddressType == want.AddressType && reflect.DeepEqual(have.Endpoints, want.Endpoints) && reflect.DeepEqual(have.Ports, want.Ports) {
		return nil
	}
	if have.AddressType != want.AddressType {
		// The address type of a slice is immutable.
		if err := slices.Delete(ctx, want.Name, metav1.DeleteOptions{}); err != nil {
			return err
		}
		_, err = slices.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	want.ResourceVersion = have.ResourceVersion
	_, err = slices.Update(ctx, want, metav1.UpdateOptions{})
	return err
}

func ptr[T any](v T) *T { return &v }
