// Package cmdutil holds what every svcplane subcommand shares.
package cmdutil

import (
	goflag "flag"

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
