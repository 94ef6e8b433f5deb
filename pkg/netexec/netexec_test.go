package netexec

import (
	"context"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Address = "127.0.0.1"
	if cfg.Ports == nil {
		cfg.Ports = []int{0}
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func get(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHTTPEndpoints(t *testing.T) {
	t.Setenv("PROBE_VAR", "value-1")
	s := start(t, Config{Hostname: "pod-a"})
	base := "http://" + s.Addrs()[0].String()

	if _, body := get(t, "GET", base+"/hostname"); body != "pod-a" {
		t.Errorf("/hostname = %q", body)
	}
	if _, body := get(t, "GET", base+"/echo?msg=hello%20there"); body != "hello there" {
		t.Errorf("/echo = %q", body)
	}
	if _, body := get(t, "GET", base+"/clientip"); !strings.HasPrefix(body, "127.0.0.1:") {
		t.Errorf("/clientip = %q, want 127.0.0.1:<port>", body)
	}
	if _, body := get(t, "GET", base+"/env"); !strings.Contains(body, "\nPROBE_VAR=value-1\n") && !strings.HasPrefix(body, "PROBE_VAR=value-1\n") {
		t.Errorf("/env lacks PROBE_VAR=value-1:\n%s", body)
	}
	if code, _ := get(t, "GET", base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	get(t, "POST", base+"/healthz?fail=true")
	if code, _ := get(t, "GET", base+"/healthz"); code != 500 {
		t.Errorf("/healthz after fail = %d, want 500", code)
	}
	get(t, "POST", base+"/healthz?fail=false")
	if code, _ := get(t, "GET", base+"/healthz"); code != 200 {
		t.Errorf("/healthz after recovery = %d", code)
	}
}

func TestTCPAndUDPEchoShareThePort(t *testing.T) {
	s := start(t, Config{Hostname: "pod-a"})
	conn, err := net.Dial("tcp", s.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte("ping over tcp"))
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(conn, buf, len("ping over tcp"))
	if err != nil || string(buf[:n]) != "ping over tcp" {
		t.Errorf("tcp echo = %q, %v", buf[:n], err)
	}

	uc, err := net.Dial("udp", s.UDPAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(5 * time.Second))
	uc.Write([]byte("ping over udp"))
	n, err = uc.Read(buf)
	if err != nil || string(buf[:n]) != "ping over udp" {
		t.Errorf("udp echo = %q, %v", buf[:n], err)
	}
}

func TestServeHostnameAnswersEveryPath(t *testing.T) {
	s := start(t, Config{Hostname: "pod-b", ServeHostname: true})
	if _, body := get(t, "GET", "http://"+s.Addrs()[0].String()+"/anything"); body != "pod-b" {
		t.Errorf("got %q", body)
	}
}

func TestForImage(t *testing.T) {
	cases := []struct {
		image      string
		cmd, args  []string
		want       Config
		ok, hasErr bool
	}{
		{"svcplane/testserver", nil, nil, Config{}, true, false},
		{"svcplane/testserver:latest", nil, []string{"--port=80", "--port", "81"}, Config{Ports: []int{80, 81}}, true, false},
		{"registry.k8s.io/e2e-test-images/agnhost:2.53", nil, []string{"netexec", "--http-port=8080", "--udp-port=8081"}, Config{Ports: []int{8080, 8081}}, true, false},
		{"agnhost", []string{"/agnhost", "netexec"}, nil, Config{Ports: []int{8080}}, true, false},
		{"svcplane/testserver", nil, []string{"--delay-shutdown=5"}, Config{ShutdownDelay: 5 * time.Second}, true, false},
		{"agnhost", nil, []string{"netexec", "--delay-shutdown", "3"}, Config{Ports: []int{8080}, ShutdownDelay: 3 * time.Second}, true, false},
		{"svcplane/testserver", nil, []string{"--delay-shutdown=soon"}, Config{}, true, true},
		{"agnhost", nil, []string{"serve-hostname", "--port", "9376", "--udp"}, Config{Ports: []int{9376}, ServeHostname: true}, true, false},
		{"agnhost", nil, []string{"pause"}, Config{}, true, true},
		{"nginx:1.27", nil, nil, Config{}, false, false},
	}
	for _, tc := range cases {
		got, ok, err := ForImage(tc.image, tc.cmd, tc.args)
		if ok != tc.ok || (err != nil) != tc.hasErr || (err == nil && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("ForImage(%q, %q, %q) = %+v, %v, %v; want %+v, %v, error %v", tc.image, tc.cmd, tc.args, got, ok, err, tc.want, tc.ok, tc.hasErr)
		}
	}
}

// serve runs a server for cfg until stop is called (what SIGTERM does to `svcplane
// testserver`); done closes when Serve has returned.
func serve(t *testing.T, cfg Config) (s *Server, stop func(), done <-chan struct{}) {
	t.Helper()
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { s.Serve(ctx); close(served) }()
	t.Cleanup(func() { cancel(); <-served })
	return s, cancel, served
}

func TestShutdownDelayKeepsServingWhileFailingReadiness(t *testing.T) {
	// The delay is long enough that the checks below finish inside it on a loaded machine.
	s, cancel, done := serve(t, Config{Hostname: "pod-c", Address: "127.0.0.1", Ports: []int{0}, ShutdownDelay: 2 * time.Second})
	base := "http://" + s.Addrs()[0].String()
	if code, _ := get(t, "GET", base+"/healthz"); code != 200 {
		t.Fatalf("/healthz before SIGTERM = %d", code)
	}
	cancel() // what SIGTERM does to `svcplane testserver`
	code := 0
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if code, _ = get(t, "GET", base+"/healthz"); code == http.StatusServiceUnavailable {
			break
		}
	}
	if code != http.StatusServiceUnavailable {
		t.Errorf("/healthz during the delay = %d, want 503 so the Pod turns unready", code)
	}
	// New connections are still answered: proxies that have not yet dropped the endpoint
	// keep sending them for a moment.
	if _, body := get(t, "GET", base+"/hostname"); body != "pod-c" {
		t.Errorf("/hostname during the delay = %q", body)
	}
	select {
	case <-done:
		t.Fatal("Serve returned before the delay passed")
	default:
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still running 10s after a 2s delay")
	}
	if _, err := net.DialTimeout("tcp", s.Addrs()[0].String(), time.Second); err == nil {
		t.Error("still accepting connections after the delay")
	}
}

// lockedBuffer is an io.Writer the test can read while the server writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The log is what `svcplane logs` shows of a test Pod: start, requests (not probes), stop.
func TestLogShowsStartRequestsAndStop(t *testing.T) {
	var log lockedBuffer
	s, cancel, done := serve(t, Config{Address: "127.0.0.1", Ports: []int{0}, Log: &log})
	base := "http://" + s.Addrs()[0].String()
	get(t, "GET", base+"/hostname")
	get(t, "GET", base+"/healthz")
	cancel()
	<-done

	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	want := []string{"Serving HTTP and TCP echo on [" + s.Addrs()[0].String() + "]", "GET /hostname from 127.0.0.1:", "Stopping"}
	if len(lines) != len(want) {
		t.Fatalf("log has %d lines, want %d:\n%s", len(lines), len(want), log.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d = %q, want it to contain %q", i+1, lines[i], w)
		}
	}
}
