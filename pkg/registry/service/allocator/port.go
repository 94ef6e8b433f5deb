package allocator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// PortRangeSpec is a first-last range of node ports, as --service-node-port-range takes it.
type PortRangeSpec struct {
	Base, Size int
}

// ParsePortRange reads "30000-32767" (or a single port, or "base+size" as upstream also does).
func ParsePortRange(s string) (PortRangeSpec, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return PortRangeSpec{}, errors.New("empty port range")
	}
	var lo, hi int
	var err1, err2 error
	switch {
	case strings.Contains(s, "-"):
		a, b, _ := strings.Cut(s, "-")
		lo, err1 = strconv.Atoi(a)
		hi, err2 = strconv.Atoi(b)
	case strings.Contains(s, "+"):
		a, b, _ := strings.Cut(s, "+")
		var size int
		lo, err1 = strconv.Atoi(a)
		size, err2 = strconv.Atoi(b)
		hi = lo + size - 1
	default:
		lo, err1 = strconv.Atoi(s)
		hi = lo
	}
	if err := errors.Join(err1, err2); err != nil {
		return PortRangeSpec{}, fmt.Errorf("port range %q is not \"first-last\": %w", s, err)
	}
	if lo < 1 || hi > 65535 || hi < lo {
		return PortRangeSpec{}, fmt.Errorf("port range %q must lie within 1-65535 with first <= last", s)
	}
	return PortRangeSpec{Base: lo, Size: hi - lo + 1}, nil
}

func (r PortRangeSpec) String() string {
	if r.Size == 0 {
		return ""
	}
	return fmt.Sprintf("%d-%d", r.Base, r.Base+r.Size-1)
}

// Contains reports whether port lies in the range.
func (r PortRangeSpec) Contains(port int) bool { return port >= r.Base && port < r.Base+r.Size }

// ErrPortNotInRange is upstream's error for a requested node port outside the range.
type ErrPortNotInRange struct{ ValidPorts string }

func (e *ErrPortNotInRange) Error() string {
	return fmt.Sprintf("provided port is not in the valid range. The range of valid ports is %s", e.ValidPorts)
}

// ErrPortAllocated is upstream's error for a requested node port a Service already holds.
var ErrPortAllocated = errors.New("provided port is already allocated")

// PortRange allocates node ports (and health-check node ports, which share the range).
type PortRange struct {
	pool *pool
	spec PortRangeSpec
}

// NewPortRange returns the allocator of spec, storing its keys under prefix. Call Run first.
func NewPortRange(client *clientv3.Client, prefix string, spec PortRangeSpec) *PortRange {
	r := &PortRange{spec: spec}
	r.pool = newPool(client, prefix, spec.Size, portStaticBand(spec.Size),
		func(m int) string { return strconv.Itoa(spec.Base + m) },
		func(s string) (int, bool) {
			port, err := strconv.Atoi(s)
			if err != nil || !spec.Contains(port) {
				return 0, false
			}
			return port - spec.Base, true
		})
	return r
}

// portStaticBand is upstream's min(max(16, size/32), 128), 0 for ranges of 16 or fewer.
func portStaticBand(size int) int {
	if size <= 16 {
		return 0
	}
	return min(max(16, size/32), 128)
}

// Spec is the range as configured.
func (r *PortRange) Spec() PortRangeSpec { return r.spec }

// Run keeps the local index in step with etcd until ctx ends.
func (r *PortRange) Run(ctx context.Context) { r.pool.run(ctx) }

// WaitSynced blocks until the index has been loaded once.
func (r *PortRange) WaitSynced(ctx context.Context) error { return r.pool.waitSynced(ctx) }

// Allocate takes a requested port for owner; with dryRun it only checks.
func (r *PortRange) Allocate(ctx context.Context, port int, owner Owner, dryRun bool) error {
	if !r.spec.Contains(port) {
		return &ErrPortNotInRange{ValidPorts: r.spec.String()}
	}
	m := port - r.spec.Base
	if dryRun {
		if err := r.pool.waitSynced(ctx); err != nil {
			return err
		}
		if !r.pool.peek(m) {
			return ErrPortAllocated
		}
		return nil
	}
	ok, err := r.pool.allocate(ctx, strconv.Itoa(port), m, owner)
	if err != nil {
		return fmt.Errorf("allocating node port %d: %w", port, err)
	}
	if !ok {
		return ErrPortAllocated
	}
	return nil
}

// AllocateNext takes a free port for owner; with dryRun it only names one that is free now.
func (r *PortRange) AllocateNext(ctx context.Context, owner Owner, dryRun bool) (int, error) {
	var m int
	var err error
	if dryRun {
		m, err = r.pool.peekNext(ctx)
	} else {
		m, err = r.pool.allocateNext(ctx, owner)
	}
	if err != nil {
		return 0, err
	}
	return r.spec.Base + m, nil
}

// Release frees port if owner holds it; a port outside the range or not held is a no-op.
func (r *PortRange) Release(ctx context.Context, port int, owner Owner) error {
	if !r.spec.Contains(port) {
		return nil
	}
	return r.pool.release(ctx, strconv.Itoa(port), port-r.spec.Base, &owner)
}

// Used is the number of taken ports.
func (r *PortRange) Used() int { return r.pool.used() }
