package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape is one reading of a /metrics page.
type scrape []sample

// metricsClient reads a proxy's /metrics on the loopback of its own network namespace: the
// connection is made from a thread inside that namespace, so nothing listens outside it.
func metricsClient(netns string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return topology.Dial(ctx, netns, network, addr)
			},
		},
	}
}

func fetch(ctx context.Context, c *http.Client, url string) (scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseText(resp.Body)
}

// parseText reads the lines of the text exposition format that carry values; this is all a
// benchmark needs, and it keeps the benchmark off the exposition library's API churn.
func parseText(r io.Reader) (scrape, error) {
	var out scrape
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("bad metrics line %q", line)
			}
			s.name = line[:i]
			for _, kv := range splitLabels(line[i+1 : j]) {
				k, v, _ := strings.Cut(kv, "=")
				s.labels[k] = strings.Trim(v, `"`)
			}
			rest = strings.TrimSpace(line[j+1:])
		} else {
			s.name, rest, _ = strings.Cut(line, " ")
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("bad metrics line %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("bad value in metrics line %q: %w", line, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out, sc.Err()
}

// splitLabels splits `a="x",b="y,z"` at the commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// sum adds the values of every series of name whose labels include want.
func (s scrape) sum(name string, want map[string]string) float64 {
	total := 0.0
	for _, x := range s {
		if x.name == name && matches(x.labels, want) {
			total += x.value
		}
	}
	return total
}

func matches(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// histogram is a cumulative histogram summed over the matching series.
type histogram struct {
	bounds []float64 // upper bounds, ascending, +Inf last
	counts []float64 // cumulative
	count  float64
	sum    float64
}

func (s scrape) histogram(name string, want map[string]string) histogram {
	byBound := map[float64]float64{}
	for _, x := range s {
		if x.name != name+"_bucket" || !matches(x.labels, want) {
			continue
		}
		le, err := strconv.ParseFloat(x.labels["le"], 64)
		if err != nil {
			continue
		}
		byBound[le] += x.value
	}
	h := histogram{count: s.sum(name+"_count", want), sum: s.sum(name+"_sum", want)}
	for b := range byBound {
		h.bounds = append(h.bounds, b)
	}
	sort.Float64s(h.bounds)
	for _, b := range h.bounds {
		h.counts = append(h.counts, byBound[b])
	}
	return h
}

// minus returns the observations made between an earlier reading and this one.
func (h histogram) minus(earlier histogram) histogram {
	out := histogram{bounds: h.bounds, count: h.count - earlier.count, sum: h.sum - earlier.sum}
	for i, b := range h.bounds {
		c := h.counts[i]
		for j, eb := range earlier.bounds {
			if eb == b {
				c -= earlier.counts[j]
			}
		}
		out.counts = append(out.counts, c)
	}
	return out
}

// quantile estimates the q-quantile as Prometheus' histogram_quantile does: find the bucket
// holding the rank and interpolate linearly inside it. It is only as fine as the buckets
// (kube-proxy's programming-latency buckets are 0.25 s, 0.5 s, then whole seconds), so the
// bucket's bounds are returned too.
func (h histogram) quantile(q float64) (est, lower, upper float64) {
	if h.count == 0 || len(h.bounds) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	rank := q * h.count
	prevBound, prevCount := 0.0, 0.0
	for i, b := range h.bounds {
		if h.counts[i] >= rank {
			if math.IsInf(b, 1) {
				// Beyond the last finite bucket: all that is known is "more than".
				return prevBound, prevBound, b
			}
			inBucket := h.counts[i] - prevCount
			if inBucket <= 0 {
				return b, prevBound, b
			}
			return prevBound + (b-prevBound)*(rank-prevCount)/inBucket, prevBound, b
		}
		prevBound, prevCount = b, h.counts[i]
	}
	return prevBound, prevBound, math.Inf(1)
}
