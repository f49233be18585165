package shim

import (
	"context"
	"fmt"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/shim/metrics"
)

// Start starts a container's init process (TaskStart) or an exec
// (TaskExecStarted).
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	ctx = s.logCtx(ctx, r.ID, r.ExecID)
	c, pr, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	p, err := s.currentPod()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if r.ExecID == "" {
		err = s.startInit(ctx, p, c)
	} else {
		err = s.startExec(ctx, p, c, pr)
	}
	if err != nil {
		log.G(ctx).WithError(err).Error("starting process")
		return nil, errgrpc.ToGRPC(err)
	}
	_, pid, _, _ := pr.state()
	return &taskAPI.StartResponse{Pid: pid}, nil
}

func (s *service) startInit(ctx context.Context, p *pod, c *container) error {
	pr := c.init
	pr.startMu.Lock()
	defer pr.startMu.Unlock()
	if st, _, _, _ := pr.state(); st != task.Status_CREATED {
		return fmt.Errorf("container %s is %s, not created: %w", c.id, st, errdefs.ErrFailedPrecondition)
	}
	if !c.sandbox {
		cctx, cancel := p.callCtx(ctx)
		defer cancel()
		if _, err := p.agent.container.StartContainer(cctx, &api.StartContainerRequest{ContainerId: c.id}); err != nil {
			return p.agentError("starting container in the guest", err)
		}
	}
	pr.setStatus(task.Status_RUNNING)
	s.metrics.MarkContainer(c.id, metrics.ContainerStarted)
	_, pid, _, _ := pr.state()
	s.send(&eventstypes.TaskStart{ContainerID: c.id, Pid: pid})
	c.hooks.runPoststart(ctx)
	return nil
}

func (s *service) startExec(ctx context.Context, p *pod, c *container, pr *process) error {
	c.mu.Lock()
	if c.initExited {
		c.mu.Unlock()
		return fmt.Errorf("container %s has exited: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	c.starting.Add(1)
	c.mu.Unlock()
	defer c.starting.Done()

	pr.startMu.Lock()
	defer pr.startMu.Unlock()
	if st, _, _, _ := pr.state(); st != task.Status_CREATED {
		return fmt.Errorf("exec %s is %s, not created: %w", pr.execID, st, errdefs.ErrFailedPrecondition)
	}
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	resp, err := p.agent.process.ExecProcess(cctx, &api.ExecProcessRequest{
		ContainerId: c.id,
		ExecId:      pr.execID,
		Process:     pr.spec,
		Terminal:    pr.stdio.terminal,
		Stdin:       pr.stdio.stdin != "",
	})
	if err != nil {
		return p.agentError("starting exec in the guest", err)
	}
	pio, err := startIO(ctx, p.ctx, p.agent.process, s.namespace, c.id, pr.execID, pr.stdio, p.cfg.Agent.CallTimeout.Std(), p.failure)
	if err != nil {
		kctx, cancel := p.callCtx(ctx)
		defer cancel()
		_, _ = p.agent.process.SignalProcess(kctx, &api.SignalProcessRequest{ContainerId: c.id, ExecId: pr.execID, Signal: 9})
		return err
	}
	pr.mu.Lock()
	pr.pid, pr.io = resp.GetPid(), pio
	pr.mu.Unlock()
	pr.setStatus(task.Status_RUNNING)
	s.send(&eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: pr.execID, Pid: resp.GetPid()})
	go s.waitProcess(p, c, pr)
	return nil
}
