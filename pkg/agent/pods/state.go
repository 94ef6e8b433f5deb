package pods

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/svcplane/svcplane/pkg/agent/runtime"
)

// record is what the agent keeps on disk per Pod, so that a restarted agent finds its
// processes and address again instead of starting the Pod anew.
type record struct {
	UID        types.UID         `json:"uid"`
	Namespace  string            `json:"namespace"`
	Name       string            `json:"name"`
	Pause      runtime.Proc      `json:"pause"`
	IP         string            `json:"ip"`
	IPs        []string          `json:"ips,omitempty"` // all, primary first; agents before dual-stack wrote IP only
	StartTime  time.Time         `json:"startTime"`
	Containers []containerRecord `json:"containers"`
}

type containerRecord struct {
	Name         string       `json:"name"`
	Proc         runtime.Proc `json:"proc"`
	StartedAt    time.Time    `json:"startedAt"`
	RestartCount int          `json:"restartCount"`
}

// addrs are the Pod's addresses, primary first.
func (r *record) addrs() []netip.Addr {
	list := r.IPs
	if len(list) == 0 {
		list = []string{r.IP}
	}
	var out []netip.Addr
	for _, s := range list {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

func addrStrings(ips []netip.Addr) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

func (a *Agent) podDir(uid types.UID) string { return podDir(a.cfg.DataDir, uid) }

func podDir(dataDir string, uid types.UID) string { return filepath.Join(dataDir, "pods", string(uid)) }

// LogPath is where an agent with this data dir keeps a container's output while its Pod runs.
func LogPath(dataDir string, uid types.UID, container string) string {
	return filepath.Join(podDir(dataDir, uid), container+".log")
}

func (a *Agent) saveRecord(r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	path := filepath.Join(a.podDir(r.UID), "state.json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("saving state of pod %s/%s: %w", r.Namespace, r.Name, err)
	}
	return os.Rename(tmp, path)
}

func (a *Agent) loadRecords() []*record {
	entries, _ := os.ReadDir(filepath.Join(a.cfg.DataDir, "pods"))
	var out []*record
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(a.cfg.DataDir, "pods", e.Name(), "state.json"))
		if err != nil {
			continue
		}
		var r record
		if json.Unmarshal(b, &r) == nil && r.UID != "" {
			out = append(out, &r)
		}
	}
	return out
}

// FindLog returns the log of container of the Pod namespace/name that an agent with this data
// dir runs (the one started last, if an old instance is still being stopped), or
// os.ErrNotExist.
func FindLog(dataDir, namespace, name, container string) (string, error) {
	dirs, err := os.ReadDir(filepath.Join(dataDir, "pods"))
	if err != nil {
		return "", err
	}
	var found *record
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(dataDir, "pods", d.Name(), "state.json"))
		if err != nil {
			continue
		}
		var r record
		if json.Unmarshal(b, &r) != nil || r.Namespace != namespace || r.Name != name {
			continue
		}
		if found == nil || r.StartTime.After(found.StartTime) {
			found = &r
		}
	}
	if found == nil {
		return "", os.ErrNotExist
	}
	path := LogPath(dataDir, found.UID, container)
	if _, err := os.Stat(path); err != nil {
		return "", err
	}
	return path, nil
}
