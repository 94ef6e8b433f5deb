// Package etcd runs the embedded single-member etcd that stores every API object when the user
// gives no --etcd-servers. Clients reach it only through a unix socket in a 0700 directory under
// the data dir, so no other user on the machine and no other host can talk to it.
package etcd

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
)

// Server is a running embedded etcd.
type Server struct {
	// Endpoint is the client URL for the storage backend, e.g. unix:///data/etcd/etcd.sock.
	Endpoint string
	etcd     *embed.Etcd
}

// socketName is short on purpose: a unix socket path is limited to 107 bytes, and data dirs can be deep.
const socketName = "c.sock"

// Start starts etcd with its data in dir and returns once it serves clients, or with the reason
// it could not start. Stop it with Close.
func Start(ctx context.Context, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating etcd data dir %s: %w", dir, err)
	}
	// MkdirAll keeps the mode of a directory that already exists; the socket's privacy depends on it.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("restricting etcd data dir %s: %w", dir, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(abs, socketName)
	if len(sock) > 100 {
		return nil, fmt.Errorf("etcd socket path %s is longer than a unix socket allows; use a shorter --data-dir", sock)
	}
	// A socket left by a killed server would make the listen fail.
	_ = os.Remove(sock)

	cfg := embed.NewConfig()
	cfg.Name = "svcplane"
	cfg.Dir = filepath.Join(abs, "data")
	clientURL := url.URL{Scheme: "unix", Path: sock}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	// A single member never dials its own peer URL, but etcd insists on listening on one. Port 0
	// lets the kernel pick a free loopback port so that servers side by side never collide.
	peerURL := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	cfg.ListenMetricsUrls = nil
	cfg.LogLevel = zapcore.ErrorLevel.String()
	// The API server compacts on its own schedule; etcd keeps a bounded history on top.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"
	cfg.QuotaBackendBytes = 8 << 30
	// etcd keeps this many applied raft entries in memory for followers that fall behind (5000 by
	// default, each a whole request). This member never has followers; at 10k Services the
	// default held ~20 MiB.
	cfg.SnapshotCatchUpEntries = 100

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed while starting: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s was not ready after 60s", dir)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Server{Endpoint: clientURL.String(), etcd: e}, nil
}

// Err reports a fatal error of the running etcd.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops etcd, waiting for in-flight requests.
//
// It gives etcd closeTimeout to stop. etcd commits every write to its WAL with fsync before
// answering, so giving up on a slow close loses nothing, and a server that hangs at exit
// (seen when a client still retries against the closed socket) is worse than a fast one.
func (s *Server) Close() {
	done := make(chan struct{})
	go func() { s.etcd.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeTimeout):
		fmt.Fprintf(os.Stderr, "embedded etcd did not stop within %s; exiting without waiting (its data is already durable)\n", closeTimeout)
	}
}

const closeTimeout = 5 * time.Second
