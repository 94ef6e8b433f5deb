package userspace

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/proxy"
)

// syncBuffer is a bytes.Buffer klog may write to from any goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An SCTP Service cannot be served here; the proxy must say why, once, and neither fail the
// sync (the runner would retry it forever) nor stop serving the other Services.
func TestSCTPServicesAreReportedOnceAndDoNotStopOthers(t *testing.T) {
	var logs syncBuffer
	klog.LogToStderr(false)
	// Every line lands in the INFO file too (besides WARNING and ERROR): read only that one.
	klog.SetOutput(io.Discard)
	klog.SetOutputBySeverity("INFO", &logs)
	t.Cleanup(func() {
		klog.Flush()
		klog.SetOutput(nil)
		klog.LogToStderr(true)
	})

	h := newHarness(t, Options{})
	sctpName := serviceName("sctp", corev1.ProtocolSCTP)
	tcpName := serviceName("tcp", corev1.ProtocolTCP)
	sctp := &proxy.ServicePort{Name: sctpName, Protocol: corev1.ProtocolSCTP, ClusterIP: loopback, Port: 9}
	tcp := clusterIP(t, corev1.ProtocolTCP)
	tcp.Name, tcp.Protocol = tcpName, corev1.ProtocolTCP
	backend := tcpBackend(t, "tcp")
	snap := &proxy.Snapshot{
		Services: proxy.ServicePortMap{sctpName: sctp, tcpName: tcp},
		Endpoints: proxy.EndpointsMap{
			sctpName: {{IP: loopback, Port: 9, Ready: true, Serving: true}},
			tcpName:  {{IP: backend.Addr(), Port: int32(backend.Port()), Ready: true, Serving: true}},
		},
		Changed: sets.New(sctpName, tcpName),
		Synced:  true,
	}
	for range 2 {
		if err := h.p.Sync(snap, true); err != nil {
			t.Fatalf("Sync with an SCTP Service: %v", err)
		}
	}
	if got := helloClose(t, addrOf(tcp)); got != "tcp" {
		t.Errorf("the TCP Service answered %q next to an SCTP one, want tcp", got)
	}

	klog.Flush()
	want := "not served by the userspace proxy mode"
	if !sctpSockets() {
		want = "SCTP not supported by this kernel"
	}
	if n := strings.Count(logs.String(), want); n != 1 {
		t.Errorf("log says %q %d times over two syncs, want once; log:\n%s", want, n, logs.String())
	}
}
