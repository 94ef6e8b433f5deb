package replicaset

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
)

// expectationsTimeout bounds how long a ReplicaSet waits for its own writes to show up in the
// informer; after it the controller trusts the cache again (a watch event may have been lost).
const expectationsTimeout = 5 * time.Minute

// expectations remember, per ReplicaSet, the creations and deletions issued but not yet seen in
// the Pod informer. Until they are seen the cache undercounts or overcounts the ReplicaSet's
// Pods, and acting on it would create or delete a second time.
type expectations struct {
	mu      sync.Mutex
	pending map[string]*expected
}

type expected struct {
	creations int
	deletions sets.Set[string] // Pod keys: a deletion counts once even if seen twice
	since     time.Time
}

func newExpectations() *expectations {
	return &expectations{pending: map[string]*expected{}}
}

// satisfied reports whether the cache can be trusted for rsKey.
func (e *expectations) satisfied(rsKey string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := e.pending[rsKey]
	if x == nil {
		return true
	}
	return (x.creations <= 0 && x.deletions.Len() == 0) || time.Since(x.since) > expectationsTimeout
}

func (e *expectations) expectCreations(rsKey string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pending[rsKey] = &expected{creations: n, deletions: sets.New[string](), since: time.Now()}
}

func (e *expectations) expectDeletions(rsKey string, podKeys []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pending[rsKey] = &expected{deletions: sets.New(podKeys...), since: time.Now()}
}

// creationObserved also serves for a creation that was never sent or failed.
func (e *expectations) creationObserved(rsKey string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x := e.pending[rsKey]; x != nil {
		x.creations--
	}
}

func (e *expectations) deletionObserved(rsKey, podKey string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x := e.pending[rsKey]; x != nil {
		x.deletions.Delete(podKey)
	}
}

func (e *expectations) forget(rsKey string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.pending, rsKey)
}
