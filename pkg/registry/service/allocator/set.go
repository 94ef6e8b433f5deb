package allocator

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/klog/v2"
)

// Key prefixes under the storage prefix (/registry). They hold one key per allocated IP or
// port, unlike upstream's single bitmap object, so that allocation is a per-key compare-and-swap.
const (
	serviceIPsPrefix = "/svcplane/serviceips/"
	nodePortsPrefix  = "/svcplane/servicenodeports/"
)

// Set is every range the server allocates from: one IP range per family (the first is the
// primary, which Services get unless they ask otherwise) and the node port range.
type Set struct {
	IPs     map[corev1.IPFamily]*IPRange
	Primary corev1.IPFamily
	Ports   *PortRange

	client     *clientv3.Client
	ipPrefix   string
	portPrefix string
	startOnce  sync.Once
}

// NewSet builds the allocators on client; storagePrefix is the API server's etcd prefix
// (/registry). cidrs are --service-cluster-ip-range: one, or one of each family.
func NewSet(client *clientv3.Client, storagePrefix string, cidrs []netip.Prefix, ports PortRangeSpec) (*Set, error) {
	root := strings.TrimSuffix(storagePrefix, "/")
	s := &Set{IPs: map[corev1.IPFamily]*IPRange{}, client: client,
		ipPrefix: root + serviceIPsPrefix, portPrefix: root + nodePortsPrefix}
	for i, cidr := range cidrs {
		r, err := NewIPRange(client, s.ipPrefix, cidr)
		if err != nil {
			return nil, err
		}
		if _, dup := s.IPs[r.Family()]; dup {
			return nil, fmt.Errorf("--service-cluster-ip-range has two %s ranges; give at most one per family", r.Family())
		}
		s.IPs[r.Family()] = r
		if i == 0 {
			s.Primary = r.Family()
		}
	}
	if len(s.IPs) == 0 {
		return nil, fmt.Errorf("no service cluster IP range")
	}
	s.Ports = NewPortRange(client, s.portPrefix, ports)
	return s, nil
}

// Start keeps every index in step with etcd until ctx ends and waits for the first sync.
func (s *Set) Start(ctx context.Context) error {
	s.startOnce.Do(func() {
		for _, r := range s.IPs {
			go r.Run(ctx)
		}
		go s.Ports.Run(ctx)
	})
	for _, r := range s.IPs {
		if err := r.WaitSynced(ctx); err != nil {
			return err
		}
	}
	return s.Ports.WaitSynced(ctx)
}

// Client is the etcd client the allocators use; the kubernetes Service's leases share it.
func (s *Set) Client() *clientv3.Client { return s.client }

// ForIP returns the range a belongs to, if any.
func (s *Set) ForIP(a netip.Addr) *IPRange {
	for _, r := range s.IPs {
		if r.Contains(a) {
			return r
		}
	}
	return nil
}

// NewEtcdClient connects to the etcd the API server stores objects in, with the same TLS
// settings, so that allocations live next to the Services that hold them.
func NewEtcdClient(cfg storagebackend.TransportConfig) (*clientv3.Client, error) {
	var tlsConfig *tls.Config
	if cfg.CertFile != "" || cfg.KeyFile != "" || cfg.TrustedCAFile != "" {
		info := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.TrustedCAFile}
		var err error
		if tlsConfig, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("loading etcd client TLS settings: %w", err)
		}
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.ServerList,
		TLS:                  tlsConfig,
		DialTimeout:          20 * time.Second,
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd %v for allocations: %w", cfg.ServerList, err)
	}
	klog.V(2).InfoS("Connected to etcd for Service allocations", "endpoints", cfg.ServerList)
	return client, nil
}
