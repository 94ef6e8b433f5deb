package runtime

import (
	"sync"
	"time"
)

// RestartPolicy mirrors a Pod's spec.restartPolicy.
type RestartPolicy string

const (
	RestartAlways    RestartPolicy = "Always"
	RestartOnFailure RestartPolicy = "OnFailure"
	RestartNever     RestartPolicy = "Never"
)

// Back-off between restarts, as kubelet: 10s doubling to 5 minutes, forgotten after a run of
// twice the maximum.
const (
	DefaultBackoffInitial = 10 * time.Second
	DefaultBackoffMax     = 5 * time.Minute
)

// State is a container's state as the Pod status reports it.
type State struct {
	Running      *Proc
	StartedAt    time.Time
	Waiting      string // reason, when neither running nor finished for good
	Message      string
	LastExit     *Exit // the previous run, once there was one
	LastStarted  time.Time
	Done         bool // will not run again (policy, or stopped)
	RestartCount int
}

// Supervisor keeps one container running according to its restart policy.
type Supervisor struct {
	// Start starts a fresh process of the container.
	Start  func() (Started, error)
	Policy RestartPolicy
	// OnChange is called, without locks held, after every state change.
	OnChange       func(State)
	BackoffInitial time.Duration
	BackoffMax     time.Duration

	once     sync.Once
	mu       sync.Mutex
	state    State
	current  *Started
	stopping bool
	kick     chan struct{}
	done     chan struct{}
}

// Run supervises until Stop, or until the policy says the container is done. adopt, if
// non-nil, is a process that already runs (after an agent restart) and counts as the current
// run; restarts is the restart count recorded with it.
func (s *Supervisor) Run(adopt *Started, restarts int, startedAt time.Time) {
	s.init()
	s.mu.Lock()
	s.state.RestartCount = restarts
	s.mu.Unlock()
	defer close(s.done)
	if s.BackoffInitial == 0 {
		s.BackoffInitial = DefaultBackoffInitial
	}
	if s.BackoffMax == 0 {
		s.BackoffMax = DefaultBackoffMax
	}
	backoff := s.BackoffInitial
	first := true
	for {
		var proc Started
		var err error
		if adopt != nil {
			proc, adopt = *adopt, nil
		} else {
			if !first && !s.waitBackoff(backoff) {
				s.finish()
				return
			}
			if !first {
				backoff = min(backoff*2, s.BackoffMax)
			}
			startedAt = time.Now()
			proc, err = s.Start()
		}
		if err != nil {
			if !s.update(func(st *State) {
				st.Waiting, st.Message = "RunContainerError", err.Error()
				st.LastExit = &Exit{Code: 128, Finished: time.Now()}
				st.LastStarted = startedAt
			}) {
				return
			}
			if !s.restart(128) {
				s.finish()
				return
			}
			first = false
			continue
		}
		if !s.update(func(st *State) {
			p := proc.Proc
			st.Running, st.StartedAt, st.Waiting, st.Message = &p, startedAt, "", ""
			if !first || st.LastExit != nil {
				st.RestartCount++
			}
		}) {
			Stop(proc, 0)
			return
		}
		s.mu.Lock()
		s.current = &proc
		s.mu.Unlock()
		exit := <-proc.Exited
		s.mu.Lock()
		s.current = nil
		stopping := s.stopping
		s.mu.Unlock()
		ran := exit.Finished.Sub(startedAt)
		s.update(func(st *State) {
			st.Running = nil
			st.LastExit, st.LastStarted = &exit, startedAt
		})
		if stopping || !s.restart(exit.Code) {
			s.finish()
			return
		}
		if ran > 2*s.BackoffMax {
			backoff = s.BackoffInitial
		}
		first = false
	}
}

func (s *Supervisor) init() {
	s.once.Do(func() {
		s.kick = make(chan struct{}, 1)
		s.done = make(chan struct{})
	})
}

func (s *Supervisor) restart(code int) bool {
	switch s.Policy {
	case RestartNever:
		return false
	case RestartOnFailure:
		return code != 0
	}
	return true
}

// waitBackoff reports CrashLoopBackOff and sleeps d; false means Stop came meanwhile.
func (s *Supervisor) waitBackoff(d time.Duration) bool {
	if !s.update(func(st *State) {
		st.Waiting, st.Message = "CrashLoopBackOff", "back-off "+d.String()+" restarting failed container"
	}) {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.kick:
		return false
	}
}

func (s *Supervisor) finish() {
	s.update(func(st *State) { st.Done, st.Waiting = true, "" })
}

// update applies fn unless the supervisor is stopping (then it still records exits); it
// returns false when stopping.
func (s *Supervisor) update(fn func(*State)) bool {
	s.mu.Lock()
	fn(&s.state)
	st := s.state
	stopping := s.stopping
	s.mu.Unlock()
	if s.OnChange != nil {
		s.OnChange(st)
	}
	return !stopping
}

// State returns the current state.
func (s *Supervisor) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Restart ends the current run (SIGTERM, grace, SIGKILL) and lets the policy decide what
// comes next; a failed liveness probe uses this.
func (s *Supervisor) Restart(grace time.Duration) {
	s.mu.Lock()
	cur := s.current
	s.mu.Unlock()
	if cur != nil {
		cur.Signal(sigterm)
		go func() {
			time.Sleep(grace)
			if cur.Alive() {
				cur.Signal(sigkill)
			}
		}()
	}
}

// Stop ends the container for good: SIGTERM, up to grace, SIGKILL. It returns once the
// process is gone and Run has returned.
func (s *Supervisor) Stop(grace time.Duration) {
	s.init()
	s.mu.Lock()
	s.stopping = true
	cur := s.current
	kick, done := s.kick, s.done
	s.mu.Unlock()
	if kick != nil {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if cur != nil {
		cur.Signal(sigterm)
		deadline := time.After(grace)
		select {
		case <-done:
			return
		case <-deadline:
			cur.Signal(sigkill)
		}
	}
	<-done
}
