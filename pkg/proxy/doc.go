// Package proxy is the backend-neutral model of what a Service proxy must program: every
// ServicePort of every Service (its addresses, ports and policies) and the Endpoints behind it,
// built from the Service and EndpointSlice informers of pkg/proxy/config.
//
// Data flow: informer handlers (Tracker.On*) only record which Services changed and nudge the
// backend's runner; the backend's single sync goroutine calls Tracker.Snapshot, which rebuilds
// just those Services and returns an immutable Snapshot of everything plus the set of
// ServicePorts that changed since the previous Snapshot. A backend (pkg/proxy/nftables,
// pkg/proxy/userspace) programs only what changed, or everything after a restart or a failure.
//
// Everything in a Snapshot is read-only: backends may keep pointers to ServicePorts and
// Endpoints across syncs, and must never modify them.
package proxy
