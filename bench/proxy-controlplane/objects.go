package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

const (
	benchNamespace = "proxy-bench"
	servicePort    = 80
	endpointPort   = 8080
	managedBy      = "bench.svcplane.io"
)

// The Services are selector-less and their EndpointSlices hand-made, as an endpoint controller
// would write them (ready endpoints, the trigger-time annotation), so no Pods are needed and
// no controller's pace is part of the measurement.

func serviceName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// endpointAddr is endpoint j of Service i: 10.64.0.0 + 10i + j, outside the cluster CIDR and
// never routed anywhere (the namespaces have no route off the machine).
func endpointAddr(i, j, perService int) string {
	base := netip.MustParseAddr("10.64.0.0").As4()
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	n += uint32(i*perService + j)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}).String()
}

func ensureNamespace(ctx context.Context, c kubernetes.Interface) error {
	_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// ensureNode creates the Node kube-proxy runs as (it reads its node IP from the Node's
// addresses and waits for the object at start).
func ensureNode(ctx context.Context, c kubernetes.Interface, name, ip string) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}}}
	if _, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating Node %s: %w", name, err)
	}
	// The server's controllers may touch a new Node too (taints, conditions): retry on conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
		_, err = c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("setting Node %s's addresses: %w", name, err)
	}
	return nil
}

func newService(i int) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: serviceName(i)},
		Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{Name: "http", Port: servicePort, TargetPort: intstr.FromInt32(endpointPort), Protocol: corev1.ProtocolTCP}},
		},
	}
}

// newSlice is Service i's EndpointSlice with perService ready endpoints, stamped with the
// trigger time an endpoint controller would write: when the change that it carries was made.
func newSlice(i, perService int, trigger time.Time) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: serviceName(i) + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: serviceName(i),
				discoveryv1.LabelManagedBy: managedBy},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(endpointPort)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for j := 0; j < perService; j++ {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{endpointAddr(i, j, perService)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)}})
	}
	stamp(s, trigger)
	return s
}

func stamp(s *discoveryv1.EndpointSlice, trigger time.Time) {
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[corev1.EndpointsLastChangeTriggerTime] = trigger.UTC().Format(time.RFC3339Nano)
}

// createService creates Service i and its slice; the trigger time is taken before the Service
// is written, so the measured latency covers both writes, as it would for a new Service.
func createService(ctx context.Context, c kubernetes.Interface, i, perService int) error {
	trigger := time.Now()
	if _, err := c.CoreV1().Services(benchNamespace).Create(ctx, newService(i), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Service %s: %w", serviceName(i), err)
	}
	if _, err := c.DiscoveryV1().EndpointSlices(benchNamespace).Create(ctx, newSlice(i, perService, trigger), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating EndpointSlice of %s: %w", serviceName(i), err)
	}
	return nil
}
