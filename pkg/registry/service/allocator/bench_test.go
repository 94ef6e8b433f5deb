package allocator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// fill marks fraction of the range taken in the local index, at random offsets.
func fill(b *bitmap, fraction float64) {
	r := rand.New(rand.NewPCG(7, 7))
	target := int(float64(b.size) * fraction)
	for b.used < target {
		b.set(r.IntN(b.size))
	}
}

var fullness = []float64{0.01, 0.99}

// BenchmarkIndexPick is the index's share of one allocation of a /12: find a free address from
// a random start, take it, give it back. It must not grow with fullness.
func BenchmarkIndexPick(b *testing.B) {
	for _, f := range fullness {
		b.Run(fmt.Sprintf("%.0f%%-full", f*100), func(b *testing.B) {
			r, err := NewIPRange(nil, "/x/", netip.MustParsePrefix("10.96.0.0/12"))
			if err != nil {
				b.Fatal(err)
			}
			fill(r.pool.index, f)
			b.ResetTimer()
			for b.Loop() {
				m := r.pool.pick()
				r.pool.index.set(m)
				r.pool.index.clear(m)
			}
		})
	}
}

// BenchmarkAllocateNext is a whole allocation of a /12 against a real embedded etcd: pick from
// the index, compare-and-swap the key, then release it so the fullness stays put. The index is
// filled locally (writing a million keys to etcd first would take minutes); the compare-and-swap
// finds the key free either way, since the index is exact.
func BenchmarkAllocateNext(b *testing.B) {
	client := startEtcd(b)
	for _, f := range fullness {
		b.Run(fmt.Sprintf("%.0f%%-full", f*100), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r, err := NewIPRange(client, fmt.Sprintf("/bench-%.0f/", f*100), netip.MustParsePrefix("10.96.0.0/12"))
			if err != nil {
				b.Fatal(err)
			}
			go r.Run(ctx)
			if err := r.WaitSynced(ctx); err != nil {
				b.Fatal(err)
			}
			r.pool.mu.Lock()
			fill(r.pool.index, f)
			r.pool.mu.Unlock()
			o := Owner{Namespace: "bench", Name: "svc", UID: "uid"}
			b.ResetTimer()
			for b.Loop() {
				a, err := r.AllocateNext(ctx, o, false)
				if err != nil {
					b.Fatal(err)
				}
				if err := r.Release(ctx, a, o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
