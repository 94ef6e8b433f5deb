package sandbox

import (
	"fmt"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// Kubeconfig returns the kubeconfig of the running sandbox name.
func Kubeconfig(name string) (string, error) {
	st, err := loadState(name)
	if err != nil {
		return "", err
	}
	if st == nil {
		return "", fmt.Errorf("sandbox %q is not up (see `svcplane sandbox status`)", name)
	}
	return st.Kubeconfig, nil
}

// AgentDataDirOfNode returns the data directory of the agent running Node node of sandbox name.
func AgentDataDirOfNode(name, node string) (string, error) {
	n, ok := topology.NodeNumber(node)
	if !ok {
		return "", fmt.Errorf("node %q is not a node of a sandbox (node1…nodeN)", node)
	}
	return AgentDataDir(StateDir(name), n), nil
}
