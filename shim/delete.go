package shim

import (
	"context"
	"fmt"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// Delete removes an exited exec, or an exited (or never started) container:
// from the guest, its host mounts, and the shim (TaskDelete). A running
// process must be killed first. Deleting the pod's last container ends the
// pod VM (teardownPod) before Delete returns.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	ctx = s.logCtx(ctx, r.ID, r.ExecID)
	resp, err := s.delete(ctx, r)
	if err != nil {
		log.G(ctx).WithError(err).Warn("deleting")
	}
	return resp, errgrpc.ToGRPC(err)
}

func (s *service) delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	c, pr, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	c.deleteMu.Lock()
	defer c.deleteMu.Unlock()
	// A Delete that ran while this one waited has removed it.
	if c2, pr2, err := s.lookup(r.ID, r.ExecID); err != nil {
		return nil, err
	} else if c2 != c || pr2 != pr {
		return nil, fmt.Errorf("process %s/%s was deleted and created again while this Delete waited: %w", r.ID, r.ExecID, errdefs.ErrNotFound)
	}
	s.mu.Lock()
	p := s.pod
	s.mu.Unlock()
	if r.ExecID != "" {
		return s.deleteExec(ctx, p, c, pr)
	}

	st, _, _, _ := pr.state()
	switch {
	case st == task.Status_RUNNING || st == task.Status_PAUSED || st == task.Status_PAUSING:
		return nil, fmt.Errorf("container %s is running; kill it first: %w", c.id, errdefs.ErrFailedPrecondition)
	case st == task.Status_CREATED && !c.sandbox && p != nil && !p.isDead():
		// Never started: remove it in the guest, which ends its waiter.
		cctx, cancel := p.callCtx(ctx)
		_, err := p.agent.container.RemoveContainer(cctx, &api.RemoveContainerRequest{ContainerId: c.id, Force: true})
		cancel()
		if err != nil && !errdefs.IsNotFound(errgrpc.ToNative(err)) {
			return nil, p.agentError("removing created container in the guest", err)
		}
		select {
		case <-pr.exited:
		case <-time.After(p.cfg.Agent.CallTimeout.Std()):
			exitUnstarted(pr)
		}
	case st == task.Status_CREATED:
		if c.sandbox || p == nil || p.isDead() {
			select {
			case c.pause <- 9:
			default:
			}
			exitUnstarted(pr)
		}
	case !c.sandbox && p != nil && !p.isDead():
		cctx, cancel := p.callCtx(ctx)
		_, err := p.agent.container.RemoveContainer(cctx, &api.RemoveContainerRequest{ContainerId: c.id})
		cancel()
		if err != nil && !errdefs.IsNotFound(errgrpc.ToNative(err)) && !p.isDead() {
			return nil, p.agentError("removing container in the guest", err)
		}
	}
	pr.mu.Lock()
	pio := pr.io
	pr.mu.Unlock()
	pio.close()
	s.unmountContainer(ctx, p, c)

	s.exitMu.Lock()
	_, pid, status, at := pr.state()
	s.mu.Lock()
	delete(s.containers, c.id)
	s.mu.Unlock()
	s.metrics.ForgetContainer(c.id)
	s.send(&eventstypes.TaskDelete{
		ContainerID: c.id,
		ID:          c.id,
		Pid:         pid,
		ExitStatus:  status,
		ExitedAt:    protobuf.ToTimestamp(at),
	})
	s.exitMu.Unlock()

	// The pod's last task is gone: end the VM now, while containerd waits
	// for Delete, not in Shutdown, which containerd gives 3 seconds.
	last, _ := s.takePod(true)
	if last != nil {
		if err := s.teardownPod(log.WithLogger(context.WithoutCancel(ctx), log.G(ctx).WithField("pod", last.id)), last, false); err != nil {
			log.G(ctx).WithError(err).Error("tearing down pod VM")
		}
	}
	c.hooks.runPoststop(context.WithoutCancel(ctx))
	if last != nil {
		s.removePodNetNS(ctx)
	}
	return &taskAPI.DeleteResponse{Pid: pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

func (s *service) deleteExec(ctx context.Context, p *pod, c *container, pr *process) (*taskAPI.DeleteResponse, error) {
	st, pid, status, at := pr.state()
	switch st {
	case task.Status_RUNNING, task.Status_PAUSED, task.Status_PAUSING:
		return nil, fmt.Errorf("exec %s is running; kill it first: %w", pr.execID, errdefs.ErrFailedPrecondition)
	case task.Status_STOPPED:
		if p != nil && !p.isDead() {
			cctx, cancel := p.callCtx(ctx)
			_, err := p.agent.process.DeleteProcess(cctx, &api.DeleteProcessRequest{ContainerId: c.id, ExecId: pr.execID})
			cancel()
			if err != nil && !errdefs.IsNotFound(errgrpc.ToNative(err)) && !p.isDead() {
				return nil, p.agentError("deleting exec in the guest", err)
			}
		}
	}
	pr.mu.Lock()
	pio := pr.io
	pr.mu.Unlock()
	pio.close()
	c.mu.Lock()
	delete(c.execs, pr.execID)
	c.mu.Unlock()
	return &taskAPI.DeleteResponse{Pid: pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}
