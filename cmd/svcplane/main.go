// Command svcplane is the Kubernetes Service networking stack in one binary.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
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
