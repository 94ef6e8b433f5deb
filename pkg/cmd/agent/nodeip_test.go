package agent

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
)

// optionsFrom parses args as the agent's command line would, and completes the options.
func optionsFrom(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	o := &Options{HeartbeatInterval: time.Second, AnnounceBeaconInterval: time.Second, NodeName: "n1"}
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(append([]string{"--server", "https://127.0.0.1:6443", "--token", "T"}, args...)); err != nil {
		t.Fatal(err)
	}
	return o, o.Complete()
}

func TestNodeIPTakesOneAddressOrOnePerFamily(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  []string // nil: an error
	}{
		{"10.250.0.11", []string{"10.250.0.11"}},
		{"fd00:250::b", []string{"fd00:250::b"}},
		{"10.250.0.11,fd00:250::b", []string{"10.250.0.11", "fd00:250::b"}},
		{" fd00:250::b , 10.250.0.11", []string{"fd00:250::b", "10.250.0.11"}}, // IPv6 primary
		{"::ffff:10.250.0.11", []string{"10.250.0.11"}},
		{"10.250.0.11,10.250.0.12", nil},
		{"fd00:250::b,fd00:250::c", nil},
		{"10.250.0.11,fd00:250::b,10.250.0.12", nil},
		{"10.250.0.11,", nil},
		{"10.250.0.0/24", nil},
		{"node1", nil},
		{"fe80::1%eth0", nil},
		{"0.0.0.0", nil},
		{"10.250.0.11,::", nil},
	} {
		got, err := parseNodeIPs(tc.value)
		if tc.want == nil {
			if err == nil {
				t.Errorf("--node-ip %q: accepted as %v, want an error", tc.value, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("--node-ip %q: %v", tc.value, err)
			continue
		}
		if s := addrStrings(got); !slices.Equal(s, tc.want) {
			t.Errorf("--node-ip %q: %v, want %v", tc.value, s, tc.want)
		}
	}
}

func TestNodeIPFlagErrorsNameTheFlag(t *testing.T) {
	_, err := optionsFrom(t, "--node-ip", "10.0.0.1,10.0.0.2")
	if err == nil || !strings.Contains(err.Error(), "--node-ip") || !strings.Contains(err.Error(), "one per IP family") {
		t.Errorf("two IPv4 node IPs: error %v, want one naming --node-ip and the rule", err)
	}
}

// Every node IP must be an address of the agent's own network namespace; loopback addresses
// are local to every namespace, documentation addresses to none here.
func TestEveryNodeIPMustBeLocal(t *testing.T) {
	if !isLocalAddress(netip.IPv6Loopback()) {
		t.Skip("this network namespace has no IPv6 loopback address (no IPv6?)")
	}
	o, err := optionsFrom(t, "--node-ip", "127.0.0.1,::1")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Errorf("local node IPs rejected: %v", err)
	}
	o, err = optionsFrom(t, "--node-ip", "127.0.0.1,2001:db8::77")
	if err != nil {
		t.Fatal(err)
	}
	err = o.Validate()
	if err == nil || !strings.Contains(err.Error(), "--node-ip 2001:db8::77 is not an address of this host") {
		t.Errorf("a foreign IPv6 node IP: error %v, want it named as not local", err)
	}
	if err != nil && strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("the local IPv4 node IP was reported too: %v", err)
	}
}

func TestNodeGetsAnInternalIPPerNodeIPAndNodePortsAnswerOnThem(t *testing.T) {
	o, err := optionsFrom(t, "--node-ip", "10.250.0.11,fd00:250::b")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range o.nodeStatus(nil, time.Now()).Addresses {
		got = append(got, string(a.Type)+"="+a.Address)
	}
	want := []string{string(corev1.NodeInternalIP) + "=10.250.0.11", string(corev1.NodeInternalIP) + "=fd00:250::b", string(corev1.NodeHostName) + "=n1"}
	if !slices.Equal(got, want) {
		t.Errorf("node addresses %v, want %v", got, want)
	}
	prefixes := nodePortPrefixes(o.nodeIPs)
	wantPrefixes := []netip.Prefix{netip.MustParsePrefix("10.250.0.11/32"), netip.MustParsePrefix("fd00:250::b/128")}
	if !slices.Equal(prefixes, wantPrefixes) {
		t.Errorf("NodePort addresses %v, want %v", prefixes, wantPrefixes)
	}
}

func addrStrings(ips []netip.Addr) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}
