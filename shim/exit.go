package shim

import (
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// vmGoneStatus is the exit status of a process whose VM died under it.
const vmGoneStatus = 255

// waitProcess follows one guest process to its exit: the agent's
// WaitProcess (no timeout; it ends with the pod's context), then the output
// pumps to EOF, then the exit is recorded and published (exitExec,
// exitInit). A WaitProcess that fails because the VM is gone, or because the
// agent no longer knows the process, counts as exit status 255.
func (s *service) waitProcess(p *pod, c *container, pr *process) {
	status, at := vmGoneStatus, time.Time{}
	for {
		resp, err := p.agent.process.WaitProcess(p.ctx, &api.WaitProcessRequest{ContainerId: pr.cid, ExecId: pr.execID})
		if err == nil {
			status, at = int(resp.GetExitStatus()), resp.GetExitedAt().AsTime()
			break
		}
		if p.ctx.Err() != nil || p.isDead() || errdefs.IsNotFound(errgrpc.ToNative(err)) {
			l := log.G(s.ctx).WithError(err).WithFields(log.Fields{"container": pr.cid, "exec": pr.execID})
			select {
			case <-p.failed:
				l = l.WithField("reason", p.failReason)
			default:
			}
			l.Warn("process lost; reporting exit status 255")
			break
		}
		log.G(s.ctx).WithError(err).WithField("container", pr.cid).Warn("waiting for process; retrying")
		select {
		case <-p.ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	if at.IsZero() || at.Unix() <= 0 {
		at = time.Now()
	}
	pr.mu.Lock()
	pio := pr.io
	pr.mu.Unlock()
	pio.wait()
	if pr.execID == "" {
		s.exitInit(p, c, pr, uint32(status), at)
	} else {
		s.exitExec(c, pr, uint32(status), at)
	}
}

// exitExec records an exec's exit and publishes it, after its start.
func (s *service) exitExec(c *container, pr *process, status uint32, at time.Time) {
	pr.startMu.Lock()
	defer pr.startMu.Unlock()
	s.publishExit(c, pr, status, at)
}

// exitInit records the init process's exit and publishes it last for its
// container: no exec starts once the init has exited; execs still running
// are killed (they would die with the container's PID namespace anyway) and
// their exits published first.
func (s *service) exitInit(p *pod, c *container, pr *process, status uint32, at time.Time) {
	c.mu.Lock()
	c.initExited = true
	c.mu.Unlock()
	c.starting.Wait()
	if execs := c.runningExecs(); len(execs) > 0 {
		if p != nil && !p.isDead() {
			ctx, cancel := p.callCtx(s.ctx)
			_, err := p.agent.process.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: c.id, Signal: uint32(unix.SIGKILL), All: true})
			cancel()
			if err != nil {
				log.G(s.ctx).WithError(err).WithField("container", c.id).Warn("killing execs of exited container")
			}
		}
		for _, e := range execs {
			<-e.exited
		}
	}
	pr.startMu.Lock()
	defer pr.startMu.Unlock()
	s.publishExit(c, pr, status, at)
}

// publishExit records the exit (which wakes Wait), then queues TaskExit,
// as containerd's runc shim does: whoever sees the event and calls Delete
// at once finds the process stopped, not "running; kill it first". exitMu
// keeps TaskExit ahead of Delete's TaskDelete.
func (s *service) publishExit(c *container, pr *process, status uint32, at time.Time) {
	s.exitMu.Lock()
	defer s.exitMu.Unlock()
	_, pid, _, _ := pr.state()
	if !pr.setExited(status, at) {
		return
	}
	id := pr.execID
	if id == "" {
		id = c.id
	}
	s.send(&eventstypes.TaskExit{
		ContainerID: c.id,
		ID:          id,
		Pid:         pid,
		ExitStatus:  status,
		ExitedAt:    protobuf.ToTimestamp(at),
	})
}

// exitUnstarted marks a process that never ran as exited without an event
// (Delete of a created container whose waiter did not report in time).
func exitUnstarted(pr *process) { pr.setExited(vmGoneStatus, time.Now()) }
