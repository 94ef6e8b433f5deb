package sandbox

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestUpOptionsValidate(t *testing.T) {
	valid := UpOptions{Name: "default", Nodes: 3, Timeout: time.Minute}
	cases := []struct {
		name   string
		modify func(*UpOptions)
		want   []string // substrings of the error; none means valid
	}{
		{"defaults", func(*UpOptions) {}, nil},
		{"bad name", func(o *UpOptions) { o.Name = "Bad_Name" }, []string{"--name"}},
		{"no nodes", func(o *UpOptions) { o.Nodes = 0 }, []string{"--nodes 0"}},
		{"agent is accepted", func(o *UpOptions) { o.Agent = true }, nil},
		{"dual-stack is accepted", func(o *UpOptions) { o.IPFamily = "dual" }, nil},
		{"IPv6-only is accepted", func(o *UpOptions) { o.IPFamily = "ipv6" }, nil},
		{"an unknown family is not", func(o *UpOptions) { o.IPFamily = "IPv6" }, []string{`--ip-family "IPv6": use ipv4, dual or ipv6`}},
		{"every problem at once", func(o *UpOptions) { o.Name, o.Nodes, o.Timeout = "x_", 500, 0 },
			[]string{"--name", "--nodes 500", "--timeout"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := valid
			tc.modify(&o)
			err := o.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors mentioning %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestNameDefaultsToDefault(t *testing.T) {
	o := UpOptions{}
	o.Complete()
	if o.Name != "default" {
		t.Errorf("Name = %q after Complete, want default", o.Name)
	}
	cmd := NewCommand()
	for _, sub := range []string{"up", "down", "exec"} {
		c, _, err := cmd.Find([]string{sub})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Flags().Lookup("name").DefValue; got != "default" {
			t.Errorf("%s --name defaults to %q, want default", sub, got)
		}
	}
}

func TestServeForwardIsHidden(t *testing.T) {
	var out bytes.Buffer
	cmd := NewCommand()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "serve-forward") {
		t.Errorf("help lists the internal serve-forward:\n%s", out.String())
	}
	for _, sub := range []string{"up", "down", "exec", "status"} {
		if !strings.Contains(out.String(), sub) {
			t.Errorf("help does not list %s:\n%s", sub, out.String())
		}
	}
}
