package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"time"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// ForwardOptions configures the loopback forwarder, the only thing a sandbox runs in the
// host's network namespace.
type ForwardOptions struct {
	// ListenFD is an inherited, already listening TCP socket on the host's loopback.
	ListenFD int
	// Namespace is where connections to Target are made from (the control-plane namespace).
	Namespace string
	// Target is an IP:port inside Namespace.
	Target string
	// Log receives one line per failed connection; nil discards.
	Log io.Writer
}

// RunForwarder accepts connections on the inherited listener and relays each to Target, dialled
// from inside Namespace, until ctx ends.
func RunForwarder(ctx context.Context, opts ForwardOptions) error {
	f := os.NewFile(uintptr(opts.ListenFD), "forwarder-listener")
	if f == nil {
		return fmt.Errorf("no listening socket on fd %d", opts.ListenFD)
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("using fd %d as the forwarder's listener: %w", opts.ListenFD, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := exitWithNamespace(ctx, cancel, opts.Namespace, opts.Log); err != nil {
		return err
	}
	return Forward(ctx, ln, opts.Namespace, opts.Target, opts.Log)
}

// namespaceCheckInterval is how often the forwarder checks that its namespace still exists.
const namespaceCheckInterval = 500 * time.Millisecond

// exitWithNamespace calls cancel once namespace ns is deleted or replaced. The forwarder is
// the only sandbox process outside the sandbox's namespaces, so teardown by other means than
// `down` (stale cleanup, `ip netns delete`) would otherwise leave it holding the port and the
// topology's lock forever.
func exitWithNamespace(ctx context.Context, cancel context.CancelFunc, ns string, logw io.Writer) error {
	if logw == nil {
		logw = io.Discard
	}
	path := topology.NamespacePath(ns)
	original, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("forwarding into namespace %s: %w", ns, err)
	}
	go func() {
		tick := time.NewTicker(namespaceCheckInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if current, err := os.Stat(path); err != nil || !os.SameFile(original, current) {
				fmt.Fprintf(logw, "forwarder: namespace %s is gone; exiting\n", ns)
				cancel()
				return
			}
		}
	}()
	return nil
}

// Forward relays every connection accepted on ln to target, dialled from inside namespace ns.
// It returns when ctx ends (nil) or ln fails.
func Forward(ctx context.Context, ln net.Listener, ns, target string, logw io.Writer) error {
	if logw == nil {
		logw = io.Discard
	}
	logger := log.New(logw, "forwarder: ", log.LstdFlags)
	logger.Printf("forwarding %s to %s in namespace %s", ln.Addr(), target, ns)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accepting on %s: %w", ln.Addr(), err)
		}
		// Relays end with ctx (see relay) or with their connections; nobody waits for them.
		go func() {
			if err := relay(ctx, conn, ns, target); err != nil {
				logger.Print(err)
			}
		}()
	}
}

func relay(ctx context.Context, client net.Conn, ns, target string) error {
	defer client.Close()
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	upstream, err := topology.Dial(dialCtx, ns, "tcp", target)
	cancel()
	if err != nil {
		return fmt.Errorf("connection from %s: dialling %s in %s: %w", client.RemoteAddr(), target, ns, err)
	}
	defer upstream.Close()
	stop := context.AfterFunc(ctx, func() {
		client.Close()
		upstream.Close()
	})
	defer stop()

	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// Pass on the end of one direction (e.g. a client's CloseWrite) without cutting the other.
		if tcp, ok := dst.(*net.TCPConn); ok {
			tcp.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(upstream, client)
	go pipe(client, upstream)
	<-done
	<-done
	return nil
}
