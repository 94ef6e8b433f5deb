// Package testserver is the hidden `svcplane testserver` command: the built-in test server
// that Pods with the svcplane/testserver or agnhost image run (see package netexec).
package testserver

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/svcplane/svcplane/pkg/netexec"
)

// NewCommand returns `svcplane testserver`.
func NewCommand() *cobra.Command {
	var cfg netexec.Config
	var delaySeconds int
	cmd := &cobra.Command{
		Use:    "testserver",
		Short:  "Serve HTTP (/hostname, /clientip, /echo, /env, /healthz) and TCP/UDP echo, for tests",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.ShutdownDelay = time.Duration(delaySeconds) * time.Second
			cfg.Log = cmd.OutOrStdout()
			s, err := netexec.Listen(cfg)
			if err != nil {
				return err
			}
			return s.Serve(cmd.Context())
		},
	}
	cmd.Flags().IntSliceVar(&cfg.Ports, "port", nil, "Port to serve on TCP and UDP (repeatable; default 8080).")
	cmd.Flags().StringVar(&cfg.Hostname, "hostname", "", "Name /hostname answers; default the host name.")
	cmd.Flags().BoolVar(&cfg.ServeHostname, "serve-hostname", false, "Answer every request with the hostname, as agnhost serve-hostname does.")
	cmd.Flags().StringVar(&cfg.Address, "address", "", "Address to bind; default all.")
	cmd.Flags().IntVar(&delaySeconds, "delay-shutdown", 0, "Seconds to keep serving after SIGTERM, with /healthz failing (agnhost netexec's flag).")
	return cmd
}
