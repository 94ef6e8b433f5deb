package cache

import (
	"net/netip"
	"testing"

	"github.com/svcplane/svcplane/pkg/dns/object"
)

var (
	ipA = netip.MustParseAddr("10.0.0.1")
	ipB = netip.MustParseAddr("10.0.0.2")
)

func slice(name, svc string, ips ...netip.Addr) *object.EndpointSlice {
	s := &object.EndpointSlice{Namespace: "ns", Name: name, Service: svc}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, object.Endpoint{Addresses: []netip.Addr{ip}, Ready: true})
	}
	return s
}

func endpointsOf(ix *Index, svc string) []netip.Addr {
	var out []netip.Addr
	ix.EachEndpoint("ns", svc, func(_ *object.EndpointSlice, ep *object.Endpoint) { out = append(out, ep.Addresses...) })
	return out
}

func servicesAt(ix *Index, ip netip.Addr) []string {
	var out []string
	ix.EachEndpointWithIP(ip, func(svc *object.Service, s *object.EndpointSlice, _ *object.Endpoint) { out = append(out, s.Service) })
	return out
}

func TestASliceWhoseServiceLabelChangesMovesToTheNewService(t *testing.T) {
	ix := New(false)
	ix.SetEndpointSlice(slice("s1", "old", ipA))
	ix.SetEndpointSlice(slice("s1", "new", ipA))
	if got := endpointsOf(ix, "old"); len(got) != 0 {
		t.Errorf("old Service still has %v", got)
	}
	if got := endpointsOf(ix, "new"); len(got) != 1 {
		t.Errorf("new Service has %v", got)
	}
	if got := servicesAt(ix, ipA); len(got) != 1 || got[0] != "new" {
		t.Errorf("reverse index: %v", got)
	}
}

func TestDeletesLeaveNoReverseEntries(t *testing.T) {
	ix := New(false)
	ix.SetService(&object.Service{Namespace: "ns", Name: "web", ClusterIPs: []netip.Addr{ipA}})
	ix.SetEndpointSlice(slice("s1", "web", ipB))
	ix.DeleteService("ns", "web")
	ix.DeleteEndpointSlice("ns", "s1")
	if len(ix.clusterIPs) != 0 || len(ix.endpointIPs) != 0 || len(ix.slices) != 0 || len(ix.sliceOwner) != 0 {
		t.Errorf("left behind: clusterIPs %v endpointIPs %v slices %v owners %v", ix.clusterIPs, ix.endpointIPs, ix.slices, ix.sliceOwner)
	}
}

func TestAnUpdatedServiceLosesItsOldClusterIP(t *testing.T) {
	ix := New(false)
	ix.SetService(&object.Service{Namespace: "ns", Name: "web", ClusterIPs: []netip.Addr{ipA}})
	ix.SetService(&object.Service{Namespace: "ns", Name: "web", ClusterIPs: []netip.Addr{ipB}})
	if got := ix.ServicesWithClusterIP(ipA); len(got) != 0 {
		t.Errorf("old ClusterIP still maps to %v", got)
	}
	if got := ix.ServicesWithClusterIP(ipB); len(got) != 1 {
		t.Errorf("new ClusterIP maps to %v", got)
	}
}

func TestPodIPsAreCountedPerNamespace(t *testing.T) {
	ix := New(true)
	ix.SetPod(&object.Pod{Namespace: "ns", Name: "a", IPs: []netip.Addr{ipA}})
	ix.SetPod(&object.Pod{Namespace: "ns", Name: "b", IPs: []netip.Addr{ipA}}) // IP reuse while a terminates
	ix.DeletePod("ns", "a")
	if !ix.PodHasIP("ns", ipA) {
		t.Error("IP forgotten while Pod b still has it")
	}
	if ix.PodHasIP("other", ipA) {
		t.Error("IP found in another namespace")
	}
	ix.DeletePod("ns", "b")
	if ix.PodHasIP("ns", ipA) {
		t.Error("IP kept after the last Pod went")
	}
}

func TestSyncedOnlyOnceEveryKindIsListed(t *testing.T) {
	ix := New(true)
	for _, store := range []interface{ Replace([]any, string) error }{serviceStore{ix}, sliceStore{ix}, namespaceStore{ix}} {
		if ix.Synced() {
			t.Fatal("synced before every kind was listed")
		}
		store.Replace(nil, "1")
	}
	if ix.Synced() {
		t.Fatal("synced without the Pods list")
	}
	podStore{ix}.Replace(nil, "1")
	if !ix.Synced() {
		t.Fatal("not synced after every list")
	}
}

func TestReadersSeeWholeSlicesWhileWritersReplaceThem(t *testing.T) {
	ix := New(false)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			if i%2 == 0 {
				ix.SetEndpointSlice(slice("s1", "web", ipA, ipB))
			} else {
				ix.SetEndpointSlice(slice("s1", "web", ipA))
			}
		}
	}()
	for {
		select {
		case <-done:
			return
		default:
		}
		if n := len(endpointsOf(ix, "web")); n != 0 && n != 1 && n != 2 {
			t.Fatalf("saw %d endpoints", n)
		}
		servicesAt(ix, ipB)
	}
}
