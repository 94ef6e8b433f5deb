package allocator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// Owner names the Service an allocation belongs to. It is stored as the value of the allocation's
// key, so that a release only removes what its Service holds and the repair loop can tell whose an
// address is.
type Owner struct {
	Namespace, Name string
	UID             types.UID
}

func (o Owner) String() string { return o.Namespace + "/" + o.Name + "/" + string(o.UID) }

// ParseOwner reads the value an allocation key holds.
func ParseOwner(s string) (Owner, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return Owner{}, false
	}
	return Owner{Namespace: parts[0], Name: parts[1], UID: types.UID(parts[2])}, true
}

// ErrFull is returned when no member of a range is free, as upstream words it.
var ErrFull = errors.New("range is full")

// pool is a range of members 0..size-1, durable in etcd: a member is taken exactly when the key
// prefix+suffix exists. Keys are created with a compare-and-swap on CreateRevision == 0, so two API
// servers sharing one etcd can never both take a member. The bitmap is only a local hint, kept in
// step with etcd by a watch, that lets AllocateNext find a likely-free member without scanning;
// a stale hint costs one failed compare-and-swap and a retry, never a double allocation.
type pool struct {
	client *clientv3.Client
	prefix string
	size   int
	// staticBand is upstream's reserved lower part (KEP-3070): dynamic allocation takes from
	// [staticBand, size) first, so that members users ask for by number are likely still free.
	staticBand int
	suffix     func(member int) string
	member     func(suffix string) (int, bool)

	mu     sync.Mutex
	index  *bitmap
	rand   *rand.Rand
	synced chan struct{}
	once   sync.Once
}

func newPool(client *clientv3.Client, prefix string, size, staticBand int, suffix func(int) string, member func(string) (int, bool)) *pool {
	return &pool{
		client: client, prefix: prefix, size: size, staticBand: staticBand,
		suffix: suffix, member: member,
		index:  newBitmap(size),
		rand:   rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0)),
		synced: make(chan struct{}),
	}
}

// waitSynced blocks until the local index has been filled from etcd once: before that, every
// pick would be a guess.
func (p *pool) waitSynced(ctx context.Context) error {
	select {
	case <-p.synced:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the allocation index to sync from etcd: %w", ctx.Err())
	}
}

// claim creates the key of suffix for owner unless it exists. It returns the owner already
// holding it when it does.
func (p *pool) claim(ctx context.Context, suffix string, owner Owner) (holder string, ok bool, err error) {
	key := p.prefix + suffix
	resp, err := p.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, owner.String())).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return "", false, err
	}
	if resp.Succeeded {
		return "", true, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
		holder = string(kvs[0].Value)
	}
	return holder, false, nil
}

// allocate takes a member by its key suffix; m is its index offset or -1 when it lies outside
// the indexed part of the range.
func (p *pool) allocate(ctx context.Context, suffix string, m int, owner Owner) (ok bool, err error) {
	if err := p.waitSynced(ctx); err != nil {
		return false, err
	}
	_, ok, err = p.claim(ctx, suffix, owner)
	if err != nil {
		return false, err
	}
	p.mu.Lock()
	p.index.set(m)
	p.mu.Unlock()
	return ok, nil
}

// pick chooses a free member the way upstream does: from a random start in the upper band,
// wrapping around it, then from a random start in the lower band. It returns -1 when the index
// has none.
func (p *pool) pick() int {
	if upper := p.size - p.staticBand; upper > 0 {
		if m := p.index.freeIn(p.staticBand, p.size, p.staticBand+p.rand.IntN(upper)); m >= 0 {
			return m
		}
	}
	if p.staticBand > 0 {
		return p.index.freeIn(0, p.staticBand, p.rand.IntN(p.staticBand))
	}
	return -1
}

// allocateNext takes any free member for owner.
func (p *pool) allocateNext(ctx context.Context, owner Owner) (int, error) {
	if err := p.waitSynced(ctx); err != nil {
		return 0, err
	}
	for {
		p.mu.Lock()
		m := p.pick()
		if m >= 0 {
			// Reserve it locally first so that concurrent requests of this server do not race
			// each other for the same member.
			p.index.set(m)
		}
		p.mu.Unlock()
		if m < 0 {
			return 0, ErrFull
		}
		_, ok, err := p.claim(ctx, p.suffix(m), owner)
		if err != nil {
			p.mu.Lock()
			p.index.clear(m)
			p.mu.Unlock()
			return 0, err
		}
		if ok {
			return m, nil
		}
		// Another server took it and our watch has not told us yet; the bit stays set.
		klog.V(4).InfoS("Allocation collided with another API server; retrying", "key", p.prefix+p.suffix(m))
	}
}

