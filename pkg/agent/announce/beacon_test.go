package announce

import (
	"strings"
	"testing"
	"time"
)

func TestBeaconRoundTripIgnoresPadding(t *testing.T) {
	for _, b := range []beacon{
		{node: "node1", candidate: true, hold: 1200 * time.Millisecond},
		{node: "node2"},
		{node: strings.Repeat("n", maxNodeNameLen), candidate: true, hold: 65535 * time.Millisecond},
	} {
		// Ethernet pads short frames to 60 bytes.
		wire := append(b.marshal(), make([]byte, 46)...)
		got, ok := parseBeacon(wire)
		if !ok || got != b {
			t.Errorf("parseBeacon(marshal(%+v)) = %+v, %v", b, got, ok)
		}
	}
	for name, wire := range map[string][]byte{
		"short":       []byte("SVPL"),
		"other magic": append([]byte("XXXX"), beacon{node: "n"}.marshal()[4:]...),
		"truncated":   beacon{node: "node1"}.marshal()[:beaconHeaderLen+2],
	} {
		if b, ok := parseBeacon(wire); ok {
			t.Errorf("%s: parsed %+v", name, b)
		}
	}
}

func TestPeersAreLiveUntilTheirHoldRunsOut(t *testing.T) {
	p := newPeers()
	t0 := time.Now()
	hold := time.Second
	if !p.heard(beacon{node: "node2", candidate: true, hold: hold}, t0) {
		t.Error("a new candidate did not change the live set")
	}
	if p.heard(beacon{node: "node2", candidate: true, hold: hold}, t0.Add(500*time.Millisecond)) {
		t.Error("a renewal changed the live set")
	}
	if p.heard(beacon{node: "node3", hold: hold}, t0) {
		t.Error("a peer that is not a candidate yet changed the live set")
	}
	p.heard(beacon{node: "node4", candidate: true, hold: hold}, t0)
	names, next := p.live(t0.Add(900 * time.Millisecond))
	if strings.Join(names, ",") != "node2,node4" || !next.Equal(t0.Add(hold)) {
		t.Errorf("live = %v, next expiry %v; want node2,node4 and node4's expiry", names, next.Sub(t0))
	}
	// node4 is silent past its hold; node2 renewed at +500ms.
	if names, _ := p.live(t0.Add(1100 * time.Millisecond)); strings.Join(names, ",") != "node2" {
		t.Errorf("after node4's hold: live = %v, want node2", names)
	}
	// A clean stop (hold 0) removes the peer at once.
	if !p.heard(beacon{node: "node2"}, t0.Add(1200*time.Millisecond)) {
		t.Error("a leaving beacon did not change the live set")
	}
	if names, next := p.live(t0.Add(1200 * time.Millisecond)); len(names) != 0 || !next.IsZero() {
		t.Errorf("after node2 left: live = %v, next %v", names, next)
	}
}
