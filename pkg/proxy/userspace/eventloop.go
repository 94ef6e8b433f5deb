package userspace

import (
	"container/heap"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// eventLoop is an epoll loop of our own that runs the short-connection path of TCP (accept,
// dial, the relay of small messages) without a goroutine per connection. Profiled under
// `Connection: close` load, the goroutine design spent about a fifth of the proxy's CPU in the
// Go runtime around system calls — parking and waking goroutines, sysmon polling every 20 µs
// and handing Ps between threads while a veth send ran the peer's receive path inside our
// call, timers, finalizers of each net.Conn — where an event-loop proxy (HAProxy) pays a tenth.
//
// One loop per CPU the runtime may use. Every fd a loop watches is owned by that loop: only its
// goroutine reads, writes, registers or closes it, so a number cannot be reused under a
// handler's feet; other goroutines ask it to act through post. All its system calls are
// raw (rawio.go): none blocks, and waiting is done in the runtime poller.
type eventLoop struct {
	epfd int
	// epFile has the runtime poller watch epfd: an idle loop parks its goroutine there
	// (readable: some watched fd has events) instead of blocking in epoll_wait, which the
	// runtime would see as a long system call (sysmon taking the P away, then polling every
	// 20 µs because it found one to take).
	epFile   *os.File
	epRaw    syscall.RawConn
	deadline time.Time
	// wake is an eventfd that post writes to, interrupting epoll_wait.
	wake int

	mu    sync.Mutex
	inbox []func()
	// closed: the loop has stopped and its fds are closed; post drops work.
	closed bool

	// Owned by the loop's goroutine.
	handlers map[int32]handlerEntry
	nextGen  int32
	timers   timerHeap
	buf      []byte
	stopping bool
	// owned are the connections the loop runs, aborted when it stops.
	owned map[*loopConn]struct{}
}

// loopHandler receives a watched fd's events.
type loopHandler interface {
	onEvent(fd int, events uint32)
}

// handlerEntry pairs a handler with the generation its registration was given, so an event
// fetched for an fd that was closed (and its number reused) in the same batch is dropped.
type handlerEntry struct {
	h   loopHandler
	gen int32
}

func newEventLoop() (*eventLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	lp := &eventLoop{epfd: epfd, wake: wake, handlers: map[int32]handlerEntry{},
		buf: make([]byte, copyBufferSize), owned: map[*loopConn]struct{}{}}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake), Pad: -1}
	err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev)
	if err == nil {
		// Non-blocking, so that os.NewFile registers it with the runtime poller.
		err = unix.SetNonblock(epfd, true)
	}
	if err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, err
	}
	lp.epFile = os.NewFile(uintptr(epfd), "epoll")
	if lp.epRaw, err = lp.epFile.SyscallConn(); err != nil {
		unix.Close(wake)
		lp.epFile.Close()
		return nil, err
	}
	return lp, nil
}

// close releases the loop's own fds (after run returned, or instead of it).
func (lp *eventLoop) close() {
	lp.mu.Lock()
	lp.closed = true
	lp.mu.Unlock()
	unix.Close(lp.wake)
	lp.epFile.Close()
}

// post runs f in the loop's goroutine; false if the loop has stopped (f will not run).
func (lp *eventLoop) post(f func()) bool {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.closed {
		return false
	}
	lp.inbox = append(lp.inbox, f)
	if len(lp.inbox) == 1 {
		one := uint64(1)
		unix.RawSyscall(unix.SYS_WRITE, uintptr(lp.wake), uintptr(unsafe.Pointer(&one)), 8)
	}
	return true
}

// call runs f in the loop's goroutine and waits for it (not at all if the loop has stopped).
// Never from the loop itself.
func (lp *eventLoop) call(f func()) {
	done := make(chan struct{})
	if lp.post(func() { f(); close(done) }) {
		<-done
	}
}

// watch registers fd for events (level-triggered) with h.
func (lp *eventLoop) watch(fd int, events uint32, h loopHandler) error {
	lp.nextGen++
	if lp.nextGen < 0 {
		lp.nextGen = 0
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: lp.nextGen}
	if err := epollCtl(lp.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return err
	}
	lp.handlers[int32(fd)] = handlerEntry{h, lp.nextGen}
	return nil
}

// rewatch changes the events fd is watched for.
func (lp *eventLoop) rewatch(fd int, events uint32) error {
	e := lp.handlers[int32(fd)]
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: e.gen}
	return epollCtl(lp.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
}

// forget stops watching fd without closing it.
func (lp *eventLoop) forget(fd int) {
	delete(lp.handlers, int32(fd))
	epollCtl(lp.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// closeFD closes a watched (or never watched) fd: closing removes it from the epoll set, no
// EPOLL_CTL_DEL needed since the loop never duplicates fds.
func (lp *eventLoop) closeFD(fd int) {
	delete(lp.handlers, int32(fd))
	rawClose(fd)
}

func epollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// run is the loop's goroutine; it returns after stop.
func (lp *eventLoop) run() {
	events := make([]unix.EpollEvent, 128)
	poll := func() int {
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(lp.epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
		if e != 0 {
			return 0
		}
		return int(r)
	}
	for !lp.stopping {
		// Poll without waiting first: under load there is nearly always something. Only an
		// empty poll parks in the runtime poller, until epfd is readable or the next timer.
		n := poll()
		if n == 0 {
			var next time.Time
			if len(lp.timers) > 0 {
				next = lp.timers[0].deadline
			}
			if !next.Equal(lp.deadline) {
				lp.epFile.SetReadDeadline(next)
				lp.deadline = next
			}
			lp.epRaw.Read(func(uintptr) bool {
				n = poll()
				return n > 0
			})
		}
		for i := range n {
			ev := &events[i]
			if ev.Pad == -1 {
				lp.drainInbox()
				continue
			}
			e, ok := lp.handlers[ev.Fd]
			if !ok || e.gen != ev.Pad {
				continue
			}
			e.h.onEvent(int(ev.Fd), ev.Events)
		}
		lp.fireTimers()
	}
	for c := range lp.owned {
		c.abort()
	}
	lp.close()
}

func (lp *eventLoop) drainInbox() {
	var counter uint64
	unix.RawSyscall(unix.SYS_READ, uintptr(lp.wake), uintptr(unsafe.Pointer(&counter)), 8)
	lp.mu.Lock()
	todo := lp.inbox
	lp.inbox = nil
	lp.mu.Unlock()
	for _, f := range todo {
		f()
	}
}

// stop makes the loop abort every connection it owns and return.
func (lp *eventLoop) stop() {
	lp.post(func() { lp.stopping = true })
}

// loopTimer is a deadline in a loop's heap; index is its place there (-1: not scheduled).
type loopTimer struct {
	deadline time.Time
	index    int
	fire     func()
}

type timerHeap []*loopTimer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*loopTimer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}

// schedule (re)arms t for deadline.
func (lp *eventLoop) schedule(t *loopTimer, deadline time.Time) {
	t.deadline = deadline
	if t.index >= 0 {
		heap.Fix(&lp.timers, t.index)
		return
	}
	heap.Push(&lp.timers, t)
}

// cancel disarms t.
func (lp *eventLoop) cancel(t *loopTimer) {
	if t.index >= 0 {
		heap.Remove(&lp.timers, t.index)
	}
}

func (lp *eventLoop) fireTimers() {
	if len(lp.timers) == 0 {
		return
	}
	now := time.Now()
	for len(lp.timers) > 0 && !lp.timers[0].deadline.After(now) {
		t := heap.Pop(&lp.timers).(*loopTimer)
		t.fire()
	}
}
