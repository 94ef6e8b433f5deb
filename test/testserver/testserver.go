// Package testserver runs the real svcplane binary for tests: it builds cmd/svcplane once per
// test process, starts `svcplane server` on a free loopback port with its own data dir, waits until
// /readyz answers and hands back a kubeconfig, a client-go client and a kubectl runner. Tests that
// use it see exactly what a user sees: the same binary, flags, certificates and tokens.
package testserver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options choose how the server is started.
type Options struct {
	// DataDir reuses a data dir (e.g. of an earlier server); empty means a fresh temporary one.
	DataDir string
	// Args are extra flags for `svcplane server`.
	Args []string
}

// Server is a running `svcplane server` process.
type Server struct {
	DataDir    string
	Port       int
	Kubeconfig string
	RestConfig *rest.Config
	Client     kubernetes.Interface

	args []string
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
	mu   sync.Mutex
}

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// Binary returns the path of a svcplane binary built from this checkout, building it on first use.
// SVCPLANE_BIN overrides it, e.g. to test a release build.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SVCPLANE_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "svcplane-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "svcplane")
		cmd := exec.Command("go", "build", "-o", binary, "./cmd/svcplane")
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/svcplane: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// moduleRoot is found from this file's location so tests work from any package directory.
func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Start starts a server and stops it when the test ends. On failure it prints the server's log.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary(t)
	dataDir := opts.DataDir
	if dataDir == "" {
		// Not t.TempDir: etcd's unix socket lives under the data dir and long test names would
		// push its path past the 107-byte limit.
		var err error
		if dataDir, err = os.MkdirTemp("", "svcp-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dataDir) })
	}
	s := &Server{DataDir: dataDir, args: opts.Args, Kubeconfig: filepath.Join(dataDir, "admin.kubeconfig")}
	s.start(t, bin)
	t.Cleanup(func() {
		s.Stop(t)
		if t.Failed() {
			t.Logf("server log (last 8 KiB):\n%s", tail(s.Log(), 8<<10))
		}
	})
	return s
}

func (s *Server) start(t testing.TB, bin string) {
	t.Helper()
	var lastErr error
	// A free port can be taken between our probe and the server's bind; try a few.
	for attempt := 0; attempt < 3; attempt++ {
		if s.Port == 0 || attempt > 0 {
			s.Port = freePort(t)
		}
		lastErr = s.launch(bin)
		if lastErr == nil {
			lastErr = s.waitReady(60 * time.Second)
		}
		if lastErr == nil {
			return
		}
		s.kill()
		if !strings.Contains(s.Log(), "address already in use") {
			break
		}
	}
	t.Fatalf("starting svcplane server: %v\nlog:\n%s", lastErr, tail(s.Log(), 8<<10))
}

func mentionsDNS(args []string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, "--dns") {
			return true
		}
	}
	return false
}

func (s *Server) launch(bin string) error {
	args := append([]string{"server", "--data-dir", s.DataDir, "--bind-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(s.Port)}, s.args...)
	if !mentionsDNS(s.args) {
		// The built-in DNS server defaults to :53 on every address; tests that want it say where
		// (a loopback port), all others must not listen beyond loopback.
		args = append(args, "--dns=false")
	}
	cmd := exec.Command(bin, args...)
	s.mu.Lock()
	s.log = &bytes.Buffer{}
	cmd.Stdout = lockedWriter{&s.mu, s.log}
	cmd.Stderr = lockedWriter{&s.mu, s.log}
	s.mu.Unlock()
	// Its own process group, so a test killed mid-way does not leave the server behind with ours.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	return nil
}

func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("server exited: %v", s.cmd.ProcessState)
		default:
		}
		if lastErr = s.connect(); lastErr == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			body, err := s.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			cancel()
			if err == nil && string(body) == "ok" {
				return nil
			}
			lastErr = fmt.Errorf("/readyz: %v %s", err, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s: %v", timeout, lastErr)
}

// connect loads the kubeconfig the server wrote; it exists from before /readyz turns ok.
func (s *Server) connect() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		return err
	}
	if !strings.HasSuffix(cfg.Host, ":"+strconv.Itoa(s.Port)) {
		return fmt.Errorf("kubeconfig still names %s", cfg.Host)
	}
	cfg.QPS, cfg.Burst = 1000, 2000
	// Deprecation warnings (v1 Endpoints) would flood test logs; tests that care read them from kubectl.
	cfg.WarningHandler = rest.NoWarnings{}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	s.RestConfig, s.Client = cfg, client
	return nil
}

// Stop stops the server gracefully (SIGTERM), killing it if it does not exit within 20 s.
func (s *Server) Stop(t testing.TB) {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		// SIGQUIT makes the Go runtime print every goroutine to the log: what it was stuck on.
		_ = s.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-s.done:
		case <-time.After(2 * time.Second):
		}
		t.Errorf("svcplane server did not stop within 20s of SIGTERM; killed it. Goroutines:\n%s", tail(s.Log(), 64<<10))
		s.kill()
	}
	s.cmd = nil
}

func (s *Server) kill() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// Kill stops the server abruptly, as a crash or power loss would.
func (s *Server) Kill(t testing.TB) { s.kill() }

// Restart stops the server and starts it again on the same data dir and port.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop(t)
	s.start(t, Binary(t))
}

// Log returns everything the server printed so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// Kubectl runs the installed kubectl against the server with the admin kubeconfig.
func (s *Server) Kubectl(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return s.KubectlWithInput(t, "", args...)
}

// KubectlWithInput runs kubectl with input on its stdin (for `apply -f -`).
func (s *Server) KubectlWithInput(t testing.TB, input string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	path := KubectlPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"--kubeconfig", s.Kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if input != "" {
		cmd.Stdin = strings.NewReader(input)
	}
	// kubectl caches discovery under $HOME; give each run of a test its own so servers don't mix.
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+filepath.Join(s.DataDir, "kubectl-cache"))
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// KubectlPath finds kubectl, skipping the test with the reason when it is not installed.
func KubectlPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("KUBECTL"); p != "" {
		return p
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed (.ci/run installs it); set KUBECTL to use another one")
	}
	return p
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
