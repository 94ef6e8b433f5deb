package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// ServiceHealthServer answers the healthCheckNodePort of every externalTrafficPolicy: Local
// Service: 200 while this node has a usable endpoint of it, 503 otherwise, so that a load
// balancer sends external traffic only to nodes that can serve it locally. The body is
// upstream's: {"service": {"namespace", "name"}, "localEndpoints": N}.
type ServiceHealthServer struct {
	host    string
	mu      sync.Mutex
	servers map[int32]*healthPort
}

type healthPort struct {
	srv *http.Server
	mu  sync.Mutex
	svc types.NamespacedName
	// local is the number of usable endpoints on this node.
	local int
}

// NewServiceHealthServer returns a server with no ports open; ports are opened on host
// ("" for every address of the node, as load balancers probe the node address).
func NewServiceHealthServer(host string) *ServiceHealthServer {
	return &ServiceHealthServer{host: host, servers: map[int32]*healthPort{}}
}

// Sync opens the healthCheckNodePorts of snap's Services, closes those no longer wanted, and
// updates the counts. Errors (a port in use) are logged: they must not stop the proxy.
func (s *ServiceHealthServer) Sync(snap *Snapshot) {
	want := map[int32]*healthPort{}
	for name, sp := range snap.Services {
		if !sp.ExternalPolicyLocal || sp.HealthCheckNodePort == 0 {
			continue
		}
		_, _, local := UsableEndpoints(sp, snap.Endpoints[name])
		hp := want[sp.HealthCheckNodePort]
		if hp == nil {
			hp = &healthPort{svc: name.NamespacedName}
			want[sp.HealthCheckNodePort] = hp
		}
		// Several ports of one Service share the health check port: any usable local
		// endpoint counts (upstream counts the Service's endpoints the same way).
		hp.local = max(hp.local, local)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for port, hp := range s.servers {
		if _, ok := want[port]; !ok {
			_ = hp.srv.Close()
			delete(s.servers, port)
		}
	}
	for port, w := range want {
		hp := s.servers[port]
		if hp == nil {
			var err error
			if hp, err = listenHealth(s.host, port); err != nil {
				klog.ErrorS(err, "opening a healthCheckNodePort", "service", w.svc, "port", port)
				continue
			}
			s.servers[port] = hp
		}
		hp.mu.Lock()
		hp.svc, hp.local = w.svc, w.local
		hp.mu.Unlock()
	}
}

// Close closes every port.
func (s *ServiceHealthServer) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for port, hp := range s.servers {
		_ = hp.srv.Close()
		delete(s.servers, port)
	}
}

func listenHealth(host string, port int32) (*healthPort, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
	if err != nil {
		return nil, fmt.Errorf("listening on healthCheckNodePort %d: %w", port, err)
	}
	hp := &healthPort{}
	hp.srv = &http.Server{Handler: http.HandlerFunc(hp.serve), BaseContext: func(net.Listener) context.Context { return context.Background() }}
	go func() {
		if err := hp.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "serving a healthCheckNodePort", "port", port)
		}
	}()
	return hp, nil
}

func (hp *healthPort) serve(w http.ResponseWriter, _ *http.Request) {
	hp.mu.Lock()
	svc, local := hp.svc, hp.local
	hp.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(local))
	if local == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"service":        map[string]string{"namespace": svc.Namespace, "name": svc.Name},
		"localEndpoints": local,
	})
}
