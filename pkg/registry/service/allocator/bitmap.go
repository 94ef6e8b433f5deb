package allocator

import "math/bits"

// bitmap is the local index of which offsets of a range are taken. Level 0 holds one bit per
// offset; each higher level holds one bit per word of the level below, set when that word is full.
// Finding a free offset from any start point therefore walks at most one word per level (four
// levels for a /12) instead of scanning, so its cost does not grow as the range fills.
//
// Bits past the end of the range are kept set, so they look taken and never need bounds checks.
type bitmap struct {
	size   int
	used   int
	levels [][]uint64
}

func newBitmap(size int) *bitmap {
	b := &bitmap{size: size}
	n := size
	for {
		words := (n + 63) / 64
		if words == 0 {
			words = 1
		}
		level := make([]uint64, words)
		// Mark the padding past n as taken (full children, or offsets that do not exist).
		for i := n; i < words*64; i++ {
			level[i/64] |= 1 << (i % 64)
		}
		b.levels = append(b.levels, level)
		if words == 1 {
			break
		}
		n = words
	}
	// Padding words that are wholly past the end are full; their parents must know.
	for l := 0; l+1 < len(b.levels); l++ {
		for w, word := range b.levels[l] {
			if word == ^uint64(0) {
				b.levels[l+1][w/64] |= 1 << (w % 64)
			}
		}
	}
	return b
}

func (b *bitmap) has(i int) bool {
	return b.levels[0][i/64]&(1<<(i%64)) != 0
}

// set marks offset i taken and reports whether it was free.
func (b *bitmap) set(i int) bool {
	if i < 0 || i >= b.size || b.has(i) {
		return false
	}
	b.used++
	for l := range b.levels {
		w := &b.levels[l][i/64]
		*w |= 1 << (i % 64)
		if *w != ^uint64(0) {
			break
		}
		i /= 64
	}
	return true
}

// clear marks offset i free and reports whether it was taken.
func (b *bitmap) clear(i int) bool {
	if i < 0 || i >= b.size || !b.has(i) {
		return false
	}
	b.used--
	for l := range b.levels {
		w := &b.levels[l][i/64]
		wasFull := *w == ^uint64(0)
		*w &^= 1 << (i % 64)
		if !wasFull {
			break
		}
		i /= 64
	}
	return true
}

// nextFree returns the first free index at or after pos on level l, or -1.
func (b *bitmap) nextFree(l, pos int) int {
	words := b.levels[l]
	w := pos / 64
	if w >= len(words) {
		return -1
	}
	if free := ^words[w] & (^uint64(0) << (pos % 64)); free != 0 {
		return w*64 + bits.TrailingZeros64(free)
	}
	if l+1 == len(b.levels) {
		return -1 // the top level is a single word
	}
	next := b.nextFree(l+1, w+1)
	if next < 0 {
		return -1
	}
	return next*64 + bits.TrailingZeros64(^words[next])
}

// freeIn returns a free offset in [lo, hi), searching from start and wrapping to lo, or -1.
func (b *bitmap) freeIn(lo, hi, start int) int {
	if lo >= hi {
		return -1
	}
	if start < lo || start >= hi {
		start = lo
	}
	if i := b.nextFree(0, start); i >= 0 && i < hi {
		return i
	}
	if i := b.nextFree(0, lo); i >= 0 && i < start {
		return i
	}
	return -1
}
