// Package sandbox is the `svcplane sandbox` command: a whole cluster in network namespaces on
// this machine (see pkg/sandbox).
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/svcplane/svcplane/pkg/sandbox"
	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// NewCommand returns `svcplane sandbox` with its subcommands up, down, exec, status and the
// hidden serve-forward that `up` starts in the background.
func NewCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sandbox",
		Short: "Run a whole cluster in network namespaces on this machine",
		Long: `Run a whole svcplane cluster (control plane, nodes, an outside client) inside
network namespaces on this machine. The API is reachable from the host on a loopback port;
nothing in the host's own network configuration is changed. Needs root.`,
		SilenceUsage: true,
	}
	cmd.AddCommand(newUpCommand(), newDownCommand(), newExecCommand(), newStatusCommand(), newServeForwardCommand())
	return cmd
}

// UpOptions are the flags of `svcplane sandbox up`.
type UpOptions struct {
	Name      string
	Nodes     int
	Agent     bool
	ProxyMode string
	// IPFamily is ipv4 (the default) or dual: dual adds the IPv6 plan, and IPv6 pod and
	// Service ranges (kind's networking.ipFamily names the same choice).
	IPFamily string
	Timeout  time.Duration
}

// Complete fills defaults.
func (o *UpOptions) Complete() {
	if o.Name == "" {
		o.Name = sandbox.DefaultName
	}
}

// Validate reports every problem with the flags at once.
func (o *UpOptions) Validate() error {
	var errs []error
	if err := topology.ValidateName(o.Name); err != nil {
		errs = append(errs, fmt.Errorf("--name: %w", err))
	}
	if o.Nodes < 1 || o.Nodes > topology.MaxNodes {
		errs = append(errs, fmt.Errorf("--nodes %d: use 1 to %d", o.Nodes, topology.MaxNodes))
	}
	if o.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %v: must be positive", o.Timeout))
	}
	if o.ProxyMode != "" && o.ProxyMode != "nftables" && o.ProxyMode != "userspace" && o.ProxyMode != "none" {
		errs = append(errs, fmt.Errorf("--proxy-mode %q: use nftables, userspace or none", o.ProxyMode))
	}
	if !sandbox.IPFamily(o.IPFamily).Valid() {
		errs = append(errs, fmt.Errorf("--ip-family %q: use %s, %s or %s", o.IPFamily, sandbox.FamilyIPv4, sandbox.FamilyDual, sandbox.FamilyIPv6))
	}
	return errors.Join(errs...)
}

// Run brings the sandbox up. Progress goes to stdout, its last line being
// `export KUBECONFIG=<path>`, which scripts rely on.
func (o *UpOptions) Run(ctx context.Context, cmd *cobra.Command) error {
	st, err := sandbox.Up(ctx, sandbox.UpOptions{
		Name:         o.Name,
		Nodes:        o.Nodes,
		Agent:        o.Agent,
		ProxyMode:    o.ProxyMode,
		IPFamily:     sandbox.IPFamily(o.IPFamily),
		ReadyTimeout: o.Timeout,
		Progress:     cmd.OutOrStdout(),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "export KUBECONFIG=%s\n", st.Kubeconfig)
	return nil
}

func newUpCommand() *cobra.Command {
	o := &UpOptions{Nodes: 2, Timeout: 90 * time.Second}
	cmd := &cobra.Command{
		Use:   "up [--name NAME] [--nodes N]",
		Short: "Build the namespaces and start the control plane",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Complete()
			if err := o.Validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return o.Run(ctx, cmd)
		},
	}
	cmd.Flags().StringVar(&o.Name, "name", sandbox.DefaultName, "sandbox name; namespaces are svp-NAME-*")
	cmd.Flags().IntVar(&o.Nodes, "nodes", o.Nodes, "number of node namespaces (node1…nodeN)")
	cmd.Flags().BoolVar(&o.Agent, "agent", false, "start svcplane agent in every node, so Pods run (nodes are bare namespaces without it)")
	cmd.Flags().StringVar(&o.ProxyMode, "proxy-mode", "nftables", "Service proxy of every node's agent: nftables, userspace or none")
	cmd.Flags().StringVar(&o.IPFamily, "ip-family", string(sandbox.FamilyIPv4), "ipv4; dual: IPv6 unique-local addresses beside the IPv4 ones, Pods with an address of each family, Services that may be dual-stack; or ipv6: an IPv6-only cluster (Nodes, Pods, Services, DNS, LoadBalancers)")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", o.Timeout, "how long to wait for the API server to become ready")
	return cmd
}

func newDownCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "down [--name NAME]",
		Short: "Stop the sandbox's processes and remove its namespaces",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot(); err != nil {
				return err
			}
			return sandbox.Down(cmd.Context(), name, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&name, "name", sandbox.DefaultName, "sandbox name")
	return cmd
}

func newExecCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "exec [--name NAME] cp|ext|net|nodeN -- CMD [ARGS…]",
		Short: "Run a command inside one of the sandbox's namespaces",
		Long: `Run a command inside one of the sandbox's namespaces and exit with its exit code.
Members: cp (control plane), ext (outside client), net (the node network's bridge), node1…nodeN.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireRoot(); err != nil {
				return err
			}
			member, argv := args[0], args[1:]
			if len(argv) > 0 && argv[0] == "--" {
				argv = argv[1:]
			}
			// Ctrl-C reaches the command through the terminal, so we only survive SIGINT to
			// pass on the exit code; SIGTERM or SIGHUP sent to us (e.g. by timeout) is passed
			// on to the command as SIGTERM.
			interrupts := make(chan os.Signal, 1)
			signal.Notify(interrupts, os.Interrupt)
			defer signal.Stop(interrupts)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			code, err := sandbox.Exec(ctx, name, member, argv, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if code != 0 {
				// The exit code is the contract (scripts test it), so leave right here rather
				// than turning it into an error message.
				os.Exit(code)
			}
			return nil
		},
	}
	// Everything after the member belongs to the command, flags included.
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVar(&name, "name", sandbox.DefaultName, "sandbox name")
	return cmd
}

func newStatusCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "status [--name NAME]",
		Short: "List sandboxes and what runs in them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot(); err != nil {
				return err // the state directories are root's alone: they hold admin tokens
			}
			summaries, err := sandbox.Status(name)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(summaries) == 0 {
				if name != "" {
					fmt.Fprintf(out, "sandbox %q is not up\n", name)
				} else {
					fmt.Fprintln(out, "no sandboxes")
				}
				return nil
			}
			for _, s := range summaries {
				printSummary(out, s)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "only this sandbox (default: all)")
	return cmd
}

func printSummary(out interface{ Write([]byte) (int, error) }, s sandbox.Summary) {
	if s.State == nil {
		what := "left over from a killed run; removed by the next test run or `svcplane sandbox down --name " + s.Name + "`"
		if s.InUse {
			what = "in use by a test or another process"
		}
		fmt.Fprintf(out, "%s: topology without a sandbox (%s), %d namespaces\n", s.Name, what, len(s.Namespaces))
		return
	}
	st := s.State
	if st.Ready {
		family := ""
		switch st.IPFamily {
		case sandbox.FamilyDual:
			family = " (dual-stack)"
		case sandbox.FamilyIPv6:
			family = " (IPv6-only)"
		}
		fmt.Fprintf(out, "%s: %d nodes%s, API %s, up since %s\n", s.Name, st.Nodes, family, st.APIServer, st.Created.Local().Format(time.DateTime))
		fmt.Fprintf(out, "  kubeconfig  %s\n", st.Kubeconfig)
	} else {
		fmt.Fprintf(out, "%s: %d nodes, NOT READY (its `up` is still running or was interrupted; `svcplane sandbox down --name %s` removes it)\n", s.Name, st.Nodes, s.Name)
	}
	for _, p := range st.Processes {
		state := "running"
		if !p.Running() {
			state = "NOT RUNNING"
		}
		where := "host"
		if p.Member != "" {
			where = p.Member
		}
		fmt.Fprintf(out, "  %-10s  pid %d %s in %s, log %s\n", p.Role, p.PID, state, where, p.Log)
	}
	fmt.Fprintf(out, "  namespaces  %s\n", strings.Join(s.Namespaces, " "))
	running := false
	for _, p := range st.Processes {
		running = running || p.Running()
	}
	if !running {
		fmt.Fprintf(out, "  nothing runs any more: `svcplane sandbox down --name %s` cleans up\n", s.Name)
	}
}

func newServeForwardCommand() *cobra.Command {
	var o sandbox.ForwardOptions
	cmd := &cobra.Command{
		Use:    "serve-forward",
		Short:  "Relay an inherited loopback listener into a namespace (started by `up`)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.Log = cmd.ErrOrStderr()
			return sandbox.RunForwarder(ctx, o)
		},
	}
	cmd.Flags().IntVar(&o.ListenFD, "listen-fd", 3, "inherited listening socket")
	cmd.Flags().StringVar(&o.Namespace, "namespace", "", "network namespace to dial from")
	cmd.Flags().StringVar(&o.Target, "target", "", "IP:port to dial inside the namespace")
	cmd.MarkFlagRequired("namespace")
	cmd.MarkFlagRequired("target")
	return cmd
}

func requireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("svcplane sandbox needs root (it creates and removes network namespaces): run it with sudo")
	}
	return nil
}
