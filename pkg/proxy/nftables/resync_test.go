package nftables

import (
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/svcplane/svcplane/pkg/proxy"
)

// Addresses of these tests: the affinity Service "sticky" at 10.96.0.9:80 with endpoints
// 10.244.1.9 and 10.244.1.10 (port 8080, both on this node's loopback), a second Service
// "other" at 10.96.0.30, clients 10.250.0.200 to 10.250.0.207.

func stickyService(timeout int32) testService {
	return testService{
		makeService("sticky", "10.96.0.9", 80, corev1.ProtocolTCP, func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To(timeout)}}
		}),
		makeSlice("sticky", 8080, corev1.ProtocolTCP, ep{"10.244.1.9", testNode, true, false}, ep{"10.244.1.10", testNode, true, false}),
	}
}

// TestKernelAffinitySurvivesFullSync pins two clients to endpoints of a ClientIP Service,
// runs full syncs (the periodic resync, and what a restarted proxy does first) and checks
// that every client still reaches the endpoint it was pinned to, and that a full sync after
// other changes leaves exactly what Dump describes (no leftovers of removed Services).
func TestKernelAffinitySurvivesFullSync(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft binary to list the kernel's ruleset")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ns := inFreshNetns(t)
		if err := ipIn(ns, [][]string{
			{"link", "set", "lo", "up"},
			{"addr", "add", "10.250.0.200/29", "dev", "lo"},
			{"addr", "add", "10.244.1.9/32", "dev", "lo"},
			{"addr", "add", "10.244.1.10/32", "dev", "lo"},
			{"route", "add", "10.96.0.0/12", "dev", "lo"},
		}); err != nil {
			t.Error(err)
			return
		}
		for _, addr := range []string{"10.244.1.9:8080", "10.244.1.10:8080"} {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Write([]byte(addr))
					c.Close()
				}
			}()
		}
		backendFor := func(client string) string {
			d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(client)}}
			c, err := d.Dial("tcp", "10.96.0.9:80")
			if err != nil {
				t.Errorf("from %s: %v", client, err)
				return ""
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Second))
			b, _ := io.ReadAll(c)
			return string(b)
		}

		other := testService{makeService("other", "10.96.0.30", 80, corev1.ProtocolTCP, func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
		}), makeSlice("other", 8080, corev1.ProtocolTCP, ep{"10.244.1.9", testNode, true, false})}
		tr := proxy.NewTracker(corev1.IPv4Protocol, testNode, nil)
		for _, s := range []testService{stickyService(600), other} {
			tr.OnServiceAdd(s.svc)
			tr.OnEndpointSliceAdd(s.slice)
		}
		p, err := kernelProxier(testConfig())
		if err != nil {
			t.Error(err)
			return
		}
		if err := p.Sync(tr.Snapshot(), true); err != nil {
			t.Errorf("first full sync: %v", err)
			return
		}
		// Each client is pinned by its first connection. Were the pins lost, each client's
		// next connection would pick either endpoint (and pin again): all 8 clients landing
		// on their old endpoints by chance is 1/256.
		pinned := map[string]string{}
		for i := 200; i < 208; i++ {
			c := "10.250.0." + strconv.Itoa(i)
			pinned[c] = backendFor(c)
		}
		check := func(stage string) {
			for c, want := range pinned {
				for i := 0; i < 10; i++ {
					if got := backendFor(c); got != want {
						t.Errorf("%s: connection %d from %s went to %s, pinned to %s", stage, i+1, c, got, want)
						return
					}
				}
			}
		}
		check("before any resync")
		if err := p.Sync(tr.Snapshot(), true); err != nil {
			t.Errorf("periodic full sync: %v", err)
			return
		}
		check("after a full sync")

		// A full sync by a new Proxier (a restarted proxy) keeps the pins too.
		p2 := NewProxier(testConfig(), nil)
		k2, err := NewNetlinkKernel(p2)
		if err != nil {
			t.Error(err)
			return
		}
		p2.kernel = k2
		if err := p2.Sync(tr.Snapshot(), true); err != nil {
			t.Errorf("full sync of a new proxier: %v", err)
			return
		}
		check("after a restart's full sync")

		// Removing a Service and changing the other's timeout: a full sync leaves exactly
		// Dump's table, the old affinity sets gone (the changed timeout recreates them).
		tr.OnServiceDelete(other.svc)
		tr.OnServiceUpdate(nil, stickyService(300).svc)
		if err := p2.Sync(tr.Snapshot(), true); err != nil {
			t.Errorf("full sync after changes: %v", err)
			return
		}
		out, err := exec.Command("nsenter", "--net="+ns, "nft", "list", "table", "ip", TableName).CombinedOutput()
		if err != nil {
			t.Errorf("nft list table: %v: %s", err, out)
			return
		}
		kernel, err := CanonicalListing(string(out))
		if err != nil {
			t.Error(err)
			return
		}
		if dump := p2.Dump(); kernel != dump {
			t.Errorf("after a full sync the kernel (-) differs from Dump (+):\n%s", lineDiff(kernel, dump))
		}
		if strings.Contains(kernel, "timeout 10m") || strings.Contains(kernel, "10.96.0.30") {
			t.Errorf("leftovers of the old objects:\n%s", kernel)
		}
	}()
	<-done
}
