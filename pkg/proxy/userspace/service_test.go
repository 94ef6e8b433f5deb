package userspace

import (
	"net/netip"
	"testing"

	"github.com/svcplane/svcplane/pkg/proxy/schedule"
)

// recordingSession stands for a connection or flow that is between choosing its backend and
// being tracked: what matters here is only whether the Service closes it.
type recordingSession struct {
	isUDP  bool
	closed bool
}

func (r *recordingSession) udp() bool    { return r.isUDP }
func (r *recordingSession) Close() error { r.closed = true; return nil }

// A session that reaches track after its backend left the pool (it chose the backend just
// before, or was being handed from the event loop to the goroutine relay while
// backendsRemoved ran) gets the treatment backendsRemoved would have given it.
func TestSessionTrackedAfterItsBackendLeftIsTreatedAsRemoved(t *testing.T) {
	for _, tc := range []struct {
		name           string
		udp            bool
		closeOnRemoval bool
		wantClosed     bool
	}{
		{name: "UDP flow", udp: true, wantClosed: true},
		{name: "TCP, Service asks to close", closeOnRemoval: true, wantClosed: true},
		{name: "TCP, default", wantClosed: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := &service{sessions: map[*schedule.Backend]map[session]struct{}{}}
			svc.cfg.Store(&serviceConfig{closeOnRemoval: tc.closeOnRemoval})
			pool := schedule.NewPool(mustScheduler(serviceConfig{scheduler: "rr"}), 0)
			pool.Update([]schedule.Target{{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Weight: 1}})
			chosen := pool.Select(schedule.Conn{Client: netip.MustParseAddrPort("10.0.0.9:5000")})
			svc.backendsRemoved(pool.Update(nil))

			late := &recordingSession{isUDP: tc.udp}
			svc.track(chosen, late)
			if late.closed != tc.wantClosed {
				t.Errorf("closed = %v, want %v", late.closed, tc.wantClosed)
			}
			if _, kept := svc.sessions[chosen][late]; kept == tc.wantClosed {
				t.Errorf("tracked = %v after the decision to close = %v", kept, tc.wantClosed)
			}
		})
	}
}
