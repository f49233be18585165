package shim

import (
	"context"
	"fmt"
	"slices"

	"github.com/containerd/log"
)

// podState is where a pod VM is in its life. It moves only through
// pod.transition, along the edges of podTransitions:
//
//	booting ──▶ ready ──▶ stopping ──▶ dead
//	   │          │                      ▲
//	   │          └──────────────────────┤  the VM died, the agent went away
//	   └─────────────────────────────────┘  or the pod failed its health check;
//	                                        or the boot failed
//
// booting: startPod is acquiring the pod's resources and waiting for the
// agent; nothing else sees the pod. ready: the pod serves containers.
// stopping: the shim is tearing it down (teardownPod), so the VM's exit is
// no failure. dead: the VM is gone (or being killed) and p.dead is closed
// (watchPod), or the boot failed.
type podState int32

const (
	podBooting podState = iota
	podReady
	podStopping
	podDead
)

func (s podState) String() string {
	switch s {
	case podBooting:
		return "booting"
	case podReady:
		return "ready"
	case podStopping:
		return "stopping"
	case podDead:
		return "dead"
	}
	return fmt.Sprintf("podState(%d)", int32(s))
}

// podTransitions are the moves a pod may make from each state; dead is
// final.
var podTransitions = map[podState][]podState{
	podBooting:  {podReady, podDead},
	podReady:    {podStopping, podDead},
	podStopping: {podDead},
}

// canMove reports whether a pod may move from one state to another.
func canMove(from, to podState) bool {
	return slices.Contains(podTransitions[from], to)
}

// state is the pod's state now.
func (p *pod) state() podState {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	return p.st
}

// transition moves the pod to state to and returns the state it left. A
// move podTransitions does not list is a bug in the shim: it is returned
// as an error and logged, and the pod stays where it was.
func (p *pod) transition(ctx context.Context, to podState) (podState, error) {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	return p.moveLocked(ctx, to)
}

func (p *pod) moveLocked(ctx context.Context, to podState) (podState, error) {
	from := p.st
	if !canMove(from, to) {
		err := fmt.Errorf("pod %s: moving from %s to %s: not a pod lifecycle transition", p.id, from, to)
		log.G(ctx).WithField("pod", p.id).Error(err)
		return from, err
	}
	p.st = to
	log.G(ctx).WithField("pod", p.id).Debugf("pod %s -> %s", from, to)
	return from, nil
}

// stop marks a ready pod as being torn down by the shim (stopping), so
// that its VM's exit is not reported as a failure. A pod that is dead
// already stays dead; one that is stopping already is left as it is
// (reported: two teardowns of one pod are a bug).
func (p *pod) stop(ctx context.Context) {
	p.stateMu.Lock()
	defer p.stateMu.Unlock()
	if p.st != podDead {
		_, _ = p.moveLocked(ctx, podStopping)
	}
}

// cleanupStack holds the undo of each resource a multi-step operation
// (startPod) has acquired so far: each acquisition pushes its undo right
// after it succeeds. On failure unwind runs them newest first, so a
// resource is released after everything acquired later that depends on it
// (the guest CID after the VM that uses it, the state directory last); on
// success release drops them, the resources now belonging to whoever
// holds them (the pod, which teardownPod ends).
type cleanupStack struct {
	steps []cleanupStep
}

type cleanupStep struct {
	// what names the undo for the log ("closing the metrics socket").
	what string
	undo func() error
}

// push adds the undo of a resource just acquired.
func (c *cleanupStack) push(what string, undo func() error) {
	c.steps = append(c.steps, cleanupStep{what: what, undo: undo})
}

// unwind runs every undo, newest first, and empties the stack. A failing
// undo is logged and the others still run.
func (c *cleanupStack) unwind(ctx context.Context) {
	for _, s := range slices.Backward(c.steps) {
		if err := s.undo(); err != nil {
			log.G(ctx).WithError(err).Warn(s.what)
		}
	}
	c.steps = nil
}

// release empties the stack without undoing anything.
func (c *cleanupStack) release() { c.steps = nil }

// setPod makes p the shim's pod VM.
func (s *service) setPod(p *pod) {
	s.mu.Lock()
	s.pod = p
	s.mu.Unlock()
}

// takePod hands the shim's pod VM over to the caller, which then owns it
// and tears it down: the shim has no pod afterwards, so no other path
// tears it down too. With lastOnly it does so only when no container is
// left, and reports false (taking nothing) otherwise. The pod is nil when
// there is none.
func (s *service) takePod(lastOnly bool) (*pod, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lastOnly && len(s.containers) > 0 {
		return nil, false
	}
	p := s.pod
	s.pod = nil
	return p, true
}
