package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The fixed-rate load generator ("usbench loadgen", run inside the client namespace). wrk is
// closed-loop: each connection sends its next request when the previous answer arrives, so a
// slow path is simply offered less load and a stall hides the requests that would have queued
// behind it. For "added p99 latency" every path must get the same offered load, so this sends
// requests on a fixed schedule (open loop) and measures each one from the moment it was due,
// not from when it went out, which counts the queueing a stall causes (no coordinated
// omission). Requests are released in small bursts at the timer's resolution.

// latencyResult is what loadgen prints, as JSON, for the parent to collect.
type latencyResult struct {
	Sent, Failed      int
	P50, P99, P999    float64 // milliseconds
	AchievedPerSecond float64
}

func runLoadgen(args []string) error {
	fs := flag.NewFlagSet("loadgen", flag.ExitOnError)
	target := fs.String("target", "", "host:port of the HTTP server")
	rate := fs.Int("rate", 1000, "requests per second")
	duration := fs.Duration("duration", 8*time.Second, "how long to send")
	conns := fs.Int("conns", 8, "keep-alive connections (with -new-conn: most requests in flight)")
	newConn := fs.Bool("new-conn", false, "a new connection per request (Connection: close)")
	fs.Parse(args)

	total := int(duration.Seconds() * float64(*rate))
	interval := time.Second / time.Duration(*rate)
	due := make(chan time.Time, total)
	var mu sync.Mutex
	latencies := make([]time.Duration, 0, total)
	failed := 0
	record := func(d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
			return
		}
		latencies = append(latencies, d)
	}

	var wg sync.WaitGroup
	for range *conns {
		wg.Go(func() {
			var c *httpConn
			for at := range due {
				var err error
				if c == nil || *newConn {
					c, err = dialHTTP(*target)
				}
				if err == nil {
					err = c.get(*newConn)
				}
				if err != nil || *newConn {
					if c != nil {
						c.Close()
					}
					c = nil
				}
				record(time.Since(at), err)
			}
			if c != nil {
				c.Close()
			}
		})
	}
	// The schedule: request i is due at start + i*interval, whether or not a worker is free.
	// Go's timers wake a sleeping process with about a millisecond of slack, so a request is
	// timed from when it was released (due time plus that slack, which is the generator's and
	// not the path's); time spent waiting for a free worker still counts.
	start := time.Now()
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		due <- time.Now()
	}
	close(due)
	wg.Wait()
	elapsed := time.Since(start)

	slices.Sort(latencies)
	pct := func(q float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[min(len(latencies)-1, int(q*float64(len(latencies))))]) / 1e6
	}
	return json.NewEncoder(os.Stdout).Encode(latencyResult{
		Sent: total, Failed: failed, P50: pct(0.50), P99: pct(0.99), P999: pct(0.999),
		AchievedPerSecond: float64(len(latencies)) / elapsed.Seconds(),
	})
}

// httpConn is a minimal HTTP/1.1 client for the benchmark's "ok\n" server: net/http's client
// would add its own pooling and goroutines to what is measured.
type httpConn struct {
	net.Conn
	r *bufio.Reader
}

func dialHTTP(addr string) (*httpConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &httpConn{Conn: c, r: bufio.NewReaderSize(c, 4096)}, nil
}

func (c *httpConn) get(closeAfter bool) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
	if closeAfter {
		req = "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
	}
	if _, err := io.WriteString(c, req); err != nil {
		return err
	}
	length := -1
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if length < 0 {
		return fmt.Errorf("response without Content-Length")
	}
	_, err := c.r.Discard(length)
	return err
}
