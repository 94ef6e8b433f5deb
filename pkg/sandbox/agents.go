package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// agentArgs are the flags of node n's `svcplane agent`: it talks to the server over the node
// network, asks for the pod CIDR its pod bridge already carries, and keeps its state (Pod
// records, logs, address allocations) in the state directory, where `down` removes it.
// netnsName makes the agent refuse to run anywhere but in its node's namespace. Its node
// addresses, pod CIDRs and ranges are those of the sandbox's families.
func agentArgs(stateDir string, n int, token, netnsName, proxyMode string, family IPFamily) []string {
	args := []string{"agent",
		"--server", family.apiServerURL(),
		"--certificate-authority", filepath.Join(stateDir, "data", "pki", "ca.crt"),
		"--token", token,
		"--node-name", topology.NodeMember(n),
		"--netns", netnsName,
		"--node-ip", family.nodeIPs(n),
		"--pod-cidr", family.podCIDRs(n),
		"--pod-bridge", topology.PodBridgeName,
		"--cluster-dns", family.clusterDNS().String(),
		"--data-dir", AgentDataDir(stateDir, n),
	}
	if proxyMode != "" {
		args = append(args, "--proxy-mode", proxyMode)
	}
	return append(args, family.rangeArgs()...)
}

// AgentDataDir is node n's agent data directory inside a sandbox's state directory.
func AgentDataDir(stateDir string, n int) string {
	return filepath.Join(stateDir, "agent-"+topology.NodeMember(n))
}

// writeTokens creates the server's token file before its first start: the admin token the
// server would otherwise create itself, and one token per node agent (user system:node:<name>,
// group system:nodes, as upstream names kubelets). The server reads the file once at start.
func (u *upRun) writeTokens(dataDir string) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dataDir, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s,svcplane-admin,svcplane-admin,\"system:masters\"\n", randomHex())
	u.agentTokens = nil
	for n := 1; n <= u.opts.Nodes; n++ {
		token := randomHex()
		user := "system:node:" + topology.NodeMember(n)
		fmt.Fprintf(&b, "%s,%s,%s,\"system:nodes\"\n", token, user, user)
		u.agentTokens = append(u.agentTokens, token)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "tokens.csv"), []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("writing agent tokens: %w", err)
	}
	return nil
}

func randomHex() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// waitNodesReady waits until every node's agent has registered its Node as Ready.
func (u *upRun) waitNodesReady(ctx context.Context, kubeconfig string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, u.opts.ReadyTimeout)
	defer cancel()
	for {
		nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		ready := 0
		if err == nil {
			for _, n := range nodes.Items {
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						ready++
					}
				}
			}
		}
		if ready >= u.opts.Nodes {
			return nil
		}
		for i, p := range u.procs {
			select {
			case err := <-u.exited[i]:
				return fmt.Errorf("%s exited before the nodes became ready (%v); last lines of %s:\n%s", p.Role, err, p.Log, tail(p.Log, 15))
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("only %d of %d nodes became Ready within %v; see the agent logs in %s", ready, u.opts.Nodes, u.opts.ReadyTimeout, u.dir)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