// peek reports whether the index believes m is free; dry runs use it instead of etcd.
func (p *pool) peek(m int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return m < 0 || !p.index.has(m)
}

// peekNext returns a member the index believes free, without taking it.
func (p *pool) peekNext(ctx context.Context) (int, error) {
	if err := p.waitSynced(ctx); err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.pick(); m >= 0 {
		return m, nil
	}
	return 0, ErrFull
}

// release deletes the key of suffix if owner still holds it; an empty owner releases whoever
// holds it (the repair loop, after checking that nobody does).
func (p *pool) release(ctx context.Context, suffix string, m int, owner *Owner) error {
	key := p.prefix + suffix
	var err error
	var deleted bool
	if owner == nil {
		var resp *clientv3.DeleteResponse
		resp, err = p.client.Delete(ctx, key)
		deleted = err == nil && resp.Deleted > 0
	} else {
		var resp *clientv3.TxnResponse
		resp, err = p.client.Txn(ctx).
			If(clientv3.Compare(clientv3.Value(key), "=", owner.String())).
			Then(clientv3.OpDelete(key)).
			Commit()
		deleted = err == nil && resp.Succeeded
	}
	if err != nil {
		return fmt.Errorf("releasing %s: %w", key, err)
	}
	if deleted {
		p.mu.Lock()
		p.index.clear(m)
		p.mu.Unlock()
	}
	return nil
}

// used returns how many indexed members are taken.
func (p *pool) used() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.index.used
}

// run keeps the index in step with etcd until ctx ends: a full list, then a watch from the
// list's revision; a compacted or broken watch starts over with a new list.
func (p *pool) run(ctx context.Context) {
	for ctx.Err() == nil {
		rev, err := p.relist(ctx)
		if err != nil {
			klog.ErrorS(err, "Listing allocations from etcd failed; retrying", "prefix", p.prefix)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		p.once.Do(func() { close(p.synced) })
		p.watch(ctx, rev)
	}
}

func (p *pool) relist(ctx context.Context) (int64, error) {
	index := newBitmap(p.size)
	// Keys only: the index needs to know which members are taken, not by whom.
	resp, err := p.client.Get(ctx, p.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, err
	}
	for _, kv := range resp.Kvs {
		if m, ok := p.member(strings.TrimPrefix(string(kv.Key), p.prefix)); ok {
			index.set(m)
		}
	}
	p.mu.Lock()
	p.index = index
	p.mu.Unlock()
	return resp.Header.Revision, nil
}

func (p *pool) watch(ctx context.Context, rev int64) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range p.client.Watch(ctx, p.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			klog.V(2).InfoS("Allocation watch ended; listing again", "prefix", p.prefix, "err", err)
			return
		}
		p.mu.Lock()
		for _, ev := range resp.Events {
			m, ok := p.member(strings.TrimPrefix(string(ev.Kv.Key), p.prefix))
			if !ok {
				continue
			}
			if ev.Type == clientv3.EventTypeDelete {
				p.index.clear(m)
			} else {
				p.index.set(m)
			}
		}
		p.mu.Unlock()
	}
}

// Allocation is one key of a pool as the repair loop sees it.
type Allocation struct {
	Suffix      string
	Owner       string
	ModRevision int64
}

// list returns every allocation under the prefix, read at one revision.
func (p *pool) list(ctx context.Context) ([]Allocation, int64, error) {
	resp, err := p.client.Get(ctx, p.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	out := make([]Allocation, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, Allocation{Suffix: strings.TrimPrefix(string(kv.Key), p.prefix), Owner: string(kv.Value), ModRevision: kv.ModRevision})
	}
	return out, resp.Header.Revision, nil
}

// releaseIfUnchanged deletes an allocation the repair loop found leaked, unless it has been
// written since (a Service may have just taken it again).
func (p *pool) releaseIfUnchanged(ctx context.Context, a Allocation) (bool, error) {
	key := p.prefix + a.Suffix
	resp, err := p.client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", a.ModRevision)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return false, fmt.Errorf("releasing leaked %s: %w", key, err)
	}
	if resp.Succeeded {
		if m, ok := p.member(a.Suffix); ok {
			p.mu.Lock()
			p.index.clear(m)
			p.mu.Unlock()
		}
	}
	return resp.Succeeded, nil
}
