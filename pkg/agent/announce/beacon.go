package announce

import (
	"encoding/binary"
	"slices"
	"sync"
	"time"
)

// Liveness of the announcing agents travels as beacons on the very Ethernet segment the
// addresses are announced on, not through the API: a Node's Ready heartbeat is far too slow for
// the 2 s fail-over (10 s renewals, 30 s grace), and renewing an API object every few
// hundred milliseconds from every node would load the API server and etcd, and would make
// every node believe every other one dead whenever the API server is unreachable. A beacon
// costs one broadcast frame per interval per node, and a node that cannot be heard on the
// segment could not answer ARP there anyway.
//
// Every agent broadcasts a beacon each interval: its node name, whether it is ready to announce
// (a candidate), and how long the receivers may count it alive without hearing from it again
// (the hold). Receivers judge that with their own monotonic clock from when the beacon
// arrived, so clocks need not agree. An agent stopping cleanly broadcasts a beacon with
// hold 0, so that the others take over at once; a killed one is noticed when its hold runs
// out.

// beaconEtherType is IEEE 802's "Local Experimental EtherType 1", meant for exactly this:
// protocols private to a site. Switches flood the broadcast frames like any other.
const beaconEtherType = 0x88b5

// beaconMagic opens every beacon, so that other users of the experimental EtherType are
// ignored.
var beaconMagic = [4]byte{'S', 'V', 'P', 'L'}

const (
	beaconVersion       = 1
	beaconFlagCandidate = 1 << 0
	beaconHeaderLen     = 4 + 1 + 1 + 2 + 1 // magic, version, flags, hold (ms), name length
	// maxNodeNameLen is the longest Node name (a DNS subdomain).
	maxNodeNameLen = 253
)

// beacon is one agent's "I am alive" message.
type beacon struct {
	node string
	// candidate: the agent has synced its informers and listened long enough to know its
	// peers, so it may be chosen to announce.
	candidate bool
	// hold is how long receivers count the sender alive after this beacon; 0 means it is
	// leaving now.
	hold time.Duration
}

func (b beacon) marshal() []byte {
	name := b.node
	if len(name) > maxNodeNameLen {
		name = name[:maxNodeNameLen]
	}
	out := make([]byte, beaconHeaderLen, beaconHeaderLen+len(name))
	copy(out, beaconMagic[:])
	out[4] = beaconVersion
	if b.candidate {
		out[5] |= beaconFlagCandidate
	}
	binary.BigEndian.PutUint16(out[6:], uint16(min(b.hold.Milliseconds(), 0xffff)))
	out[8] = byte(len(name))
	return append(out, name...)
}

// parseBeacon reads a beacon; frames may carry Ethernet padding after it.
func parseBeacon(p []byte) (beacon, bool) {
	if len(p) < beaconHeaderLen || [4]byte(p[:4]) != beaconMagic || p[4] != beaconVersion {
		return beacon{}, false
	}
	n := int(p[8])
	if n == 0 || len(p) < beaconHeaderLen+n {
		return beacon{}, false
	}
	return beacon{
		node:      string(p[beaconHeaderLen : beaconHeaderLen+n]),
		candidate: p[5]&beaconFlagCandidate != 0,
		hold:      time.Duration(binary.BigEndian.Uint16(p[6:])) * time.Millisecond,
	}, true
}

// peers remembers, per node name, until when the last beacon heard from it counts.
type peers struct {
	mu    sync.Mutex
	until map[string]time.Time // only candidates; time.Now() values, so compared monotonically
}

func newPeers() *peers { return &peers{until: map[string]time.Time{}} }

// heard records b, received at now. It reports whether the set of live candidates changed.
func (p *peers) heard(b beacon, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	old, wasLive := p.until[b.node]
	wasLive = wasLive && now.Before(old)
	if !b.candidate || b.hold <= 0 {
		delete(p.until, b.node)
		return wasLive
	}
	p.until[b.node] = now.Add(b.hold)
	return !wasLive
}

// live returns the candidates alive at now, sorted, and the earliest moment one of them
// expires (zero when none is live), when the choice must be made again.
func (p *peers) live(now time.Time) (names []string, nextExpiry time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, until := range p.until {
		if !now.Before(until) {
			delete(p.until, name)
			continue
		}
		names = append(names, name)
		if nextExpiry.IsZero() || until.Before(nextExpiry) {
			nextExpiry = until
		}
	}
	slices.Sort(names)
	return names, nextExpiry
}
