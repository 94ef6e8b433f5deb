package proxy

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func freePort(t *testing.T) int32 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

func TestHealthCheckNodePortReportsLocalEndpoints(t *testing.T) {
	port := freePort(t)
	name := ServicePortName{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "web"}, Protocol: "TCP"}
	sp := &ServicePort{Name: name, NodePort: 30080, ExternalPolicyLocal: true, HealthCheckNodePort: port}
	local := &Endpoint{IP: netip.MustParseAddr("10.244.1.2"), Port: 8080, Ready: true, Serving: true, IsLocal: true}
	remote := &Endpoint{IP: netip.MustParseAddr("10.244.2.2"), Port: 8080, Ready: true, Serving: true}
	s := NewServiceHealthServer("127.0.0.1")
	defer s.Close()

	get := func() (int, int) {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(int(port)) + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			LocalEndpoints int `json:"localEndpoints"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body.LocalEndpoints
	}
	s.Sync(&Snapshot{Services: ServicePortMap{name: sp}, Endpoints: EndpointsMap{name: {local, remote}}})
	if code, n := get(); code != 200 || n != 1 {
		t.Errorf("with a local endpoint: %d, %d local; want 200, 1", code, n)
	}
	s.Sync(&Snapshot{Services: ServicePortMap{name: sp}, Endpoints: EndpointsMap{name: {remote}}})
	if code, n := get(); code != 503 || n != 0 {
		t.Errorf("with only a remote endpoint: %d, %d local; want 503, 0", code, n)
	}
	s.Sync(&Snapshot{Services: ServicePortMap{}})
	if _, err := http.Get("http://127.0.0.1:" + strconv.Itoa(int(port)) + "/healthz"); err == nil {
		t.Error("the port stayed open after the Service went away")
	}
}
