// Package logserver is the agent's kubelet port: the API server fetches a container's output
// from it for `kubectl logs` (GET /containerLogs/{namespace}/{pod}/{container}, as from a
// kubelet). It serves HTTPS with a certificate it makes itself at start (the API server, like
// kube-apiserver without --kubelet-certificate-authority, does not verify it) and answers only
// clients whose certificate the cluster CA signed for pki.KubeletClientCommonName: the API
// server. Logs are the files the agent writes (package pods); they carry no timestamps, so
// the options that need them are refused with a clear message rather than ignored.
package logserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/agent/pods"
	"github.com/svcplane/svcplane/pkg/pki"
)

// DefaultPort is the kubelet's.
const DefaultPort = 10250

// Config is what Serve needs.
type Config struct {
	// Addr is host:port to listen on.
	Addr string
	// CAFile is the cluster CA, which signed the API server's client certificate.
	CAFile string
	// DataDir is the agent's; Pods' logs are under it.
	DataDir string
	// Hosts are the addresses the serving certificate names (the node IPs).
	Hosts []netip.Addr
	// PollInterval is how often a followed log is checked for more output; default 200 ms.
	PollInterval time.Duration
	// Listener, when set, is used instead of listening on Addr.
	Listener net.Listener
}

// Serve serves until ctx ends.
func Serve(ctx context.Context, cfg Config) error {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	tlsCfg, err := serverTLS(cfg)
	if err != nil {
		return err
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return fmt.Errorf("listening on %s for the API server's log requests: %w", cfg.Addr, err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		serveLog(w, r, cfg)
	})
	srv := &http.Server{Handler: mux, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	klog.InfoS("serving container logs to the API server", "address", ln.Addr())
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func serverTLS(cfg Config) (*tls.Config, error) {
	caPEM, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster CA, which signs the API server's client certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", cfg.CAFile)
	}
	cert, err := selfSigned(cfg.Hosts)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
		// The CA signs other certificates too (the API server's serving one, which cannot
		// authenticate a client anyway): only the API server's client certificate is accepted.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].Subject.CommonName != pki.KubeletClientCommonName {
				return fmt.Errorf("client certificate is not the API server's (%s)", pki.KubeletClientCommonName)
			}
			return nil
		},
	}, nil
}

func selfSigned(hosts []netip.Addr) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "svcplane-agent"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		tmpl.IPAddresses = append(tmpl.IPAddresses, h.AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// logOptions are the query parameters of a log request that this agent honours.
type logOptions struct {
	follow     bool
	tailLines  int64 // -1: all
	limitBytes int64 // 0: no limit
}

func parseOptions(r *http.Request) (logOptions, error) {
	q := r.URL.Query()
	o := logOptions{tailLines: -1}
	if b, _ := strconv.ParseBool(q.Get("timestamps")); b {
		return o, errors.New("timestamps: this agent's logs carry no timestamps")
	}
	if b, _ := strconv.ParseBool(q.Get("previous")); b {
		return o, errors.New("previous: this agent keeps one log per container, across its restarts")
	}
	for _, name := range []string{"sinceSeconds", "sinceTime"} {
		if q.Get(name) != "" {
			return o, fmt.Errorf("%s: this agent's logs carry no timestamps; use tailLines instead", name)
		}
	}
	var err error
	if v := q.Get("follow"); v != "" {
		if o.follow, err = strconv.ParseBool(v); err != nil {
			return o, fmt.Errorf("follow %q: %w", v, err)
		}
	}
	if v := q.Get("tailLines"); v != "" {
		if o.tailLines, err = strconv.ParseInt(v, 10, 64); err != nil || o.tailLines < 0 {
			return o, fmt.Errorf("tailLines %q: want a number of lines, 0 or more", v)
		}
	}
	if v := q.Get("limitBytes"); v != "" {
		if o.limitBytes, err = strconv.ParseInt(v, 10, 64); err != nil || o.limitBytes < 1 {
			return o, fmt.Errorf("limitBytes %q: want a number of bytes, 1 or more", v)
		}
	}
	return o, nil
}

func serveLog(w http.ResponseWriter, r *http.Request, cfg Config) {
	opts, err := parseOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ns, pod, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	// The container's name becomes part of a file name: a name that is not one (the API
	// server only sends names from the Pod's spec, which are DNS labels) is refused.
	if container == "" || container == "." || container == ".." || strings.ContainsAny(container, "/\\\x00") {
		http.Error(w, fmt.Sprintf("%q is not a container name", container), http.StatusBadRequest)
		return
	}
	path, err := pods.FindLog(cfg.DataDir, ns, pod, container)
	if err != nil {
		http.Error(w, fmt.Sprintf("container %q of pod %s/%s has no log on this node (not started yet, or stopped)", container, ns, pod), http.StatusNotFound)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	if opts.tailLines >= 0 {
		if err := seekTail(f, opts.tailLines); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	out := io.Writer(w)
	limited := &limitWriter{w: w, left: opts.limitBytes}
	if opts.limitBytes > 0 {
		out = limited
	}
	flusher, _ := w.(http.Flusher)
	for {
		if _, err := io.Copy(out, f); err != nil || (opts.limitBytes > 0 && limited.left <= 0) {
			return
		}
		if !opts.follow {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		// The log goes away with its Pod; a followed log ends then.
		if _, err := os.Stat(path); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(cfg.PollInterval):
		}
	}
}

// seekTail positions f at the start of its last n lines (a last line without a newline
// counts).
func seekTail(f *os.File, n int64) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	end := st.Size()
	if n == 0 {
		_, err := f.Seek(end, io.SeekStart)
		return err
	}
	buf := make([]byte, 32<<10)
	pos := end
	lines := int64(0)
	for pos > 0 {
		size := min(int64(len(buf)), pos)
		pos -= size
		if _, err := f.ReadAt(buf[:size], pos); err != nil {
			return err
		}
		for i := size - 1; i >= 0; i-- {
			if buf[i] != '\n' || pos+i == end-1 {
				continue // the newline that ends the last line starts no line
			}
			if lines++; lines == n {
				_, err := f.Seek(pos+i+1, io.SeekStart)
				return err
			}
		}
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}

type limitWriter struct {
	w    io.Writer
	left int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, io.ErrShortWrite
	}
	cut := p
	if int64(len(cut)) > l.left {
		cut = cut[:l.left]
	}
	n, err := l.w.Write(cut)
	l.left -= int64(n)
	if err == nil && len(cut) < len(p) {
		err = io.ErrShortWrite
	}
	return n, err
}
