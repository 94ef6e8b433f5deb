package config

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// recorder logs the events one family's handler received.
type recorder struct{ events []string }

func (r *recorder) OnServiceAdd(s *corev1.Service) { r.events = append(r.events, "add "+s.Name) }
func (r *recorder) OnServiceUpdate(_, s *corev1.Service) {
	r.events = append(r.events, "update "+s.Name)
}
func (r *recorder) OnServiceDelete(s *corev1.Service) { r.events = append(r.events, "delete "+s.Name) }
func (r *recorder) OnServiceSynced()                  { r.events = append(r.events, "services synced") }
func (r *recorder) OnEndpointSliceAdd(s *discoveryv1.EndpointSlice) {
	r.events = append(r.events, fmt.Sprintf("add slice %s", s.AddressType))
}
func (r *recorder) OnEndpointSliceUpdate(_, _ *discoveryv1.EndpointSlice) {}
func (r *recorder) OnEndpointSliceDelete(_ *discoveryv1.EndpointSlice)    {}
func (r *recorder) OnEndpointSlicesSynced()                               {}

func svc(name string, clusterIPs ...string) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{ClusterIPs: clusterIPs}}
	if len(clusterIPs) > 0 {
		s.Spec.ClusterIP = clusterIPs[0]
	}
	return s
}

// A Service reaches the tracker of each family it has a ClusterIP of, and moves in and out of
// the IPv6 tracker as its ipFamilyPolicy gains or loses the IPv6 ClusterIP.
func TestPerFamilyRoutesServicesByClusterIPFamily(t *testing.T) {
	v4, v6 := &recorder{}, &recorder{}
	h := PerFamily(FamilyHandler{corev1.IPv4Protocol, v4}, FamilyHandler{corev1.IPv6Protocol, v6})

	single := svc("web", "10.96.0.5")
	dual := svc("web", "10.96.0.5", "fd00:96::5")
	h.OnServiceAdd(single)
	h.OnServiceUpdate(single, dual) // PreferDualStack: the IPv6 tracker sees it appear
	h.OnServiceUpdate(dual, dual)
	h.OnServiceUpdate(dual, single) // back to SingleStack: it leaves the IPv6 tracker
	h.OnServiceAdd(svc("v6only", "fd00:96::7"))
	h.OnServiceAdd(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "legacy"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.9"}})
	h.OnServiceAdd(svc("headless", corev1.ClusterIPNone))
	h.OnServiceSynced()
	h.OnEndpointSliceAdd(&discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv6})

	wantV4 := []string{"add web", "update web", "update web", "update web", "add legacy", "services synced", "add slice IPv6"}
	wantV6 := []string{"add web", "update web", "delete web", "add v6only", "services synced", "add slice IPv6"}
	if !slices.Equal(v4.events, wantV4) {
		t.Errorf("IPv4 handler got %q\nwant %q", v4.events, wantV4)
	}
	if !slices.Equal(v6.events, wantV6) {
		t.Errorf("IPv6 handler got %q\nwant %q", v6.events, wantV6)
	}
}
