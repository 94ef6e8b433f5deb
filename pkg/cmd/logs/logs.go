// Package logs is the `svcplane logs` command: a container's output, read from the node agent's
// data directory on this machine (the sandbox keeps every node's agent here).
package logs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcplane/svcplane/pkg/agent/pods"
	"github.com/svcplane/svcplane/pkg/sandbox"
)

// Options are the flags of `svcplane logs`.
type Options struct {
	Namespace    string
	Container    string
	Sandbox      string
	AgentDataDir string
	Kubeconfig   string
}

// NewCommand returns `svcplane logs POD`.
func NewCommand() *cobra.Command {
	o := &Options{Namespace: "default", Sandbox: sandbox.DefaultName}
	cmd := &cobra.Command{
		Use:   "logs POD",
		Short: "Print a container's output (Pods of a sandbox, or of an agent on this machine)",
		Long: `Print the output of a Pod's container as its node agent recorded it. The Pod is looked up
through the API to find its node; the log is read from that node's agent data directory, which
for a sandbox is on this machine. Use --agent-data-dir for an agent started by hand.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.Run(cmd.Context(), args[0], cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.Namespace, "namespace", "n", o.Namespace, "Namespace of the Pod.")
	fs.StringVarP(&o.Container, "container", "c", o.Container, "Container name; may be omitted when the Pod has one container.")
	fs.StringVar(&o.Sandbox, "sandbox", o.Sandbox, "Sandbox the Pod runs in.")
	fs.StringVar(&o.AgentDataDir, "agent-data-dir", o.AgentDataDir, "Data directory of the agent running the Pod (instead of --sandbox).")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig, "Kubeconfig of the cluster; default the sandbox's, or $KUBECONFIG with --agent-data-dir.")
	return cmd
}

// Run prints the log of pod's container to out.
func (o *Options) Run(ctx context.Context, pod string, out io.Writer) error {
	kubeconfig := o.Kubeconfig
	if kubeconfig == "" && o.AgentDataDir == "" {
		var err error
		if kubeconfig, err = sandbox.Kubeconfig(o.Sandbox); err != nil {
			return err
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return fmt.Errorf("loading the kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	p, err := client.CoreV1().Pods(o.Namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	container, err := o.container(p)
	if err != nil {
		return err
	}
	if p.Spec.NodeName == "" {
		return fmt.Errorf("pod %s/%s is not scheduled to a node yet", p.Namespace, p.Name)
	}
	dataDir := o.AgentDataDir
	if dataDir == "" {
		if dataDir, err = sandbox.AgentDataDirOfNode(o.Sandbox, p.Spec.NodeName); err != nil {
			return err
		}
	}
	f, err := os.Open(pods.LogPath(dataDir, p.UID, container))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no log of container %q of pod %s/%s on node %s (not started yet, or stopped)", container, p.Namespace, p.Name, p.Spec.NodeName)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(out, f)
	return err
}

func (o *Options) container(p *corev1.Pod) (string, error) {
	if o.Container != "" {
		for _, c := range p.Spec.Containers {
			if c.Name == o.Container {
				return c.Name, nil
			}
		}
		return "", fmt.Errorf("pod %s/%s has no container %q", p.Namespace, p.Name, o.Container)
	}
	if len(p.Spec.Containers) != 1 {
		var names []string
		for _, c := range p.Spec.Containers {
			names = append(names, c.Name)
		}
		return "", fmt.Errorf("pod %s/%s has several containers %v: choose one with -c", p.Namespace, p.Name, names)
	}
	return p.Spec.Containers[0].Name, nil
}
