package dns

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestUpstreamsDefaultToTheNameserversOfResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(path, []byte("search example.test\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n"), 0o644)
	o := NewOptions()
	o.ResolvConf = path
	if err := o.Complete(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"127.0.0.53:53", "[::1]:53"}; !slices.Equal(o.Upstream, want) {
		t.Errorf("upstreams %q, want %q", o.Upstream, want)
	}
}

func TestExplicitUpstreamsGetPort53(t *testing.T) {
	o := NewOptions()
	o.Upstream = []string{"127.0.0.1", "127.0.0.1:5353"}
	o.Complete()
	if want := []string{"127.0.0.1:53", "127.0.0.1:5353"}; !slices.Equal(o.Upstream, want) {
		t.Errorf("upstreams %q, want %q", o.Upstream, want)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	o := NewOptions()
	o.Listen = []string{"127.0.0.1"}
	o.Upstream = []string{"resolver.example"}
	o.PodRecords = "sometimes"
	o.TTL = 0
	o.ClusterDomain = ""
	err := o.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"--dns-listen", "upstream", "--pod-records", "ttl", "--cluster-domain"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
