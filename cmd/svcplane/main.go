// Command svcplane is the Kubernetes Service networking stack in one binary.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/spf13/cobra"

	agentcmd "github.com/svcplane/svcplane/pkg/cmd/agent"
	dnscmd "github.com/svcplane/svcplane/pkg/cmd/dns"
	logscmd "github.com/svcplane/svcplane/pkg/cmd/logs"
	proxycmd "github.com/svcplane/svcplane/pkg/cmd/proxy"
	"github.com/svcplane/svcplane/pkg/cmd/sandbox"
	"github.com/svcplane/svcplane/pkg/cmd/server"
	"github.com/svcplane/svcplane/pkg/cmd/testserver"
	"github.com/svcplane/svcplane/pkg/version"
)

// init keeps the main goroutine on the main thread, so that no other goroutine ever runs there.
// Goroutines enter Pods' network namespaces on the thread they run on (netlink handles do),
// and /proc/self/ns/net names the main thread's namespace: the proxy compares it with its own
// thread's before it programs nftables, and it must always be the process's own.
func init() { runtime.LockOSThread() }

func main() {
	root := &cobra.Command{
		Use:           "svcplane",
		Short:         "The Kubernetes Service networking stack in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		server.NewCommand(),
		sandbox.NewCommand(),
		dnscmd.NewCommand(),
		agentcmd.NewCommand(),
		proxycmd.NewCommand(),
		logscmd.NewCommand(),
		testserver.NewCommand(),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			Run:   func(*cobra.Command, []string) { fmt.Println(version.Get().GitVersion) },
		},
	)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
