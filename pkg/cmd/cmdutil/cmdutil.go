// Package cmdutil holds what every svcplane subcommand shares.
package cmdutil

import (
	goflag "flag"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// AddLogFlags gives cmd klog's -v and --vmodule: the only logging flags our commands expose,
// since every component logs to stderr through klog (as the Kubernetes libraries do).
func AddLogFlags(cmd *cobra.Command) {
	fs := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(fs)
	cmd.Flags().AddGoFlag(fs.Lookup("v"))
	cmd.Flags().AddGoFlag(fs.Lookup("vmodule"))
}

// InNamedNetns checks that this process runs in the network namespace /run/netns/name (the same
// namespace file: device and inode). Components the sandbox starts in a namespace check it, so a
// copy started in the host's namespace by mistake refuses to run instead of touching the host.
func InNamedNetns(name string) error {
	self, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		return fmt.Errorf("--netns %s: reading this process's network namespace: %w", name, err)
	}
	want, err := os.Stat(filepath.Join("/run/netns", name))
	if err != nil {
		return fmt.Errorf("--netns %s: %w", name, err)
	}
	a, okA := self.Sys().(*syscall.Stat_t)
	b, okB := want.Sys().(*syscall.Stat_t)
	if !okA || !okB || a.Dev != b.Dev || a.Ino != b.Ino {
		return fmt.Errorf("--netns %s: this process is not running in that network namespace; refusing to start", name)
	}
	return nil
}
