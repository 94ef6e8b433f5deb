package logserver

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/svcplane/svcplane/pkg/pki"
)

// logServer serves a data dir holding one Pod, default/web, whose container c has printed
// three lines, and returns its URL, the log's path and the PKI whose client certificate it
// accepts. Everything is on loopback.
func logServer(t *testing.T) (base, logPath string, certs pki.Files) {
	t.Helper()
	certs = pki.FilesIn(t.TempDir())
	if _, err := pki.Ensure(certs, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	podDir := filepath.Join(dataDir, "pods", "uid-1")
	if err := os.MkdirAll(podDir, 0o700); err != nil {
		t.Fatal(err)
	}
	state := `{"uid":"uid-1","namespace":"default","name":"web","startTime":"2026-11-25T00:00:00Z"}`
	if err := os.WriteFile(filepath.Join(podDir, "state.json"), []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath = filepath.Join(podDir, "c.log")
	if err := os.WriteFile(logPath, []byte("l1\nl2\nl3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Config{Listener: ln, CAFile: certs.CACert, DataDir: dataDir, PollInterval: 20 * time.Millisecond})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "https://" + ln.Addr().String(), logPath, certs
}

func client(t *testing.T, certFile, keyFile string) *http.Client {
	t.Helper()
	cfg := &tls.Config{InsecureSkipVerify: true} // as the API server: the agent's certificate is its own
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestLogsAsTheAPIServerAsksForThem(t *testing.T) {
	base, _, certs := logServer(t)
	c := client(t, certs.KubeletClientCert, certs.KubeletClientKey)
	for _, tc := range []struct {
		query      string
		code       int
		body       string // exact for 200, a substring otherwise
		containsIt bool
	}{
		{"", 200, "l1\nl2\nl3\n", false},
		{"?tailLines=2", 200, "l2\nl3\n", false},
		{"?tailLines=0", 200, "", false},
		{"?tailLines=10", 200, "l1\nl2\nl3\n", false},
		{"?limitBytes=4", 200, "l1\nl", false},
		{"?tailLines=1&limitBytes=100", 200, "l3\n", false},
		{"?timestamps=true", 400, "no timestamps", true},
		{"?previous=true", 400, "one log per container", true},
		{"?sinceSeconds=10", 400, "use tailLines", true},
		{"?tailLines=-1", 400, "0 or more", true},
		{"?limitBytes=0", 400, "1 or more", true},
	} {
		code, body := get(t, c, base+"/containerLogs/default/web/c"+tc.query)
		if code != tc.code || (tc.containsIt && !strings.Contains(body, tc.body)) || (!tc.containsIt && body != tc.body) {
			t.Errorf("%q: %d %q, want %d %q", tc.query, code, body, tc.code, tc.body)
		}
	}
	if code, body := get(t, c, base+"/containerLogs/default/other/c"); code != 404 || !strings.Contains(body, "default/other") {
		t.Errorf("unknown Pod: %d %q, want 404 naming it", code, body)
	}
	if code, _ := get(t, c, base+"/containerLogs/default/web/sidecar"); code != 404 {
		t.Errorf("unknown container: %d, want 404", code)
	}
	// A name that would leave the Pod's directory.
	if code, body := get(t, c, base+"/containerLogs/default/web/..%2F..%2Fuid-1%2Fc"); code != 400 {
		t.Errorf("container ../../uid-1/c: %d %q, want 400", code, body)
	}
}

func TestOnlyTheAPIServersClientCertificateIsServed(t *testing.T) {
	base, _, certs := logServer(t)
	url := base + "/containerLogs/default/web/c"
	if code, body := get(t, client(t, "", ""), url); code != 0 {
		t.Errorf("without a client certificate: %d %q, want the handshake refused", code, body)
	}
	// Signed by the cluster CA, but a serving certificate with another name.
	if code, body := get(t, client(t, certs.ServingCert, certs.ServingKey), url); code != 0 {
		t.Errorf("with the API server's serving certificate: %d %q, want the handshake refused", code, body)
	}
	// Right name, wrong CA.
	other := pki.FilesIn(t.TempDir())
	if _, err := pki.Ensure(other, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, client(t, other.KubeletClientCert, other.KubeletClientKey), url); code != 0 {
		t.Errorf("with another cluster's client certificate: %d %q, want the handshake refused", code, body)
	}
}

func TestAFollowedLogStreamsNewLinesAndEndsWithThePod(t *testing.T) {
	base, logPath, certs := logServer(t)
	resp, err := client(t, certs.KubeletClientCert, certs.KubeletClientKey).Get(base + "/containerLogs/default/web/c?follow=true&tailLines=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	read := func(want string) {
		t.Helper()
		buf := make([]byte, len(want))
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != want {
			t.Fatalf("read %q (%v), want %q", buf, err, want)
		}
	}
	read("l3\n")
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("l4\n")
	f.Close()
	read("l4\n")
	// The Pod goes, and its log with it: the stream ends.
	if err := os.Remove(logPath); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Errorf("after the log went: %q, %v; want the end of the stream", rest, err)
	}
}
