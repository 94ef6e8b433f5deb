package sandbox

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/svcplane/svcplane/pkg/sandbox/topology"
)

// Summary is what `status` knows about one sandbox or bare topology.
type Summary struct {
	Name string
	// State is nil for topologies without a sandbox: a test's, or leftovers of a killed run.
	State      *State
	Namespaces []string
	// InUse: some live process holds the topology (see topology.Found).
	InUse bool
}

// Status describes sandbox name, or every sandbox and topology on this machine if name is "".
func Status(name string) ([]Summary, error) {
	byName := map[string]*Summary{}
	found, err := topology.List()
	if err != nil {
		return nil, err
	}
	for _, f := range found {
		byName[f.Name] = &Summary{Name: f.Name, Namespaces: f.Namespaces, InUse: f.InUse}
	}
	entries, err := os.ReadDir(StateRoot())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listing sandboxes in %s: %w", StateRoot(), err)
	}
	for _, e := range entries {
		if !e.IsDir() || topology.ValidateName(e.Name()) != nil {
			continue
		}
		st, err := loadState(e.Name())
		if err != nil {
			return nil, err
		}
		if st == nil {
			continue
		}
		s, ok := byName[e.Name()]
		if !ok {
			s = &Summary{Name: e.Name()}
			byName[e.Name()] = s
		}
		s.State = st
	}
	var out []Summary
	for n, s := range byName {
		if name == "" || n == name {
			out = append(out, *s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
