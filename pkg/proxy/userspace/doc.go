// Package userspace is the userspace proxy mode: a layer-4 load balancer in Go that listens on
// every Service address and relays connections to endpoints chosen by IPVS-style schedulers
// (pkg/proxy/schedule). It is the mode for hosts without nftables, and the place for what the
// kernel path cannot do: retrying a dead backend, least-connection balancing, the PROXY
// protocol.
//
// Data flow: the proxy runner hands Sync a pkg/proxy Snapshot; Sync opens and closes
// listeners for the changed ServicePorts, updates their scheduling pools in place, and keeps
// Service IPs local to the node with local routes (see localRoutes). TCP connections run on
// epoll event loops of our own (eventLoop), handed to a goroutine per direction for bulk
// transfers; UDP flows run in their own goroutines. Each keeps the service state it began
// with, so no change to any Service interrupts it, except the removal of its own endpoint when
// the Service asks for it (svcplane.io/close-on-endpoint-removal) and, for UDP, always.
//
// A Proxier serves one IP family; a dual-stack node runs one per family (pkg/proxy/app).
//
// README.md beside this file explains the design choices and their measurements.
package userspace
